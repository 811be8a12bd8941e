"""tight: simulated-annealing grouping (sw/anneal.py), subwords (sw/subword.py), pruning (sw/prune.py),
lossless packing for the array given as ``array=``, effective weights, bad inputs (alpha vs the array)."""
import numpy as np
import pytest
import torch

from sparsyn.sw.anneal import AnnealParams, anneal_sections
from sparsyn.sw.array_format import pass_table, rows_used
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.packing import Grouping, conflict_prune, column_combine, virtual_matrix, weight_matrix
from sparsyn.sw.prune import iterative_prune, magnitude_mask
from sparsyn.sw.schedule import ArrayConfig, effective_weights
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.subword import prune_subwords, quantize_subword, split_subwords, subword_count
from sparsyn.sw.testing import random_quant_layer

TIGHT = get_scheme("tight")


def sparse(rng, n, k, density, lim=127):
    return rng.integers(-lim, lim + 1, (n, k)) * (rng.random((n, k)) < density)


def sections(mag, h):
    return [mag[s:s + h] for s in range(0, mag.shape[0], h)]


def test_anneal_groups_valid_and_conflict_free_when_penalty_high():
    rng = np.random.default_rng(0)
    w = sparse(rng, 32, 200, 0.1)
    groups, st = anneal_sections(sections(np.abs(w).astype(float), 8), 8,
                                 AnnealParams(sweeps=150, penalty=1e6), progress=False)
    g = Grouping(8, 8, False, groups)
    g.validate(32, 200)
    _, info = conflict_prune(w, g)
    assert info["pruned"] == 0
    assert st["final_width"] <= st["initial_width"]


def test_anneal_beats_first_fit_and_packcnn_combining():
    """On a random sparse matrix SA lowers the energy of its first-fit start, and its per-section
    packing beats PackCNN's column combining (the original's sequential best-fit over all rows; same
    alpha, no conflicts allowed in either)."""
    rng = np.random.default_rng(1)
    n, k, h, alpha = 64, 300, 8, 8
    w = sparse(rng, n, k, 0.3)
    groups, st = anneal_sections(sections(np.abs(w).astype(float), h), alpha,
                                 AnnealParams(sweeps=300, t0=0.05, fill_bonus=1.0, penalty=2.0), progress=False)
    assert st["final_energy"] < st["initial_energy"]
    _, info = conflict_prune(w, Grouping(h, alpha, False, groups))
    tight_slots = sum(len(g) for g in groups) * h
    combined = column_combine(w != 0, alpha, 0.0)
    packcnn_slots = len(combined) * n
    assert tight_slots < packcnn_slots / 1.5, (tight_slots, packcnn_slots)
    assert info["pruned"] < 0.05 * np.count_nonzero(w)


@pytest.mark.parametrize("subword", [False, True])
def test_tight_pack_roundtrip_and_program(subword):
    rng = np.random.default_rng(2 + subword)
    layer = random_quant_layer(rng, "linear", 50, 1, 1, 13, density=0.25)
    if subword:
        layer.weight = prune_subwords(np.clip(layer.weight, -119, 119), 2)
    s = TIGHT(array=ArrayConfig(2, 4), alpha=4, subword=subword, anneal_steps=60)
    packed = s.pack(layer)
    assert packed.meta["grouping"] == "per-section" and packed.meta["sections"] == 4
    assert packed.meta["array"] == {"rows": 2, "cols": 4, "lanes": 4}
    assert np.array_equal(TIGHT.decode(packed), layer.weight)
    prog, meta = s.schedule(layer)
    widths = [len(x) for x in prog.sections]
    assert sum(widths) == meta["stats"]["groups"] == rows_used(packed)
    # the pass table ROM: each section's groups, R=2 at a time
    table = pass_table(packed, TIGHT.entry_layout(packed))
    assert [sum(1 for p in table if p["section"] == sec) for sec in range(4)] == [-(-w // 2) for w in widths]
    assert [p["channels"] for p in table if p["first"]] == [4, 4, 4, 1]
    assert all(len(slot.lane_k) == 4 and len(slot.entries) == 4 for sec in prog.sections for slot in sec)
    assert np.array_equal(effective_weights(prog, lambda e: TIGHT.entry_coefficients(packed, e)), layer.weight)
    if subword:
        # one packed entry per nonzero subword; a weight column can sit in two groups
        ew = packed.meta["entry_width"]
        entries = [(w >> (c * ew)) & ((1 << ew) - 1) for w in packed.roms["weights"].words for c in range(4)]
        assert sum(1 for e in entries if e) == subword_count(layer.weight)


def test_subword_digits():
    w = np.arange(-119, 120)
    lo, hi = split_subwords(w)
    assert lo.min() >= -8 and lo.max() <= 7 and hi.min() >= -8 and hi.max() <= 7
    assert np.array_equal(hi * 16 + lo, w)
    assert np.array_equal(weight_matrix(virtual_matrix(w[None], True), True)[0], w)
    p = prune_subwords(w, 2)
    lo2, hi2 = split_subwords(p)
    assert ((hi2 == 0) | (lo2 == 0) | (np.abs(lo2) > 2)).all()
    assert np.array_equal(p[np.abs(w) <= 8], w[np.abs(w) <= 8])          # small weights untouched
    assert np.abs(p - w).max() <= 2
    with pytest.raises(ValueError):
        split_subwords(np.array([127]))
    q, scale, bits = quantize_subword(np.array([[1.0, -0.5, 0.01]]), 0)
    assert q.tolist() == [[119, -59, 1]]  # -59.5 rounds half up and bits == 8


def test_magnitude_mask_and_iterative_prune():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.0], [5.0, -0.2, 0.3, 1.0]])
    m = magnitude_mask(w, 0.5)
    assert m.tolist() == [[0, 1, 1, 0], [1, 0, 0, 1]]
    from sparsyn.sw.data import digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    log = []
    hist = iterative_prune(model, digits(), ["1"], 0.2, steps=2, epochs=0, log=log.append, progress=False)
    assert [round(h["density"], 3) for h in hist] == [round(0.2 ** 0.5, 3), 0.2]
    assert int((model[1].weight != 0).sum()) == 128 and len(log) == 2
    with pytest.raises(SparsynError, match="density"):
        iterative_prune(model, digits(), ["1"], 0.0, steps=1, epochs=0, log=log.append)


