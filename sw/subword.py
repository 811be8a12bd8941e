"""Subword-level weights (Tight Compression, TCAD'22): an 8-bit weight as two signed 4-bit subwords.

**[ours]** Decomposition: ``w = hi * 16 + lo`` with ``lo = ((w + 8) mod 16) - 8`` and both
``lo, hi`` in the signed 4-bit range ``[-8, 7]`` (signed-digit, so ``hi * 16`` is ``w`` rounded to
the nearest multiple of 16). That covers ``w`` in ``[-136, 119]``, so subword layers are quantized
symmetric with ``qmax = 119`` instead of 127. Each nonzero subword is its own packed entry
``(sub, shift)`` whose coefficient is ``sub << (4 * shift)``; the PE is a 4x8 multiplier plus a
shift by 0 or 4 bits.

**Subword pruning** (the "low-value subwords" of the paper): the low subword of a weight whose
high subword is nonzero is dropped when ``|lo| <= threshold`` (``threshold`` 0 keeps everything;
8 keeps only the high subword of every weight with ``|w| >= 9``). Weights with ``hi == 0`` keep
their single low subword.
"""
from __future__ import annotations

import numpy as np

SUB_BITS = 4
SUB_MIN, SUB_MAX = -(1 << (SUB_BITS - 1)), (1 << (SUB_BITS - 1)) - 1
#: Largest weight magnitude representable as two signed 4-bit digits (hi <= 7).
SUBWORD_QMAX = SUB_MAX * 16 + SUB_MAX


def split_subwords(w) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights -> (lo, hi) signed 4-bit digits with ``w == hi*16 + lo`` (range-checked)."""
    w = np.asarray(w, dtype=np.int64)
    if w.size and (w.min() < SUB_MIN * 16 + SUB_MIN or w.max() > SUBWORD_QMAX):
        raise ValueError(f"weights outside [{SUB_MIN * 16 + SUB_MIN}, {SUBWORD_QMAX}] have no 2x4-bit subword form")
    lo = ((w + 8) & 15) - 8
    hi = (w - lo) >> 4
    return lo, hi


def join_subwords(lo, hi) -> np.ndarray:
    return np.asarray(hi, dtype=np.int64) * 16 + np.asarray(lo, dtype=np.int64)


def prune_subwords(w, threshold: int) -> np.ndarray:
    """Drop the low subword of every weight with a nonzero high subword and ``|lo| <= threshold``."""
    lo, hi = split_subwords(w)
    lo = np.where((hi != 0) & (np.abs(lo) <= threshold), 0, lo)
    return join_subwords(lo, hi)


def quantize_subword(w: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Float N x K -> (int64 weights in [-119, 119] with low subwords pruned, per-channel scale, 8 bits)."""
    w = np.asarray(w, dtype=np.float64)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / SUBWORD_QMAX, 1.0)
    q = np.clip(np.floor(w / scale[:, None] + 0.5), -SUBWORD_QMAX, SUBWORD_QMAX).astype(np.int64)
    return prune_subwords(q, threshold), scale, 8


def subword_count(w) -> int:
    """Number of nonzero subwords (= packed entries) of an integer weight array."""
    lo, hi = split_subwords(w)
    return int(np.count_nonzero(lo) + np.count_nonzero(hi))
