"""Simulated-annealing column permutation for Tight Compression, vectorised over row sections.

Every row section (``height`` rows of the N x Kv virtual matrix, see :mod:`.packing`) is an
independent problem; all sections anneal together in numpy arrays. **[ours]** — the paper gives
the idea (permute columns by simulated annealing), the mechanics below are this implementation's:

* **State** — per section ``G`` groups of ``alpha`` lane slots; each slot holds one of the
  section's nonzero columns or is empty. Initial state: conflict-free first-fit-decreasing
  (columns by nonzero count, then magnitude) plus ``slack`` spare empty groups (5 %).
* **Move** — pick two distinct groups and one slot in each (the first slot is a random *occupied*
  slot) and swap their contents: a swap of two columns, or a move of one column to an empty slot.
  Each *sweep* pairs up all groups of every section at random and proposes one move per pair
  (pairs are disjoint, so the moves are evaluated and applied in parallel).
* **Energy** per group, summed over groups::

      E = [group not empty]                               # packed width (1 per group)
        + penalty * pruned_magnitude / mean_magnitude      # conflict pruning cost
        - fill_bonus * (rows covered / height)**2          # tie-breaker that lets groups drain

  ``pruned_magnitude`` = over the group's rows, sum of the nonzeros minus the largest one (what
  conflict pruning removes); it is divided by the section's mean nonzero magnitude, so ``penalty``
  is "how many groups pruning one average weight is worth". ``fill_bonus`` rewards concentrating
  nonzeros in few groups, which gives a gradient towards emptying a group.
* **Acceptance** — Metropolis: accept when ``dE <= 0`` or with probability ``exp(-dE / T)``.
* **Cooling** — geometric, ``T = t0 * cooling**sweep`` over ``sweeps`` sweeps (the budget).

At the end each section keeps the better of its annealed and its initial (first-fit) state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm


@dataclass
class AnnealParams:
    """Annealing knobs (see the module docstring)."""
    sweeps: int = 400
    t0: float = 0.5
    cooling: float = 0.99
    penalty: float = 2.0
    fill_bonus: float = 0.25
    slack: float = 0.05
    seed: int = 0


def _bits(support: np.ndarray) -> np.ndarray:
    """(..., H) bool -> (...,) uint64 row bitmask (H <= 64)."""
    w = (np.uint64(1) << np.arange(support.shape[-1], dtype=np.uint64))
    return (support.astype(np.uint64) * w).sum(axis=-1, dtype=np.uint64)


def first_fit_batch(sup_bits: np.ndarray, order: np.ndarray, counts: np.ndarray, alpha: int,
                    empty: int) -> np.ndarray:
    """Conflict-free first-fit of every section at once.

    ``sup_bits`` (S, Kmax+1) row bitmasks (last column = the empty column), ``order`` (S, Kmax)
    column order per section (``empty`` past each section's ``counts``). Returns group index per
    column (S, Kmax+1), -1 for unplaced / empty.
    """
    s_n, kmax = order.shape
    cap = 8
    occ = np.zeros((s_n, cap), dtype=np.uint64)
    size = np.zeros((s_n, cap), dtype=np.int64)
    opened = np.zeros(s_n, dtype=np.int64)
    group = np.full((s_n, kmax + 1), -1, dtype=np.int64)
    rows = np.arange(s_n)
    for i in range(kmax):
        col = order[:, i]
        live = i < counts
        sup = sup_bits[rows, col]
        g_used = int(opened.max()) + 1
        if g_used > cap:
            grow = max(cap, g_used - cap)
            occ = np.concatenate([occ, np.zeros((s_n, grow), dtype=np.uint64)], axis=1)
            size = np.concatenate([size, np.zeros((s_n, grow), dtype=np.int64)], axis=1)
            cap += grow
        ok = ((occ[:, :g_used] & sup[:, None]) == 0) & (size[:, :g_used] < alpha)
        ok &= np.arange(g_used)[None, :] < opened[:, None] + 1   # at most one new group
        g = np.argmax(ok, axis=1)
        opened = np.where(live & (g == opened), opened + 1, opened)
        occ[rows[live], g[live]] |= sup[live]
        size[rows[live], g[live]] += 1
        group[rows[live], col[live]] = g[live]
    return group


def anneal_sections(mag_sections: list[np.ndarray], alpha: int, params: AnnealParams,
                    progress: bool = True, desc: str = "anneal") -> tuple[list[list[tuple[int, ...]]], dict]:
    """Anneal every section; ``mag_sections[s]`` is an (h x Kv) nonnegative magnitude block.

    Returns (groups per section as tuples of virtual columns, statistics dict).
    """
    s_n = len(mag_sections)
    if s_n == 0:
        return [], {"initial_width": 0, "final_width": 0}
    h = mag_sections[0].shape[0]
    if h > 64:
        raise ValueError("section height above 64 rows is not supported by the annealer")
    cols = [np.nonzero((m > 0).any(axis=0))[0] for m in mag_sections]
    counts = np.array([len(c) for c in cols], dtype=np.int64)
    kmax = max(1, int(counts.max()))
    empty = kmax
    mag = np.zeros((s_n, kmax + 1, h), dtype=np.float32)
    order = np.full((s_n, kmax), empty, dtype=np.int64)
    mbar = np.ones(s_n, dtype=np.float64)
    for s, (m, c) in enumerate(zip(mag_sections, cols)):
        if len(c):
            blk = m[:, c].T
            mag[s, :len(c), :blk.shape[1]] = blk
            nz = blk[blk > 0]
            mbar[s] = float(nz.mean())
            key = np.lexsort((-blk.sum(axis=1), -(blk > 0).sum(axis=1)))
            order[s, :len(c)] = key
    sup_bits = _bits(mag > 0)
    group = first_fit_batch(sup_bits, order, counts, alpha, empty)
    init_w = group.max(axis=1) + 1
    g_n = int(init_w.max()) + max(1, int(np.ceil(params.slack * init_w.max())))
    # slot state: pos[s, g, a] = local column or `empty`
    pos = np.full((s_n, g_n, alpha), empty, dtype=np.int64)
    fill = np.zeros((s_n, g_n), dtype=np.int64)
    for s in range(s_n):
        c = np.nonzero(group[s, :kmax] >= 0)[0]
        g = group[s, c]
        o = np.argsort(g, kind="stable")
        c, g = c[o], g[o]
        start = np.searchsorted(g, g)
        pos[s, g, np.arange(len(g)) - start] = c
        fill[s] = 0
    sidx = np.arange(s_n)[:, None]
    inv_mbar = (params.penalty / mbar)[:, None]

    popc = np.bitwise_count(sup_bits).astype(np.int64)   # nonzeros per column (S, Kmax+1)

    def cost(members):                                   # (S, P, alpha) -> (S, P)
        # row bitmasks: a group conflicts iff its members' nonzero counts exceed its covered rows;
        # only conflicting groups need the (slow) per-row magnitude gather for the pruned magnitude
        b = sup_bits[sidx[..., None], members]           # S, P, alpha
        orr = b[..., 0].copy()
        for a in range(1, alpha):
            orr |= b[..., a]
        cover = np.bitwise_count(orr).astype(np.int64)
        tot = popc[sidx[..., None], members].sum(axis=-1)
        pruned = np.zeros(cover.shape, dtype=np.float64)
        si, pi = np.nonzero(tot > cover)
        if len(si):
            mg = mag[si[:, None], members[si, pi]]       # M, alpha, h
            pruned[si, pi] = (mg.sum(axis=1) - mg.max(axis=1)).sum(axis=-1)
        return (cover > 0) + inv_mbar * pruned - params.fill_bonus * (cover / h) ** 2

    all_g = np.broadcast_to(np.arange(g_n), (s_n, g_n))
    gcost = cost(pos)
    init_energy = gcost.sum(axis=1)
    init_pos = pos.copy()
    rng = np.random.default_rng(params.seed)
    p_n = g_n // 2
    t = params.t0
    accepted = 0
    bar = tqdm(range(params.sweeps), desc=desc, disable=not progress, leave=False, unit="sweep")
    for _ in bar:
        if p_n == 0:
            break
        perm = np.argsort(rng.random((s_n, g_n)), axis=1)
        g1, g2 = perm[:, :p_n], perm[:, p_n:2 * p_n]
        m1, m2 = pos[sidx, g1], pos[sidx, g2]            # S, P, alpha
        key = rng.random(m1.shape) + (m1 != empty)
        i1 = np.argmax(key, axis=2)
        i2 = rng.integers(alpha, size=(s_n, p_n))
        sp = (sidx, np.arange(p_n)[None, :])
        a, b = m1[sp + (i1,)], m2[sp + (i2,)]
        n1, n2 = m1.copy(), m2.copy()
        n1[sp + (i1,)] = b
        n2[sp + (i2,)] = a
        c1, c2 = cost(n1), cost(n2)
        de = c1 + c2 - gcost[sidx, g1] - gcost[sidx, g2]
        ok = (de <= 0) | (rng.random(de.shape) < np.exp(-np.maximum(de, 0) / max(t, 1e-12)))
        ok &= ~((a == empty) & (b == empty))
        pos[sidx, g1] = np.where(ok[..., None], n1, m1)
        pos[sidx, g2] = np.where(ok[..., None], n2, m2)
        gcost[sidx, g1] = np.where(ok, c1, gcost[sidx, g1])
        gcost[sidx, g2] = np.where(ok, c2, gcost[sidx, g2])
        accepted += int(ok.sum())
        t *= params.cooling
    final_energy = cost(pos).sum(axis=1)
    worse = final_energy > init_energy
    pos[worse] = init_pos[worse]
    out = []
    for s in range(s_n):
        groups = []
        for g in range(g_n):
            mem = [int(cols[s][c]) for c in pos[s, g] if c != empty]
            if mem:
                groups.append(tuple(sorted(mem)))
        out.append(groups)
    stats = {"initial_width": int(init_w.sum()), "final_width": sum(len(g) for g in out),
             "initial_energy": float(init_energy.sum()),
             "final_energy": float(np.minimum(final_energy, init_energy).sum()),
             "accepted_moves": accepted, "sweeps": params.sweeps, "sections": s_n}
    return out, stats