@pytest.mark.parametrize("opts,needle", [
    ({"alpha": 1}, "alpha"), ({"alpha": 8}, "alpha=8 of scheme 'tight' exceeds the 4 columns of the 4x4 array"),
    ({"alpha": 8, "array": ArrayConfig(8, 4)}, "exceeds the 4 columns"), ({"alpha": 4, "array": "4x2"}, "exceeds the 2"),
    ({"section_height": 4}, "has no option 'section_height'"), ({"array": "0x4"}, "zero dimension"),
    ({"density": 0}, r"density.*\(0, 1\]"), ({"density": 2}, "density"),
    ({"anneal_steps": 0}, "annealing budget"), ({"cooling": 1.0}, "cooling"), ({"t0": 0}, "t0"),
    ({"penalty": -1}, "penalty"), ({"subword_threshold": 9}, "subword_threshold"), ({"beta": 1}, "no option"),
])
def test_bad_options(opts, needle):
    with pytest.raises(SparsynError, match=needle) as err:
        TIGHT(**opts)
    assert "\n" not in str(err.value)


def test_alpha_up_to_the_array_columns():
    """A tight group may be as wide as the array's columns (the rows of its section), not wider."""
    rng = np.random.default_rng(5)
    layer = random_quant_layer(rng, "linear", 40, 1, 1, 16, density=0.15)
    for array in (ArrayConfig(2, 8), "3x8"):
        s = TIGHT(array=array, alpha=8, anneal_steps=30)
        packed = s.pack(layer)
        assert packed.array.cols == 8 and packed.array.lanes == 8
        assert np.array_equal(TIGHT.decode(packed), layer.weight)


def test_layer_too_small_for_alpha():
    rng = np.random.default_rng(4)
    layer = random_quant_layer(rng, "linear", 16, 1, 1, 2, density=0.5, name="two")
    with pytest.raises(SparsynError, match="two cannot be packed: alpha=4 exceeds the 2 rows"):
        TIGHT(array=ArrayConfig(4, 4), alpha=4).pack(layer)


def test_prepare_on_tiny_model_records_groupings():
    """The whole float flow on a small two-layer model: pruning, annealing, conflict pruning, masks hold."""
    from sparsyn.sw.data import digits
    from sparsyn.sw.quantize import quantize_model
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    s = TIGHT(density=0.3, prune_steps=1, finetune_epochs=1, anneal_steps=50, dense_first=False)
    s.prepare(model, digits(), log=lambda *a: None)
    assert set(s.groupings) == {"1", "3"}
    for name, lin in (("1", model[1]), ("3", model[3])):
        w = lin.weight.detach().double().numpy()
        assert np.count_nonzero(w) <= 0.3 * w.size + 1
        assert conflict_prune(w, s.groupings[name])[1]["pruned"] == 0       # conflicts stayed pruned
    q = quantize_model(model, digits(), s)
    for layer in q.compute_layers:
        p = s.pack(layer)
        assert np.array_equal(TIGHT.decode(p), layer.weight)
