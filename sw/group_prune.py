"""PE-wise structured pruning: weight groups = the tiles the PE array consumes, group lasso with
Weight Penalty Clipping (WPC), and pruning of the weakest groups to a target sparsity.

Groups come from the hardware configuration, not from a constant. On the shared array
(:mod:`sparsyn.sw.schedule`) a layer's N x K matrix is consumed as **sections** of ``cols`` output
channels (the array's columns) times **tiles** of ``tile`` consecutive K indices (one array-row slot,
``tile`` = the PE's lanes T). Group ``(s, j)`` is rows ``s*cols .. s*cols+cols-1`` x columns
``j*tile .. j*tile+tile-1`` (the last section / tile are cut at N / K; the missing lanes are padded
with constant-zero inputs). A zeroed group is therefore exactly one slot the array skips. With
``cols=1`` a group is one PE's tile of T inputs for one output (the paper's case).

Penalty per layer, with a_g = ||w_g||_2 (Frobenius norm of the group's weights), G groups::

    plain group lasso:        R = sum_g a_g
    WPC, mode "mean":         R = sum_g min(a_g, theta),  theta = r * mean_g(a_g)            (papers.md §2)
    WPC, mode "target" [ours, default]:
                              R = sum_g min(a_g, theta),  theta = max(r * mean_g(a_g), a_(m))

where a_(m) is the m-th smallest group norm (0-based) and m = round(s * G) the number of groups the
target sparsity s removes, i.e. a_(m) is the weakest *surviving* group. theta is recomputed from the
current weights at every step and is a constant for the gradient (``detach``): it adapts itself as
the norms move. Groups at or above theta get no shrinking gradient (their penalty is clipped), so the
groups that will survive are not pulled towards zero (the conflict with the magnitude-dependent
ternary threshold), while the weak groups are driven to zero. Why "target": the paper's threshold
alone stabilises at a sparsity set by r, not by the target — measured on the digits CNN (lam=0.1,
20 epochs) it zeroed 2 of 36 conv2 groups and 5 of 24 fc groups, far below a 50 % target, so pruning
then removed live groups; lifting theta to a_(m) makes the clipped penalty shrink exactly the groups
that pruning will remove. Total loss = cross-entropy + lambda * sum_layers R.

Measured on the digits CNN (``sparsyn bench --scheme ternary``): with the clip from the first step, the
groups that survive pruning are exactly the groups with the largest norms of the *pretrained* model (the
bitmaps of WPC and of plain magnitude pruning coincide, 100 % in both ternary layers at s=0.75): a group
above theta gets no shrinking gradient, a group below is shrunk further, so the initial ranking locks
itself in and WPC acts as a gentle magnitude pruning. The plain group lasso shrinks every group and lets
the loss decide which survive (11-50 % overlap with the magnitude set) and is better at high sparsity
unless lambda is too large. ``wpc_warmup`` (scheme option) therefore runs the plain group lasso for a
fraction of the penalty epochs before the clip starts; see the bench for the measured effect.

Pruning: per layer the m = ``round(sparsity * G)`` groups with the smallest a_g are zeroed and masked
(``sparsity`` = fraction of the layer's PE tiles removed, in [0, 1); at least one group survives).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import SparsynError

#: WPC ratio r of the public re-implementation (papers.md §2).
DEFAULT_WPC_RATIO = 0.7


@dataclass(frozen=True)
class GroupGrid:
    """The PE-tile grid of an N x K matrix on an array with ``cols`` columns and ``tile`` lanes."""
    n: int
    k: int
    cols: int
    tile: int

    def __post_init__(self):
        for name in ("n", "k", "cols", "tile"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise SparsynError(f"PE-tile grid: {name} must be a positive integer, got {v!r}")

    @property
    def sections(self) -> int:
        return -(-self.n // self.cols)

    @property
    def tiles(self) -> int:
        """Tiles per section (ceil(K / T)); the last one is padded when T does not divide K."""
        return -(-self.k // self.tile)

    @property
    def groups(self) -> int:
        return self.sections * self.tiles

    @property
    def padded(self) -> bool:
        return self.k % self.tile != 0

    def sizes(self) -> np.ndarray:
        """(S, J) number of real weights in each group."""
        rows = np.minimum(self.cols, self.n - np.arange(self.sections) * self.cols)
        lanes = np.minimum(self.tile, self.k - np.arange(self.tiles) * self.tile)
        return np.outer(rows, lanes)

    def blocks(self, w):
        """N x K (numpy or torch) -> (S, C, J, T) view of the zero-padded matrix."""
        s, j = self.sections, self.tiles
        pad_n, pad_k = s * self.cols - self.n, j * self.tile - self.k
        if isinstance(w, torch.Tensor):
            w = torch.nn.functional.pad(w.reshape(self.n, self.k), (0, pad_k, 0, pad_n))
            return w.reshape(s, self.cols, j, self.tile)
        w = np.pad(np.asarray(w).reshape(self.n, self.k), ((0, pad_n), (0, pad_k)))
        return w.reshape(s, self.cols, j, self.tile)

    def norms(self, w):
        """(S, J) group L2 norms a_g (torch: differentiable, with a tiny epsilon against sqrt(0))."""
        b = self.blocks(w)
        if isinstance(b, torch.Tensor):
            return torch.sqrt((b * b).sum(dim=(1, 3)) + 1e-12)
        return np.sqrt((np.asarray(b, dtype=np.float64) ** 2).sum(axis=(1, 3)))

    def occupancy(self, w) -> np.ndarray:
        """(S, J) bool: the group has at least one nonzero weight."""
        return np.asarray(self.blocks(np.asarray(w)) != 0).any(axis=(1, 3))

    def expand(self, keep) -> np.ndarray:
        """(S, J) group mask -> N x K element mask."""
        keep = np.asarray(keep, dtype=bool)
        full = np.repeat(np.repeat(keep, self.cols, axis=0), self.tile, axis=1)
        return full[:self.n, :self.k]


def check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, (int, float)) and 0 <= sparsity < 1):
        raise SparsynError(f"target sparsity {sparsity!r} is outside [0, 1); it is the fraction of PE tiles "
                           "removed per layer, e.g. sparsity=0.5")


def n_pruned(sparsity: float, groups: int) -> int:
    """Groups removed at ``sparsity``: ``round(sparsity * G)``, capped so that one group survives."""
    return min(int(round(sparsity * groups)), groups - 1)


def wpc_threshold(norms, ratio: float = DEFAULT_WPC_RATIO, sparsity: float | None = None):
    """The self-adapting clip threshold theta (a constant for the gradient).

    ``theta = r * mean_g(a_g)`` (papers.md §2), and with a target ``sparsity`` s (mode "target")
    ``theta = max(r * mean_g(a_g), a_(m))`` where ``a_(m)`` is the m-th smallest norm, ``m = round(s*G)``
    (0-based: the weakest group that survives pruning). Returns a float for numpy input, a detached
    0-d tensor for torch input.
    """
    is_t = isinstance(norms, torch.Tensor)
    flat = norms.detach().reshape(-1) if is_t else np.asarray(norms, dtype=np.float64).reshape(-1)
    theta = ratio * flat.mean()
    if sparsity is not None and sparsity > 0:
        m = n_pruned(sparsity, flat.numel() if is_t else flat.size)
        kth = torch.sort(flat).values[m] if is_t else np.sort(flat)[m]
        theta = torch.maximum(theta, kth) if is_t else max(float(theta), float(kth))
    return theta if is_t else float(theta)


def group_penalty(norms: torch.Tensor, wpc: bool = True, ratio: float = DEFAULT_WPC_RATIO,
                  sparsity: float | None = None) -> torch.Tensor:
    """One layer's R: plain group lasso ``sum a_g`` or WPC ``sum_g min(a_g, theta)`` (:func:`wpc_threshold`)."""
    if not wpc:
        return norms.sum()
    theta = wpc_threshold(norms, ratio, sparsity)
    # min(a, theta), with a tie counted as clipped (no gradient for the weakest surviving group)
    return torch.where(norms < theta, norms, theta).sum()


