"""PCNN pattern pruning (papers.md §3): pattern-set selection, projection, connectivity pruning and the
iterative prune / masked fine-tune loop of the ``pattern`` scheme.

A **group** is the flat vector of G weights one pattern covers:

* ``kernel`` view — a conv weight (N, C, kh, kw) with kh*kw > 1: groups (N*C, G = kh*kw), group
  ``o*C + c``, element ``dy*kw + dx``;
* ``vector`` view — 1x1 conv / Linear, N:M sparsity: the (N, K) matrix in groups of m consecutive
  inputs, (N*ceil(K/m), G = m), group ``o*ceil(K/m) + g``, element ``i`` = input ``g*m + i``; a partial
  last group is padded with zeros.

A **pattern table** is a bool array (P, G) whose rows keep exactly n positions, all distinct. Group ids
index it; id -1 marks a group pruned whole (connectivity pruning).

Pattern selection (:func:`select_patterns`) follows PatDNN's ``pattern_setter``: the most frequent
top-n masks of the layer; then a few rounds of alternating maximisation of the kept energy
``sum_groups sum_{i in pattern(g)} w_gi^2`` — assign every group to its best pattern, replace each used
pattern by the top-n positions of its groups' summed ``w^2`` (the optimum for that assignment), so the
energy never decreases; an unused pattern stays, and a pattern that became a duplicate is replaced by the
most frequent top-n mask not in the table (or the next best n-subset by energy).
"""
from __future__ import annotations

from math import comb

import numpy as np
import torch

from .errors import SparsynError

MODES = ("kernel", "vector")


