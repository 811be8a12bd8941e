"""packcnn + the shared column-combining machinery (sw/packing.py): grouping validity, conflict pruning,
lossless ROM round trip (the array's memory images and the grouped form), the schedule's effective weights,
the array given as ``array=``, bad inputs; the original's flow (sw/schemes/packcnn.py, sw/prune.py): options,
the cubic schedule, conflict-pruned weights returning, gamma as a cap on pruned weights, column windows,
per-layer alpha (alpha = 1 on the array), the default digits model through compress -> manifest."""
import numpy as np
import pytest

from sparsyn.sw.array_format import array_layouts, check_array, rows_used
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.packing import (Grouping, conflict_prune, decode_fields, decode_packed, encode_fields,
                                entry_layout, column_combine, is_lossless, pack_matrix, repair, tile_program)
from sparsyn.sw.schedule import ArrayConfig, effective_weights
from sparsyn.sw.schemes import PackedLayer, Rom, get_scheme
from sparsyn.sw.testing import random_quant_layer

PACKCNN = get_scheme("packcnn")


def sparse(rng, n, k, density, lim=127):
    return rng.integers(-lim, lim + 1, (n, k)) * (rng.random((n, k)) < density)


def conflict_rows(sup, group):
    return int((sup[:, list(group)].sum(axis=1) >= 2).sum())


@pytest.mark.parametrize("alpha,gamma", [(2, 0.0), (4, 0.0), (4, 0.25), (8, 0.1)])
def test_greedy_groups_respect_alpha_and_gamma(alpha, gamma):
    rng = np.random.default_rng(alpha)
    w = sparse(rng, 24, 60, 0.15)
    sup = w != 0
    groups = column_combine(sup, alpha, gamma)
    cols = [c for g in groups for c in g]
    assert sorted(cols) == sorted(np.nonzero(sup.any(0))[0].tolist())   # every nonzero column once
    assert all(1 <= len(g) <= alpha for g in groups)
    # gamma caps the weights conflict pruning removes from a group: sum_rows max(0, nonzeros - 1)
    assert all(int(np.clip(sup[:, list(g)].sum(axis=1) - 1, 0, None).sum()) <= int(gamma * 24) for g in groups)
    assert len(groups) < len(cols)                                       # something was combined
    pruned, info = conflict_prune(w, Grouping(4, alpha, False, [groups], shared=True))
    assert all(conflict_rows(pruned != 0, g) == 0 for g in groups)       # conflict-free after pruning
    assert (gamma == 0) == (info["pruned"] == 0)
    # survivors are the largest magnitude of each (row, group)
    for g in groups:
        blk = np.abs(w[:, list(g)])
        kept = np.abs(pruned[:, list(g)]).max(axis=1)
        assert (kept == blk.max(axis=1)).all()


def test_greedy_merges_complementary_columns():
    sup = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=bool)
    # columns 0 and 1 cover all rows without conflict; 2 and 3 as well
    groups = column_combine(sup, 2, 0.0)
    assert sorted(groups) == [(0, 1), (2, 3)]