def prune_groups(grid: GroupGrid, w, sparsity: float, name: str = "layer") -> np.ndarray:
    """(S, J) keep-mask removing the ``round(sparsity * G)`` groups with the smallest L2 norm a_g.

    The raw norm (the quantity the penalty acts on) is used, not a per-weight RMS: a partial group (the last
    section of a layer whose N is not a multiple of cols) is compared with the same measure as the penalty.
    Ties are broken by position (stable sort)."""
    check_sparsity(sparsity)
    norms = grid.norms(np.asarray(w, dtype=np.float64))
    g = grid.groups
    n_prune = n_pruned(sparsity, g)
    keep = np.ones(g, dtype=bool)
    if n_prune > 0:
        order = np.argsort(norms.ravel(), kind="stable")
        keep[order[:n_prune]] = False
    keep = keep.reshape(grid.sections, grid.tiles)
    if not (keep & grid.occupancy(w)).any():
        raise SparsynError(f"layer '{name}': every PE tile is pruned or zero, the model would be dead; "
                           "lower the target sparsity or keep this layer dense")
    return keep


def tile_sparsity(grid: GroupGrid, w) -> float:
    """Fraction of the grid's groups that are entirely zero (= skipped slots)."""
    return 1.0 - grid.occupancy(w).sum() / grid.groups




