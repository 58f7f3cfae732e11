"""The fused Triton kernel of the ``cuda`` projector (imported only when that backend runs).

This module imports Triton at import time, so whether the kernel is compiled or
run by Triton's CPU interpreter is decided by ``TRITON_INTERPRET`` when this
module is first imported. The integer arithmetic mirrors
:mod:`dataflex.projectors.hashing` exactly, in native uint32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mix32(x):
    # lowbias32, as hashing.mix32_ (uint32 wraps natively here).
    x ^= x >> 16
    x = x * 0x7FEB352D
    x ^= x >> 15
    x = x * 0x846CA68B
    x ^= x >> 16
    return x


# Integer arguments equal to 1 would otherwise be specialised into constexprs (and
# ``col0.to(...)`` would fail when the offset is 1); the keys are arbitrary uint32 values.
@triton.jit(do_not_specialize=["batch", "width", "proj_dim", "col0", "cols_per_split", "k0", "k1"])
def project_kernel(
    x_ptr,
    part_ptr,
    batch,
    width,
    proj_dim,
    col0,
    cols_per_split,
    stride_xb,
    stride_ps,
    stride_pb,
    k0,
    k1,
    GAUSSIAN: tl.constexpr,
    ROUND_P: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Partial sums ``part[s, b, r] = Σ_{n in split s} x[b, n] · P̃[r, col0 + n]`` (P̃ unscaled).

    Grid: (batch blocks, row blocks of P, column splits). Each program generates its
    ``(BLOCK_N, BLOCK_K)`` tiles of P̃ᵀ in registers and accumulates ``x @ P̃ᵀ`` in fp32.
    ``ROUND_P`` (0, 1 = bf16, 2 = fp16) rounds the Gaussian entries to the projector's
    dtype first, as the torch backend does.
    """
    pid_b = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    key0 = k0.to(tl.uint32)
    key1 = k1.to(tl.uint32)
    if GAUSSIAN:
        pairs = pid_k * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
        rk_cos = _mix32((2 * pairs).to(tl.uint32) ^ key1)
        rk_sin = _mix32((2 * pairs + 1).to(tl.uint32) ^ key1)
    else:
        words = pid_k * (BLOCK_K // 32) + tl.arange(0, BLOCK_K // 32)
        rk = _mix32(words.to(tl.uint32) ^ key1)
        shifts = tl.arange(0, 32).to(tl.uint32)

    acc = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
    split_start = pid_s * cols_per_split
    split_stop = tl.minimum(split_start + cols_per_split, width)
    for n0 in range(split_start, split_stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        x_mask = (offs_b[:, None] < batch) & (offs_n[None, :] < split_stop)
        x = tl.load(x_ptr + offs_b[:, None] * stride_xb + offs_n[None, :], mask=x_mask, other=0.0)
        col = col0.to(tl.int64) + offs_n.to(tl.int64)
        hi = _mix32((col >> 32).to(tl.uint32) ^ key0)
        ck = _mix32((col & 0xFFFFFFFF).to(tl.uint32) ^ hi)
        if GAUSSIAN:
            h1 = _mix32(ck[:, None] ^ rk_cos[None, :])
            h2 = _mix32(ck[:, None] ^ rk_sin[None, :])
            u1 = ((h1 >> 9) * 2 + 1).to(tl.float32) * 5.9604644775390625e-08
            u2 = ((h2 >> 9) * 2 + 1).to(tl.float32) * 5.9604644775390625e-08
            radius = tl.sqrt_rn(-2.0 * tl.log(u1))
            angle = u2 * 6.283185307179586
            p = tl.reshape(tl.join(tl.cos(angle) * radius, tl.sin(angle) * radius), (BLOCK_N, BLOCK_K))
            if ROUND_P == 1:  # to nearest bf16, ties to even, in integer ops (the interpreter truncates)
                bits = p.to(tl.uint32, bitcast=True)
                bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
                p = bits.to(tl.float32, bitcast=True)
            elif ROUND_P == 2:
                p = p.to(tl.float16).to(tl.float32)
        else:
            h = _mix32(ck[:, None] ^ rk[None, :])
            bits = ((h[:, :, None] >> shifts[None, None, :]) & 1).to(tl.float32)
            p = tl.reshape(1.0 - 2.0 * bits, (BLOCK_N, BLOCK_K))
        acc = tl.dot(x.to(tl.float32), p, acc, input_precision=PRECISION)

    out_ptrs = part_ptr + pid_s * stride_ps + offs_b[:, None] * stride_pb + offs_k[None, :]
    tl.store(out_ptrs, acc, mask=(offs_b[:, None] < batch) & (offs_k[None, :] < proj_dim))


@triton.jit(
    do_not_specialize=["batch", "width", "col0", "block_rows", "k0", "k1", "b1", "b2", "a1", "a2", "eps"]
)
def sjlt_kernel(
    x_ptr,
    out_ptr,
    batch,
    width,
    col0,
    block_rows,
    stride_xb,
    stride_ob,
    k0,
    k1,
    ea_ptr,
    eas_ptr,
    b1,
    b2,
    a1,
    a2,
    eps,
    NNZ: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ADAM: tl.constexpr,
):
    """``out[b, row(c, j)] += sign(c, j) · y[b, c − col0]`` (unscaled), as ``sjlt.sjlt_indices``.

    ``y = x``, or with ``ADAM`` LESS's Adam direction of x from the moments ``ea``/``eas``
    of the same columns: ``fma(x, a1, b1·ea) / (√fma(a2·x, x, b2·eas) + eps)``, the
    arithmetic of ``dataflex.gradients.transforms.ColumnTransform``.

    Grid: (column blocks, batch blocks). Each program hashes its ``BLOCK_N`` columns
    ``NNZ`` times and scatters its ``(BLOCK_B, BLOCK_N)`` tile with atomic adds.
    """
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask = (offs_b[:, None] < batch) & (offs_n[None, :] < width)
    x = tl.load(x_ptr + offs_b[:, None] * stride_xb + offs_n[None, :], mask=mask, other=0.0)
    if ADAM:
        ea = tl.load(ea_ptr + offs_n, mask=offs_n < width, other=0.0)
        eas = tl.load(eas_ptr + offs_n, mask=offs_n < width, other=0.0)
        m = ea * b1
        v = eas * b2
        x = tl.fma(x, a1, m[None, :]) / (tl.sqrt_rn(tl.fma(a2 * x, x, v[None, :])) + eps)
    key0 = k0.to(tl.uint32)
    key1 = k1.to(tl.uint32)
    col = col0.to(tl.int64) + offs_n.to(tl.int64)
    hi = _mix32((col >> 32).to(tl.uint32) ^ key0)
    ck = _mix32((col & 0xFFFFFFFF).to(tl.uint32) ^ hi)
    block = block_rows.to(tl.uint32)
    for j in tl.static_range(NNZ):
        rk = _mix32(tl.full((), j, tl.uint32) ^ key1)
        w = _mix32(ck ^ rk)
        row = (j * block_rows).to(tl.int64) + ((w >> 1) % block).to(tl.int64)
        sign = 1.0 - 2.0 * (w & 1).to(tl.float32)
        tl.atomic_add(out_ptr + offs_b[:, None] * stride_ob + row[None, :], x * sign[None, :], mask=mask)
