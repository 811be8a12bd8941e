"""Permuted-diagonal structure (PermDNN, papers.md §4): masks, projection and offsets of an N x K matrix.

The matrix is cut into p x p blocks, block ``(bi, bj)`` covering rows ``bi*p .. bi*p+p-1`` and columns
``bj*p .. bj*p+p-1``. A block is a *permuted diagonal* with offset ``k`` (0 <= k < p) when its row
``i`` is nonzero only at its column ``(i + k) mod p``; equivalently its column ``c`` is nonzero only at
its row ``(c - k) mod p``. A layer has ``BR x BC = ceil(N/p) x ceil(K/p)`` offsets.

**Ragged edges** (p does not divide N or K): the matrix is padded with zero rows / columns up to
``BR*p x BC*p``; a padded block is a permuted diagonal like any other, its entries in padded rows or
columns are simply absent (zero). So a row of the last block column may have no weight at all when its
diagonal position falls in a padded column, and the stored format (see
:mod:`sparsyn.sw.schemes.permdiag`) keeps a zero for each diagonal position of a padded row.

Projection **[ours]**, as the source describes it for a trained matrix: per block the offset keeping the
most squared magnitude (ties: the smaller offset), then everything else zeroed.
"""
from __future__ import annotations

import numpy as np


def block_grid(n: int, k: int, p: int) -> tuple[int, int]:
    """(BR, BC): block rows and block columns of an N x K matrix in p x p blocks (padded)."""
    return -(-n // p), -(-k // p)


def _padded(w: np.ndarray, p: int) -> np.ndarray:
    n, k = w.shape
    br, bc = block_grid(n, k, p)
    out = np.zeros((br * p, bc * p), dtype=np.float64)
    out[:n, :k] = w
    return out


def diagonal_energy(w: np.ndarray, p: int) -> np.ndarray:
    """Squared magnitude on every diagonal of every block: (BR, BC, p), entry ``[bi, bj, k]`` =
    ``sum_i w[bi*p + i, bj*p + (i + k) mod p]**2`` (padding counts as zero)."""
    wp = _padded(np.asarray(w, dtype=np.float64), p)
    br, bc = wp.shape[0] // p, wp.shape[1] // p
    blocks = (wp ** 2).reshape(br, p, bc, p).transpose(0, 2, 1, 3)      # (BR, BC, i, c)
    i = np.arange(p)
    cols = (i[None, :] + np.arange(p)[:, None]) % p                       # (k, i) -> column
    return blocks[:, :, i[None, :], cols].sum(axis=-1)                    # (BR, BC, k)


def best_offsets(w: np.ndarray, p: int) -> np.ndarray:
    """Per block the offset keeping the most squared magnitude (ties: the smallest): (BR, BC) int64."""
    return np.argmax(diagonal_energy(w, p), axis=-1).astype(np.int64)


def diagonal_mask(n: int, k: int, p: int, offsets: np.ndarray) -> np.ndarray:
    """The N x K 0/1 mask of the permuted-diagonal structure with these (BR, BC) offsets."""
    br, bc = block_grid(n, k, p)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (br, bc):
        raise ValueError(f"offsets have shape {offsets.shape}, an {n}x{k} matrix in {p}x{p} blocks needs {(br, bc)}")
    rows = np.arange(br * p)
    bi, i = rows // p, rows % p
    mask = np.zeros((br * p, bc * p), dtype=bool)
    for bj in range(bc):
        mask[rows, bj * p + (i + offsets[bi, bj]) % p] = True
    return mask[:n, :k]


def project(w: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(w with every entry off its block's best diagonal zeroed, the (BR, BC) offsets)."""
    w = np.asarray(w)
    offsets = best_offsets(w, p)
    return np.where(diagonal_mask(*w.shape, p, offsets), w, 0), offsets


def structure_offsets(w: np.ndarray, p: int) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The offsets of a matrix that already has the structure: ``(offsets, None)``, or ``(offsets, (row,
    col))`` naming the first nonzero that lies off every block's single diagonal (not permuted-diagonal).
    A block without any nonzero gets offset 0."""
    w = np.asarray(w)
    offsets = best_offsets(w, p)
    off = np.argwhere((w != 0) & ~diagonal_mask(*w.shape, p, offsets))
    return offsets, (None if off.size == 0 else (int(off[0][0]), int(off[0][1])))


def random_structure(rng: np.random.Generator, n: int, k: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Random offsets (BR, BC) and their N x K mask (training from scratch; tests)."""
    br, bc = block_grid(n, k, p)
    offsets = rng.integers(0, p, size=(br, bc)).astype(np.int64)
    return offsets, diagonal_mask(n, k, p, offsets)