@pytest.mark.parametrize("subword", [False, True])
@pytest.mark.parametrize("alpha,height", [(2, 4), (4, 4), (3, 8)])
def test_pack_decode_program_roundtrip(subword, alpha, height):
    """Packed for a 3 x height array (``array=``): the ROMs are that array's memory images with alpha
    lanes, decode to the exact weights, and the schedule computes them."""
    rng = np.random.default_rng(alpha * 10 + height + subword)
    layer = random_quant_layer(rng, "conv", 3, 5, 5, 11, kernel=3, padding=1, density=0.3)
    if subword:
        layer.weight = np.clip(layer.weight, -119, 119)
    array = ArrayConfig(3, height)
    scheme = PACKCNN(array=array, alpha=alpha, subword=subword)
    packed = scheme.pack(layer)
    assert packed.meta["array"] == {"rows": 3, "cols": height, "lanes": alpha}
    assert packed.array == ArrayConfig(3, height, alpha)
    assert {name: rom.kind for name, rom in packed.roms.items()} == {
        "weights": "weights", "lanes": "index", "passes": "table", "bias": "constants", "requant": "constants"}
    assert np.array_equal(PACKCNN.decode(packed), layer.weight)
    prog, meta = scheme.schedule(layer)
    assert prog.array.lanes == alpha == PACKCNN.lanes(packed)
    assert len(prog.sections) == -(-layer.n // height) and len(prog.passes) == packed.meta["passes"]
    assert rows_used(packed) == prog.slot_count == meta["stats"]["groups"]   # one array-row load per group
    ew = effective_weights(prog, lambda e: PACKCNN.entry_coefficients(packed, e))
    assert np.array_equal(ew, layer.weight)
    st = PACKCNN.stats(packed, layer)
    if not subword:  # uniform random weights have ~2 nonzero subwords each: no rate promise there
        assert st["packed_slots"] < st["dense_slots"] and st["matrix_rate"] > 1
    # the grouped form's index (sel fields + lane tables) is reported under its own name, never as the chip's
    assert st["rom_bits"] == packed.rom_bits and st["grouped_index_bits"] > 0 and "index_bits" not in st
    kinds = packed.bits_by_kind()
    assert kinds["index"] == packed.roms["lanes"].bits > 0 and sum(kinds.values()) == packed.rom_bits


def test_entry_layout_matches_amaranth_struct():
    from amaranth.lib import data
    layout = entry_layout(4, False)
    words = encode_fields(layout, weight=np.array([-128, 127, -1]), sel=np.array([3, 0, 2]))
    for word, (w, s) in zip(words, [(-128, 3), (127, 0), (-1, 2)]):
        view = data.Const(layout, int(word))
        assert (view.weight, view.sel) == (w, s)
    f = decode_fields(layout, words)
    assert f["weight"].tolist() == [-128, 127, -1] and f["sel"].tolist() == [3, 0, 2]
    with pytest.raises(ValueError):
        encode_fields(layout, weight=np.array([0]), sel=np.array([4]))


def test_repair_is_lossless():
    rng = np.random.default_rng(5)
    w = sparse(rng, 8, 40, 0.4)
    bad = Grouping(4, 4, False, [[tuple(range(0, 40, 2))[:4], (1, 3)], [(0, 1, 2, 3)]])
    assert not is_lossless(w, bad)
    fixed = repair(w, bad)
    assert is_lossless(w, fixed)
    fixed.validate(8, 40)


def test_quantize_enforces_grouping_and_prepare_records_it():
    """quantize_weights applies the recorded grouping (no-op when the floats already obey it)."""
    rng = np.random.default_rng(1)
    s = get_scheme("packcnn")(alpha=4, gamma=0.5)
    w = rng.normal(size=(8, 20)) * (rng.random((8, 20)) < 0.5)
    s.groupings["fc"] = s.choose_groups(np.abs(w), "fc")
    s.layer_names[0] = "fc"
    q = s.quantize_weights(0, w)[0]
    assert is_lossless(q, s.groupings["fc"])
    assert np.count_nonzero(q) < np.count_nonzero(w)   # gamma=0.5 allowed conflicts: they were pruned


@pytest.mark.parametrize("opts,needle", [
    ({"alpha": 0}, "alpha"), ({"density": 0.0}, "density"), ({"density": 1.5}, "density"),
    ({"density": "automatic"}, "density='automatic' .* not a valid number or 'auto'"),
    ({"gamma": -0.1}, "gamma must be a number >= 0"), ({"gamma": "inf"}, "gamma must be a number >= 0"),
    ({"window": -1}, "window must be 0"), ({"window": "wide"}, "window='wide' .* not a valid int"),
    ({"prune_steps": 0}, "prune_steps must be at least 1"), ({"finetune_epochs": -1}, "finetune_epochs"),
    ({"layer_alpha": "conv2:8"}, "'conv2:8' is not NAME=ALPHA"), ({"layer_alpha": "conv2="}, "is not NAME=ALPHA"),
    ({"layer_alpha": "conv2=x"}, "alpha 'x' of layer 'conv2' is not an integer"),
    ({"layer_alpha": "fc=2,fc=4"}, "names layer 'fc' twice"),
    ({"layer_alpha": "fc=0"}, "alpha 0 of layer 'fc' must be"),
    ({"subword": "maybe"}, "subword"),
    # the section height is the array's column count now: the option is gone, a bad array is refused
    ({"section_height": 4}, "has no option 'section_height'"), ({"array": "4x0"}, "zero dimension"),
    ({"array": "4by4"}, "not of the form RxC"), ({"array": ArrayConfig(4, 4), "sections": 2}, "no option"),
])
def test_bad_options(opts, needle):
    with pytest.raises(SparsynError, match=needle) as err:
        PACKCNN(**opts)
    assert "\n" not in str(err.value)


def test_options_parse():
    s = PACKCNN(layer_alpha=" conv2 = 8 , fc=1", density="AUTO", window="256", gamma="1.75")
    assert s.opts["layer_alpha"] == {"conv2": 8, "fc": 1} and s.opts["density"] == "auto"
    assert s.opts["window"] == 256 and s.opts["gamma"] == 1.75
    assert PACKCNN(layer_alpha={"fc": 2}).opts["layer_alpha"] == {"fc": 2}
    assert PACKCNN(layer_alpha="").opts["layer_alpha"] == {}
    assert (s.alpha_of("conv2"), s.alpha_of("fc"), s.alpha_of("other")) == (8, 1, 4)
    # density=auto: the original's final prune rate 0.8 * (1 - 1/alpha) per layer; a number for every layer
    assert (s.density_of("conv2"), s.density_of("fc"), s.density_of("other")) == pytest.approx((0.3, 1.0, 0.4))
    assert PACKCNN(density=0.25, layer_alpha="fc=1").density_of("fc") == 0.25
    assert PACKCNN().opts["prune_steps"] == 10 and PACKCNN().opts["density"] == "auto"


def test_alpha_larger_than_rows_and_wrong_array():
    rng = np.random.default_rng(2)
    layer = random_quant_layer(rng, "linear", 20, 1, 1, 3, density=0.3, name="tiny")
    with pytest.raises(SparsynError, match="tiny cannot be packed.*alpha=4 exceeds the 3 rows"):
        PACKCNN(alpha=4).pack(layer)
    layer = random_quant_layer(rng, "linear", 20, 1, 1, 8, density=0.3, name="l8")
    scheme = PACKCNN(array=ArrayConfig(4, 4), alpha=4)
    packed = scheme.pack(layer)
    # the packed layer belongs to its array: another one is refused in one line, saying to re-compress
    with pytest.raises(SparsynError, match=r"packed for 4x4, not 4x8; re-run 'sparsyn compress --array 4x8'"):
        check_array(packed, ArrayConfig(4, 8))
    # the grouped form (4-row sections) cannot be scheduled on 8 columns either
    grouped = pack_matrix("packcnn", layer.weight, scheme.choose_groups(np.abs(layer.weight), "l8", lossless=True), 8)
    with pytest.raises(SparsynError, match="4 output channels but the array has 8 columns"):
        tile_program(grouped, layer, ArrayConfig(4, 8))
    # packed for 4x8 instead: one section of 8 channels
    wide = PACKCNN(array=ArrayConfig(4, 8), alpha=4).pack(layer)
    assert wide.meta["sections"] == 1 and packed.meta["sections"] == 2
    assert np.array_equal(PACKCNN.decode(wide), layer.weight)


def _with_rom(packed, name, words=None, kind=None):
    rom = packed.roms[name]
    return PackedLayer(packed.scheme, packed.meta, {**packed.roms, name: Rom(
        rom.width, list(rom.words if words is None else words), rom.kind if kind is None else kind)})


def test_corrupt_rom_detected():
    rng = np.random.default_rng(3)
    layer = random_quant_layer(rng, "linear", 30, 1, 1, 8, density=0.3)
    packed = PACKCNN().pack(layer)
    lay = array_layouts(packed.meta, PACKCNN.entry_layout(packed))["lanes"]
    # a lane descriptor pointing outside the layer (channel 31 of 30)
    bad = lay.const([{"valid": 1, "channel": 31, "dy": 0, "dx": 0}] * 4).as_value().value
    with pytest.raises(SparsynError, match="points outside the layer"):
        PACKCNN.decode(_with_rom(packed, "lanes", [bad] + packed.roms["lanes"].words[1:]))
    # a nonzero weight on a lane that reads no input
    with pytest.raises(SparsynError, match="reads no input"):
        PACKCNN.decode(_with_rom(packed, "lanes", [0] + packed.roms["lanes"].words[1:]))
    # a weight ROM of the wrong depth, an index ROM listed as weights
    with pytest.raises(SparsynError, match="ROM 'weights' .* expects"):
        PACKCNN.decode(_with_rom(packed, "weights", packed.roms["weights"].words[:-1]))
    with pytest.raises(SparsynError, match="ROM 'lanes' is weights.*expects index"):
        PACKCNN.decode(_with_rom(packed, "lanes", kind="weights"))
    # the grouped form keeps its own checks: lane table vs permutation, ROM sizes
    grouping = PACKCNN().choose_groups(np.abs(layer.weight), "fc", lossless=True)
    grouped = pack_matrix("packcnn", layer.weight, grouping, 8)
    assert np.array_equal(decode_packed(grouped), layer.weight)
    grouped.roms["lanes"].words[0] += 1
    with pytest.raises(SparsynError, match="permutation"):
        decode_packed(grouped)
    grouped = pack_matrix("packcnn", layer.weight, grouping, 8)
    grouped.roms["entries"].words.pop()
    with pytest.raises(SparsynError, match="ROM sizes"):
        decode_packed(grouped)


# ---- the original's flow: schedule, joint pruning, gamma, windows, per-layer alpha --------------------------
def test_cubic_schedule_values():
    from sparsyn.sw.prune import cubic_schedule
    from sparsyn.sw.schemes.packcnn import auto_density
    # 1 - (1 - i/10)**3, i = 1..10: fast at first, exactly the final pruning at the last step
    assert cubic_schedule(10) == pytest.approx([0.271, 0.488, 0.657, 0.784, 0.875, 0.936, 0.973, 0.992, 0.999, 1.0])
    assert cubic_schedule(3) == pytest.approx([19 / 27, 26 / 27, 1.0]) and cubic_schedule(1) == [1.0]
    with pytest.raises(SparsynError, match="at least one step"):
        cubic_schedule(0)
    assert [auto_density(a) for a in (1, 2, 4, 8, 16)] == pytest.approx([1.0, 0.6, 0.4, 0.3, 0.25])


def _tiny_linear(weight):
    """A bias-free Linear(K -> N) behind a Flatten, with random data of the right shape (epochs=0 runs only
    evaluate it)."""
    import torch
    from sparsyn.sw.data import Dataset
    n, k = weight.shape
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(k, n, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, k, 1, 1, generator=g), torch.randint(0, n, (8,), generator=g)
    return model, Dataset(x, y, x, y, classes=n)


def test_conflict_pruned_weight_returns_in_a_later_step():
    """4 rows x 3 columns, alpha 2, gamma 0.25 (a group may lose floor(0.25 * 4) = 1 weight), 3 steps to
    density 5/12, no retraining. Step 1 prunes only the 5 zeros: c0 = [9 9 0 0] can merge only with
    c1 = [5 0 0 0] (c2 = [1 1 7 7] would lose 2), so c1's 5 is conflict-pruned (masked, value kept
    aside). Step 2 prunes 7: the two 1s go (the mask is rebuilt from magnitudes *including* the aside 5),
    now c0 merges with c2 = [0 0 7 7] (no conflict, no row left empty) and c1's 5 is back."""
    w = np.array([[9, 5, 1], [9, 0, 1], [0, 0, 7], [0, 0, 7]], dtype=float)
    model, data = _tiny_linear(w)
    s = PACKCNN(alpha=2, gamma=0.25, density=5 / 12, prune_steps=3, finetune_epochs=0, dense_first=False)
    s.progress = False
    lines = []
    s.prepare(model, data, log=lines.append)
    steps = [r["layers"]["1"] for r in s.history["steps"]]
    assert [r["conflict_pruned"] for r in steps] == [1, 0, 0]
    assert [r["returned"] for r in steps] == [0, 1, 0]
    assert [r["nonzero"] for r in steps] == [6, 5, 5]
    assert s.groupings["1"].sections[0] == [(0, 2), (1,)]
    final = model[1].weight.detach().numpy()
    assert final[0, 1] == 5 and np.array_equal(final, [[9, 5, 0], [9, 0, 0], [0, 0, 7], [0, 0, 7]])
    assert len(s.history["accuracy"]) == 3 and sum("+1 back" in line for line in lines) == 1
    # stopped after step 1's pruning (one step to density 7/12): the 5 is conflict-pruned out of the model
    model, data = _tiny_linear(w)
    s = PACKCNN(alpha=2, gamma=0.25, density=7 / 12, prune_steps=1, finetune_epochs=0, dense_first=False)
    s.progress = False
    s.prepare(model, data, log=lambda *a: None)
    assert s.groupings["1"].sections[0] == [(0, 1), (2,)]
    assert np.array_equal(model[1].weight.detach().numpy(), [[9, 0, 1], [9, 0, 1], [0, 0, 7], [0, 0, 7]])


def test_gamma_caps_pruned_weights_not_conflicting_rows():
    """rows 4, alpha 3, gamma 0.25 -> a group may lose 1 weight. c0 = [1 0 0 0] merges with c2 = [1 0 1 1]
    (loses 1, leaves 1 row empty); adding c1 = [1 1 0 0] would lose 2 weights in one conflicting row,
    so it stays alone (a cap on conflicting rows would have taken it)."""
    sup = np.array([[1, 1, 1], [0, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=float)
    assert PACKCNN(alpha=3, gamma=0.25).choose_groups(sup, "x").sections[0] == [(0, 2), (1,)]
    assert PACKCNN(alpha=3, gamma=0.5).choose_groups(sup, "x").sections[0] == [(0, 1, 2)]
    rng = np.random.default_rng(7)
    w = sparse(rng, 16, 80, 0.3)
    for gamma in (0.0, 0.25, 0.5, 1.75):
        g = PACKCNN(alpha=8, gamma=gamma).choose_groups(np.abs(w), "x")
        lost = [int(np.clip((w[:, list(grp)] != 0).sum(axis=1) - 1, 0, None).sum()) for grp in g.sections[0]]
        assert max(lost) <= int(gamma * 16)
        assert conflict_prune(w, g)[1]["pruned"] == sum(lost)
    assert max(lost) > 16          # 1.75 (the original's code default) lets a group lose more than N weights


def test_windows_group_only_inside_windows():
    rng = np.random.default_rng(3)
    w = sparse(rng, 8, 30, 0.2)
    spans = lambda g: {c // 8 for c in g}   # noqa: E731
    whole = PACKCNN(alpha=4, gamma=0.5).choose_groups(np.abs(w), "x").sections[0]
    assert any(len(spans(g)) > 1 for g in whole)                  # without windows groups cross them
    windowed = PACKCNN(alpha=4, gamma=0.5, window=8).choose_groups(np.abs(w), "x").sections[0]
    assert all(len(spans(g)) == 1 for g in windowed)
    assert sorted(c for g in windowed for c in g) == sorted(np.nonzero(w.any(axis=0))[0].tolist())
    assert PACKCNN(alpha=4, gamma=0.5, window=64).choose_groups(np.abs(w), "x").sections[0] == whole


def _digits_compress(tmp_path, **opts):
    from sparsyn.sw.compress import compress
    out = tmp_path / "pc"
    lines = []
    report = compress("default", "packcnn", {"prune_steps": 2, "finetune_epochs": 1, **opts}, out,
                      progress=False, log=lines.append)
    return out, report, lines


def test_compress_default_model_tiny(tmp_path):
    """The default digits CNN through the joint schedule (2 steps, 1 epoch each): per-step history on the
    cubic schedule, groupings obeyed by the integers, a sealed manifest whose golden model reproduces
    its reference vectors."""
    from sparsyn.sw.manifest import check_reference, load_manifest
    out, report, lines = _digits_compress(tmp_path)
    checked = check_reference(out)
    model, packed, doc = load_manifest(out)
    assert checked["images"] > 0 and checked["layers"] == len(model.layers)
    assert doc["options"]["density"] == "auto" and doc["options"]["layer_alpha"] == {}
    assert [l["scheme"] for l in report["layers"]] == ["dense", "packcnn", "packcnn"]
    assert sum(line.startswith("  packcnn step") for line in lines) == 2
    assert report["accuracy"]["compressed_float"] > 50
    for layer in model.compute_layers[1:]:
        assert packed[layer.name].meta["array"]["lanes"] == 4
        d = np.count_nonzero(layer.weight) / layer.weight.size
        assert d <= 0.4 + 1e-9      # density=auto at alpha 4: 40 % kept by magnitude, then conflict pruning


def test_per_layer_alpha_and_alpha_one_pack_and_run(tmp_path):
    """layer_alpha conv2=8, fc=1: conv2 keeps 0.3 of its weights (auto) in groups of 8; fc is neither
    pruned nor combined (one column per group, one lane); the model runs on the shared array in
    Amaranth's simulator bit-exactly against the golden model."""
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.hw.model_engine import ModelEngine, plan_model
    from sparsyn.sw.golden import run_golden
    from sparsyn.sw.manifest import check_reference, load_manifest, load_reference
    out, report, lines = _digits_compress(tmp_path, layer_alpha="conv2=8,fc=1")
    assert "conv2 (alpha 8, density 0.300), fc (alpha 1, density 1.000)" in lines[0]
    check_reference(out)
    model, packed, doc = load_manifest(out)
    rows = {r["layer"]: r for r in report["layers"]}
    assert packed["conv2"].meta["alpha"] == 8 and packed["fc"].meta["alpha"] == 1
    assert packed["fc"].meta["array"]["lanes"] == 1
    fc = model.compute_layers[-1]
    # one column per group (the grouping is shared by the 3 row sections of 4 output channels)
    assert packed["fc"].meta["sections"] == 3 and rows["fc"]["groups"] == 3 * np.count_nonzero(fc.weight.any(axis=0))
    assert rows["fc"]["packed_slots"] == fc.n * fc.k
    assert np.count_nonzero(fc.weight) > 0.95 * fc.weight.size                 # not pruned
    assert rows["conv2"]["nonzero"] <= 0.3 * 16 * 72 + 1
    engine = ModelEngine(plan_model(model, packed, ArrayConfig(4, 4)))
    x, _ = load_reference(out, doc)
    outs, stats = simulate_engine(engine, [x[0].ravel()])
    gold = run_golden(model, __import__("torch").as_tensor(x[:1], dtype=__import__("torch").int64))[-1].numpy()
    assert np.array_equal(outs[0].reshape(gold.shape[1:]), gold[0])
    assert stats[0]["cycles"] == stats[0]["measured"] == engine.cycle_model["total"]


def test_layer_alpha_names_checked_at_prepare(tmp_path):
    from sparsyn.sw.compress import compress
    for opt, needle in [("conv9=2", "names layer 'conv9', which is not a compute layer .* conv1, conv2, fc"),
                        ("conv1=2", "names layer 'conv1', which packcnn keeps dense int8 .* dense_first=0"),
                        ("fc=16", "fc cannot be packed: alpha=16 exceeds the 10 rows .* layer_alpha=fc=10")]:
        with pytest.raises(SparsynError, match=needle) as err:
            compress("default", "packcnn", {"layer_alpha": opt, "prune_steps": 1, "finetune_epochs": 0},
                     tmp_path / "x", progress=False, log=lambda *a, **k: None)
        assert "\n" not in str(err.value)
