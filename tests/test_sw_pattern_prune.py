"""PCNN pattern pruning: group views, pattern selection (frequency + energy-monotone refinement), projection,
connectivity pruning and the iterative prune / fine-tune loop."""
import numpy as np
import pytest
import torch

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.pattern_prune import (assign_patterns, group_view, kept_energy, n_schedule,
                                      project, prune_connectivity, prune_patterns, select_patterns, top_n_masks,
                                      ungroup)


def test_group_views_round_trip():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3))
    g = group_view(w, "kernel")
    assert g.shape == (12, 9) and np.array_equal(g[3 * 1 + 2], w[1, 2].ravel())
    assert np.array_equal(ungroup(g, w.shape, "kernel"), w)
    v = rng.normal(size=(5, 10))                       # K = 10: groups of 4, the last one padded
    gv = group_view(v, "vector", 4)
    assert gv.shape == (15, 4) and np.array_equal(gv[2], [v[0, 8], v[0, 9], 0, 0])
    assert np.array_equal(ungroup(gv, v.shape, "vector", 4), v)
    v4 = v.reshape(5, 10, 1, 1)
    assert np.array_equal(ungroup(group_view(v4, "vector", 4), v4.shape, "vector", 4), v4)
    with pytest.raises(SparsynError, match="kernel view needs"):
        group_view(rng.normal(size=(2, 2, 1, 1)), "kernel")


