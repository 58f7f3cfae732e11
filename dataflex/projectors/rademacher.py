"""``rademacher``: entries ±1/√k, 32 signs per hash, on any torch device."""

from __future__ import annotations

import torch

from dataflex.projectors.hashing import STREAM_RADEMACHER, column_keys, counter_keys, hash_words, seed_keys
from dataflex.projectors.tiled import TiledProjector
from dataflex.registry import register_projector

_SIGN_BIT = -(1 << 31)
_ONE_BITS = 0x3F800000  # bit pattern of float32 1.0
# Hash in chunks small enough that torch runs each op on one thread: a tile's words are
# few, and a parallel region per hash op costs more than the op on a busy machine.
_SERIAL_WORDS = 16384


@register_projector("rademacher")
class RademacherProjector(TiledProjector):
    """Rademacher projection (entries ±1/√k) generated from a counter-based hash; the CPU default.

    Row ``r`` of column ``c`` is ``+1`` when bit ``r % 32`` of ``word(c, r // 32)`` is 0
    and ``-1`` when it is 1 (see :mod:`dataflex.projectors.hashing`), scaled by 1/√k.
    One 32-bit hash gives 32 entries, so generating P costs a fraction of the multiply.
    See :class:`~dataflex.projectors.tiled.TiledProjector` for the arguments.
    """

    row_group = 32
    exact_entries = True

    def _setup(self) -> None:
        self._k0, k1 = seed_keys(self.seed, STREAM_RADEMACHER)
        self._counters = counter_keys(0, self.k_pad // 32, k1, self.device)
        self._shifts = 31 - torch.arange(32, dtype=torch.int32, device=self.device)

    def _generate(self, start: int, stop: int, out: torch.Tensor) -> None:
        n, words = stop - start, self.k_pad // 32
        col_keys = column_keys(start, stop, self._k0, self.device)
        h32 = self.buffer("words32", (n, words), torch.int32)
        step = max(1, _SERIAL_WORDS // words)
        for a in range(0, n, step):
            b = min(n, a + step)
            h = self.buffer("words", (b - a, words), torch.int64)
            hash_words(col_keys[a:b], self._counters, out=h)
            h32[a:b].copy_(h)  # keeps the low 32 bits
        # Move bit b of each word to the sign bit of float32 entry b and set the
        # rest to 1.0: a ±1.0 float per bit, in three vectorised passes.
        bits = out.view(torch.int32).view(n, words, 32)
        torch.bitwise_left_shift(h32.unsqueeze(-1), self._shifts, out=bits)
        bits.bitwise_and_(_SIGN_BIT).bitwise_or_(_ONE_BITS)
