"""The counter-based hash that defines every entry of the projection matrix.

An entry of P is a pure function of ``(seed, row, column)``: no generator state,
so any block of P can be generated anywhere, in any order, on any device. The
same integer arithmetic is written twice, here in torch (uint32 emulated with
int64 and masking; every product stays below 2**63, so nothing overflows) and in
``dataflex/projectors/cuda.py`` in Triton (native uint32); tests check that the
two agree bit for bit.

The scheme (all values are uint32, ``mix32`` is Wellons' ``lowbias32``):

* keys: ``k0, k1 = seed_keys(seed, stream)``, with ``stream`` naming the
  distribution, so Rademacher and Gaussian matrices of one seed are independent;
* column key: ``ck(c) = mix32(lo32(c) ^ mix32(hi32(c) ^ k0))``;
* counter key: ``rk(j) = mix32(j ^ k1)``;
* word: ``word(c, j) = mix32(ck(c) ^ rk(j))``.

Rademacher uses word ``j = r // 32`` and bit ``r % 32`` for row ``r`` (one hash,
32 signs); Gaussian uses words ``2p`` and ``2p + 1`` as two uniforms for a
Box–Muller pair (rows ``2p`` and ``2p + 1``).

Changing anything here changes P: bump :data:`HASH_SCHEME` so that cached
features keyed by a projector fingerprint are invalidated.
"""

from __future__ import annotations

import torch

HASH_SCHEME = "lowbias32-xor-v1"
"""Version of the generator, part of every projector fingerprint."""

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B
# MUL2 >= 2**31: multiplying by MUL2 - 2**32 instead is equal modulo 2**32 and keeps
# every int64 product of a uint32 value within (-2**63, 2**63).
_MUL2_SIGNED = MUL2 - (1 << 32)

STREAM_RADEMACHER = 1
STREAM_GAUSSIAN = 2
STREAM_SJLT = 3

BOX_MULLER_TWO_PI = 6.283185307179586
UNIFORM_SCALE = 2.0**-24


def mix32_int(x: int) -> int:
    """``lowbias32`` on a Python int in ``[0, 2**32)``."""
    x &= MASK32
    x ^= x >> 16
    x = (x * MUL1) & MASK32
    x ^= x >> 15
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def mix32_(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` in place on an int64 tensor holding values in ``[0, 2**32)``."""
    x.bitwise_xor_(x >> 16)
    x.mul_(MUL1).bitwise_and_(MASK32)
    x.bitwise_xor_(x >> 15)
    x.mul_(_MUL2_SIGNED).bitwise_and_(MASK32)
    x.bitwise_xor_(x >> 16)
    return x


def seed_keys(seed: int, stream: int) -> tuple[int, int]:
    """The two uint32 keys of ``seed`` (any int, taken modulo 2**64) for one distribution."""
    seed &= (1 << 64) - 1
    k0 = mix32_int(mix32_int((seed & MASK32) ^ 0x243F6A88 ^ stream) ^ (seed >> 32))
    k1 = mix32_int(k0 ^ 0x85A308D3)
    return k0, k1


def column_keys(start: int, stop: int, k0: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``ck(c)`` for columns ``c`` in ``[start, stop)`` as an int64 tensor."""
    c = torch.arange(start, stop, dtype=torch.int64, device=device)
    hi = (c >> 32) ^ k0
    mix32_(hi)
    lo = c.bitwise_and_(MASK32).bitwise_xor_(hi)
    return mix32_(lo)


def counter_keys(start: int, stop: int, k1: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``rk(j)`` for counters ``j`` in ``[start, stop)`` as an int64 tensor."""
    j = torch.arange(start, stop, dtype=torch.int64, device=device).bitwise_xor_(k1)
    return mix32_(j)


def hash_words(
    col_keys: torch.Tensor, ctr_keys: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``word(c, j)`` for every pair: a ``(len(col_keys), len(ctr_keys))`` int64 tensor."""
    out = torch.bitwise_xor(col_keys[:, None], ctr_keys[None, :], out=out)
    return mix32_(out)