def test_top_n_masks_ties_take_the_lower_index():
    g = np.array([[1.0, -3.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    assert top_n_masks(g, 2).tolist() == [[False, True, True, False], [True, True, False, False]]


def test_planted_patterns_are_found():
    rng = np.random.default_rng(1)
    a, b = np.zeros(9, bool), np.zeros(9, bool)
    a[[0, 4, 8, 1]] = True
    b[[2, 4, 6, 7]] = True
    groups = rng.normal(size=(200, 9)) * 0.05
    groups[:120] += np.where(a, 3.0, 0) * rng.choice([-1, 1], size=(120, 9))
    groups[120:] += np.where(b, 3.0, 0) * rng.choice([-1, 1], size=(80, 9))
    table = select_patterns(groups, 4, 2)
    assert table.shape == (2, 9) and (table.sum(axis=1) == 4).all()
    assert [r.tolist() for r in table] == [a.tolist(), b.tolist()]      # most used first
    ids = assign_patterns(groups, table)
    assert (ids[:120] == 0).all() and (ids[120:] == 1).all()


def test_refinement_never_loses_energy_and_rows_are_distinct():
    rng = np.random.default_rng(2)
    groups = rng.laplace(size=(500, 9))
    start = select_patterns(groups, 3, 6, rounds=0)
    energies = [kept_energy(groups, select_patterns(groups, 3, 6, rounds=r)) for r in range(6)]
    assert energies[0] == pytest.approx(kept_energy(groups, start))
    assert all(b >= a - 1e-9 for a, b in zip(energies, energies[1:])), energies
    # few groups, (almost) every top-n mask unique: the frequency ranking is arbitrary, refinement must help
    few = rng.normal(size=(30, 9))
    e = [kept_energy(few, select_patterns(few, 4, 5, rounds=r)) for r in range(6)]
    assert all(b >= a - 1e-9 for a, b in zip(e, e[1:])) and e[-1] > e[0] * 1.01, e
    t = select_patterns(groups, 3, 6)
    assert len({tuple(r) for r in t}) == len(t) == 6 and (t.sum(axis=1) == 3).all()


def test_few_distinct_masks_and_the_combinatorial_cap():
    groups = np.zeros((5, 4))
    groups[:, 0] = groups[:, 1] = 1.0                  # one distinct top-2 mask
    t = select_patterns(groups, 2, 6)
    assert len(t) == 6 and len({tuple(r) for r in t}) == 6   # filled up to C(4, 2) = 6
    assert len(select_patterns(groups, 2, 50)) == 6


def test_project_and_connectivity():
    rng = np.random.default_rng(3)
    groups = rng.normal(size=(40, 9))
    table = select_patterns(groups, 4, 4)
    ids = assign_patterns(groups, table)
    p = project(groups, table, ids)
    assert ((p != 0) <= table[ids]).all() and np.array_equal(p[table[ids]], groups[table[ids]])
    pruned = prune_connectivity(groups, table, ids, 0.25)
    assert np.sum(pruned < 0) == 10
    kept = (groups ** 2 * table[ids]).sum(axis=1)
    assert kept[pruned < 0].max() <= kept[pruned >= 0].min()       # the weakest ones
    assert not project(groups, table, pruned)[pruned < 0].any()
    with pytest.raises(SparsynError, match=r"connectivity=1.0 must be in \[0, 1\)"):
        prune_connectivity(groups, table, ids, 1.0)
    with pytest.raises(SparsynError, match="would prune every kernel"):
        prune_connectivity(groups[:1], table, ids[:1], 0.6)


def test_n_schedule():
    assert n_schedule(9, 4, 3) == [7, 6, 4]
    assert n_schedule(9, 4, 10) == [8, 7, 6, 5, 4]
    assert n_schedule(4, 2, 1) == [2]
    for g, n, s in [(9, 1, 4), (25, 5, 6), (4, 3, 3)]:
        sched = n_schedule(g, n, s)
        assert sched[-1] == n and sched[0] < g and all(a >= b for a, b in zip(sched, sched[1:]))


def test_prune_patterns_on_a_tiny_model():
    from sparsyn.sw.data import digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 10))
    data = digits()
    targets = [{"name": "0", "mode": "kernel", "n": 3, "p": 3, "m": 9},
               {"name": "3", "mode": "vector", "n": 2, "p": 6, "m": 4}]
    logs = []
    tables, ids, hist = prune_patterns(model, data, targets, steps=3, epochs=1, lr=3e-3, connectivity=0.1,
                                       log=logs.append, progress=False)
    assert len(hist["accuracy"]["steps"]) == len(logs) == 3          # the conv's schedule is the longest
    assert [s["n"]["0"] for s in hist["accuracy"]["steps"]] == n_schedule(9, 3, 3)
    assert [s["n"]["3"] for s in hist["accuracy"]["steps"]] == [3, 2, 2]     # 4 -> 2: two steps, then held
    for t in targets:
        w = dict(model.named_modules())[t["name"]].weight
        groups = group_view(w, t["mode"], t["m"])
        table, i = tables[t["name"]], ids[t["name"]]
        assert (table.sum(axis=1) == t["n"]).all() and len(table) <= t["p"]
        support = groups != 0
        assert (support <= (table[np.maximum(i, 0)] & (i >= 0)[:, None])).all()   # inside its pattern
        assert np.sum(i < 0) == round(0.1 * len(i)) and not groups[i < 0].any()


def test_best_subsets_is_lazy_and_in_energy_order():
    """The fill-up search yields n-subsets by decreasing energy without listing C(G, n) of them (a 7x7 kernel
    at n = 22 has 6e13): the first ones of G = 49, n = 22 come at once."""
    from itertools import combinations, islice

    from sparsyn.sw.pattern_prune import best_subsets
    rng = np.random.default_rng(0)
    e = rng.random(7)
    got = list(best_subsets(e, 3))
    want = sorted(combinations(range(7), 3), key=lambda s: -e[list(s)].sum())
    assert len(got) == len(set(got)) == 35
    assert [round(sum(e[i] for i in range(7) if c >> i & 1), 12) for c in got] == \
        [round(e[list(s)].sum(), 12) for s in want]
    big = list(islice(best_subsets(rng.random(49), 22), 10))
    assert len(set(big)) == 10 and all(bin(c).count("1") == 22 for c in big)
    # a layer with fewer distinct masks than patterns: filled up from the lazy search
    t = select_patterns(rng.normal(size=(4, 49)), 22, 8)
    assert len(t) == 8 and len({tuple(r) for r in t}) == 8 and (t.sum(axis=1) == 22).all()


def test_frequency_ties_take_the_lower_mask_code():
    # two masks, each the top-2 of exactly two groups: {0,1} (code 3) and {2,3} (code 12); p=1 keeps code 3
    g = np.array([[0, 0, 2, 1], [0, 0, 1, 2], [2, 1, 0, 0], [1, 2, 0, 0]], dtype=float)
    assert select_patterns(g, 2, 1, rounds=0).tolist() == [[True, True, False, False]]


def test_initial_table_is_the_most_frequent_masks():
    # top-2 masks: {0,1} x3, {2,3} x2, {1,2} x1; p=2, rounds=0 -> {0,1} then {2,3}
    g = np.array([[2, 1, 0, 0]] * 3 + [[0, 0, 2, 1]] * 2 + [[0, 2, 1, 0]], dtype=float)
    assert select_patterns(g, 2, 2, rounds=0).tolist() == [[True, True, False, False], [False, False, True, True]]


def test_refinement_recentres_to_the_top_energy_positions():
    # one pattern; every group's own top-2 differs, but the summed w^2 peaks at {0, 1}
    rng = np.random.default_rng(5)
    g = rng.normal(size=(60, 6)) * 0.1
    g[:, 0] += 1.0
    g[:, 1] += 0.9
    g[np.arange(60), 2 + np.arange(60) % 4] += 1.2
    assert select_patterns(g, 2, 1, rounds=3).tolist() == [[True, True, False, False, False, False]]


def test_refinement_deduplicates_merged_patterns():
    # a case (found by search) where re-centring maps both patterns onto {2, 3}
    g = np.array([[-3.12, -0.86, 2.55, -3.08], [1.66, 0.85, -3.21, -1.48], [-2.02, 2.04, 3.51, -1.8],
                  [-0.83, -0.59, -0.45, 0.04], [0.6, -2.37, -0.83, 1.76], [0.78, -1.57, 3.25, 2.32],
                  [0.45, -0.09, 0.25, -0.98], [-2.36, 0.14, -0.58, -3.2], [-0.47, -1.1, 1.61, -0.74],
                  [-0.27, -0.56, -0.28, 1.14], [-2.37, -0.33, 3.94, 2.09], [-3.16, 3.17, 2.5, -4.57],
                  [-1.42, 1.26, 2.64, -2.84], [-0.4, -0.28, 1.37, 3.32]])
    t = select_patterns(g, 2, 2)
    assert len(t) == 2 and len({tuple(x) for x in t}) == 2 and (t.sum(axis=1) == 2).all()
    for seed in range(20):
        t = select_patterns(np.random.default_rng(seed).normal(size=(12, 4)) * [3, 3, 1, 1], 2, 4)
        assert len({tuple(r) for r in t}) == len(t)


def test_prune_patterns_epochs_zero_is_projection_only():
    from sparsyn.sw.data import digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 10))
    tables, ids, hist = prune_patterns(model, digits(), [{"name": "0", "mode": "kernel", "n": 4, "p": 4, "m": 9}],
                                       steps=2, epochs=0, lr=1e-3, log=lambda s: None, progress=False)
    groups = group_view(model[0].weight, "kernel")
    assert ((groups != 0) <= tables["0"][ids["0"]]).all()        # the projection was written back
    assert ((groups != 0).sum(axis=1) <= 4).all() and len(hist["accuracy"]["steps"]) == 2