# ---- group views ---------------------------------------------------------------------------------
def group_view(weight, mode: str, m: int = 4) -> np.ndarray:
    """A layer weight -> its (M, G) groups (a copy; float64, or int64 for integer weights; see the module
    docstring)."""
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    if not np.issubdtype(w.dtype, np.integer):      # integer weights stay integers (the ROM packer's view)
        w = w.astype(np.float64)
    if mode == "kernel":
        if w.ndim != 4 or w.shape[2] * w.shape[3] < 2:
            raise SparsynError(f"the kernel view needs a conv weight with a kh x kw > 1 kernel, got shape {w.shape}")
        n, c, kh, kw = w.shape
        return w.reshape(n * c, kh * kw).copy()
    if mode != "vector":
        raise SparsynError(f"group mode {mode!r} is not one of {MODES}")
    w2 = w.reshape(w.shape[0], -1)
    n, k = w2.shape
    j = -(-k // m)
    out = np.zeros((n, j * m), dtype=w2.dtype)
    out[:, :k] = w2
    return out.reshape(n * j, m)


def ungroup(groups: np.ndarray, shape, mode: str, m: int = 4) -> np.ndarray:
    """Inverse of :func:`group_view` (the padding of a partial last vector group is dropped)."""
    shape = tuple(shape)
    if mode == "kernel":
        return np.asarray(groups).reshape(shape)
    n = shape[0]
    k = int(np.prod(shape[1:]))
    return np.asarray(groups).reshape(n, -1)[:, :k].reshape(shape)


# ---- masks, patterns, assignment -----------------------------------------------------------------
def top_n_masks(groups: np.ndarray, n: int) -> np.ndarray:
    """Per group the n largest |w| (ties: the lower index first)."""
    order = np.argsort(-np.abs(groups), axis=1, kind="stable")[:, :n]
    out = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(out, order, True, axis=1)
    return out


def _mask_codes(masks: np.ndarray) -> np.ndarray:
    return (masks.astype(np.int64) << np.arange(masks.shape[1])).sum(axis=1)


def _code_mask(code: int, g: int) -> np.ndarray:
    return ((int(code) >> np.arange(g)) & 1).astype(bool)


def best_subsets(energy, n: int):
    """The n-subsets of positions in order of decreasing total ``energy``, lazily (mask codes): a best-first
    search from the top-n positions, each step moving one chosen position to the next weaker one. Never
    materialises C(G, n) subsets (a 7x7 kernel at n = 22 has 6e13)."""
    import heapq
    energy = np.asarray(energy, dtype=np.float64)
    order = np.argsort(-energy, kind="stable")
    g = len(order)
    if not 0 < n <= g:
        return
    start = tuple(range(n))
    heap, seen = [(-float(energy[order[list(start)]].sum()), start)], {start}
    while heap:
        neg, idx = heapq.heappop(heap)
        yield sum(1 << int(order[i]) for i in idx)
        for j in range(n):
            limit = idx[j + 1] if j + 1 < n else g
            if idx[j] + 1 < limit:
                nxt = idx[:j] + (idx[j] + 1,) + idx[j + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (neg + float(energy[order[idx[j]]] - energy[order[idx[j] + 1]]), nxt))


def kept_energy(groups: np.ndarray, table: np.ndarray, ids: np.ndarray | None = None) -> float:
    """Sum of the kept squared weights, each group on its best pattern (or on ``ids``; -1 keeps nothing)."""
    e = groups ** 2 @ table.T.astype(np.float64)             # (M, P)
    if ids is None:
        return float(e.max(axis=1).sum())
    ids = np.asarray(ids)
    live = ids >= 0
    return float(e[np.flatnonzero(live), ids[live]].sum())


def assign_patterns(groups: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per group the pattern keeping the most squared magnitude (ties: the lowest id)."""
    return np.argmax(groups ** 2 @ table.T.astype(np.float64), axis=1)


def select_patterns(groups: np.ndarray, n: int, p: int, rounds: int = 5) -> np.ndarray:
    """The layer's pattern table: at most ``min(p, C(G, n))`` distinct masks of n, most used first."""
    m_groups, g = groups.shape
    p = min(p, comb(g, n))
    live = np.abs(groups).sum(axis=1) > 0
    codes = _mask_codes(top_n_masks(groups[live], n)) if live.any() else np.zeros(0, np.int64)
    uniq, counts = np.unique(codes, return_counts=True)
    ranked = [int(c) for c in uniq[np.lexsort((uniq, -counts))]]      # frequency, then the lower code
    table_codes = ranked[:p]
    if len(table_codes) < p:                   # too few distinct masks: the best other n-subsets by energy
        have = set(table_codes)
        for code in best_subsets((groups ** 2).sum(axis=0), n):
            if code not in have:
                table_codes.append(code)
                have.add(code)
            if len(table_codes) == p:
                break
    table = np.array([_code_mask(c, g) for c in table_codes], dtype=bool)
    sq = groups ** 2
    for _ in range(rounds):
        ids = assign_patterns(groups, table)
        new = table.copy()
        for k in range(len(table)):
            members = ids == k
            if members.any():
                new[k] = top_n_masks(sq[members].sum(axis=0, keepdims=True), n)[0]
        # deduplicate; unused / duplicate rows get the most frequent top-n masks not yet in the table
        seen, rows = set(), []
        for row in new:
            code = int(_mask_codes(row[None])[0])
            if code not in seen:
                seen.add(code)
                rows.append(row)
        for code in ranked:
            if len(rows) >= len(table):
                break
            if code not in seen:
                seen.add(code)
                rows.append(_code_mask(code, g))
        for code in best_subsets(sq.sum(axis=0), n):   # (only when the layer has too few distinct masks)
            if len(rows) >= len(table):
                break
            if code not in seen:
                seen.add(code)
                rows.append(_code_mask(code, g))
        candidate = np.array(rows, dtype=bool)
        if kept_energy(groups, candidate) + 1e-12 < kept_energy(groups, table):
            break                                       # (cannot happen for the re-centring; kept as a guard)
        if np.array_equal(candidate, table):
            break
        table = candidate
    usage = np.bincount(assign_patterns(groups, table), minlength=len(table))
    order = np.argsort(-usage, kind="stable")
    return table[order]


def project(groups: np.ndarray, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Zero everything outside each group's assigned pattern; id -1 zeroes the group."""
    ids = np.asarray(ids)
    keep = table[np.maximum(ids, 0)] & (ids >= 0)[:, None]
    return np.where(keep, groups, 0.0)


def prune_connectivity(groups: np.ndarray, table: np.ndarray, ids: np.ndarray, fraction: float) -> np.ndarray:
    """The ``round(fraction * M)`` groups with the least kept squared magnitude get id -1 (pruned whole)."""
    if not 0 <= fraction < 1:
        raise SparsynError(f"connectivity={fraction} must be in [0, 1), e.g. 0.2")
    ids = np.asarray(ids).copy()
    count = int(round(fraction * len(ids)))
    if count == 0:
        return ids
    if count >= len(ids):
        raise SparsynError(f"connectivity={fraction} would prune every kernel of the layer; lower it")
    kept = (groups ** 2 * table[np.maximum(ids, 0)]).sum(axis=1)
    ids[np.argsort(kept, kind="stable")[:count]] = -1
    return ids


def n_schedule(g: int, n: int, steps: int) -> list[int]:
    """Kept weights per group at each pruning step: non-increasing from below G down to n (the last)."""
    count = max(1, min(steps, g - n))
    return [int(round(g - (g - n) * (t + 1) / count)) for t in range(count)]


# ---- the iterative loop ----------------------------------------------------------------------------
def prune_patterns(model, data, targets: list[dict], *, steps: int, epochs: int, lr: float,
                   connectivity: float = 0.0, seed: int = 0, rounds: int = 5, log=print, progress: bool = True):
    """Iterative pattern pruning with masked fine-tuning, in place on the float ``model``.

    ``targets``: one dict per layer ``{"name", "mode", "n", "p", "m"}``. At step t every target keeps
    ``n_schedule(G, n, steps)[t]`` per group (its last value once its schedule is shorter): a fresh
    pattern table (:func:`select_patterns`), each group on its best pattern, the weights projected and
    masked; on the last step the ``connectivity`` fraction of groups is pruned whole. Then ``epochs`` of
    masked fine-tuning (:func:`sparsyn.sw.train.train`) and one log line with the accuracy.

    Returns ``(tables, ids, history)``: the final table and group ids (-1 = pruned whole) per layer, and
    ``{"accuracy": {"start", "steps": [{"step", "n", "accuracy"}]}, "layers": {name: {...}}}``.
    """
    from .train import accuracy, train
    mods = dict(model.named_modules())
    specs = []
    for t in targets:
        mod = mods[t["name"]]
        g = group_view(mod.weight, t["mode"], t.get("m", 4)).shape[1]
        specs.append((t, mod, n_schedule(g, t["n"], steps)))
    total = max((len(s) for _, _, s in specs), default=0)
    hist = {"accuracy": {"start": accuracy(model, data.test_x, data.test_y), "steps": []}, "layers": {}}
    tables, ids_out = {}, {}
    for step in range(total):
        masks, kept_n = {}, {}
        final = step == total - 1
        for t, mod, sched in specs:
            n_t = sched[min(step, len(sched) - 1)]
            groups = group_view(mod.weight, t["mode"], t.get("m", 4))
            energy = float((groups ** 2).sum())
            table = select_patterns(groups, n_t, t["p"], rounds)
            ids = assign_patterns(groups, table)
            if final and connectivity > 0:
                ids = prune_connectivity(groups, table, ids, connectivity)
            kept = kept_energy(groups, table, ids)
            projected = project(groups, table, ids)
            shape = tuple(mod.weight.shape)
            with torch.no_grad():
                mod.weight.copy_(torch.as_tensor(ungroup(projected, shape, t["mode"], t.get("m", 4)),
                                                 dtype=mod.weight.dtype))
            keep = table[np.maximum(ids, 0)] & (ids >= 0)[:, None]
            masks[f"{t['name']}.weight"] = torch.as_tensor(
                ungroup(keep.astype(np.float64), shape, t["mode"], t.get("m", 4)), dtype=mod.weight.dtype)
            kept_n[t["name"]] = n_t
            tables[t["name"]], ids_out[t["name"]] = table, ids
            hist["layers"][t["name"]] = {"mode": t["mode"], "n": n_t, "patterns": int(len(table)),
                                         "usage": np.bincount(ids[ids >= 0], minlength=len(table)).tolist(),
                                         "pruned_groups": int(np.sum(ids < 0)), "groups": int(len(ids)),
                                         "kept_magnitude": kept / energy if energy else 1.0}
        if epochs > 0:
            acc = train(model, data, epochs=epochs, lr=lr, masks=masks, seed=seed + step, progress=progress,
                        desc=f"pattern: step {step + 1}/{total} n=" + ",".join(str(v) for v in kept_n.values()))
        else:
            acc = accuracy(model, data.test_x, data.test_y)
        hist["accuracy"]["steps"].append({"step": step + 1, "n": kept_n, "accuracy": acc})
        log(f"pattern: step {step + 1}/{total} n=" + ", ".join(f"{k} {v}" for k, v in kept_n.items())
            + f": accuracy {acc:.2f} %")
    hist["accuracy"]["final"] = hist["accuracy"]["steps"][-1]["accuracy"] if total else hist["accuracy"]["start"]
    return tables, ids_out, hist
