"""PCNN pattern pruning: group views, pattern selection (frequency + energy-monotone refinement), projection,
connectivity pruning and the iterative prune / fine-tune loop."""
import numpy as np
import pytest
import torch

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.pattern_prune import (assign_patterns, check_pattern_options, group_view, kept_energy, n_schedule,
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


@pytest.mark.parametrize("args,match", [((9, 0, 4), "option n=0 must be in 1..8"), ((9, 9, 4), "option n=9 must be in 1..8"),
                                        ((9, 4, 0), r"option patterns=0 must be in 1..126"),
                                        ((4, 2, 7), r"option patterns=7 must be in 1..6 \(C\(4,2\)\)")])
def test_check_pattern_options(args, match):
    with pytest.raises(SparsynError, match=match):
        check_pattern_options(*args)
    with pytest.raises(SparsynError, match="nm_"):
        check_pattern_options(*args, what="vector")


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
