"""packcnn + the shared column-combining machinery (sw/packing.py): grouping validity, conflict pruning,
lossless ROM round trip (the array's memory images and the grouped form), the schedule's effective weights,
the array given as ``array=``, bad inputs."""
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
    ({"alpha": 1}, "alpha"), ({"density": 0.0}, "density"), ({"density": 1.5}, "density"),
    ({"gamma": -0.1}, "gamma"), ({"subword": "maybe"}, "subword"),
    # the section height is the array's column count now: the option is gone, a bad array is refused
    ({"section_height": 4}, "has no option 'section_height'"), ({"array": "4x0"}, "zero dimension"),
    ({"array": "4by4"}, "not of the form RxC"), ({"array": ArrayConfig(4, 4), "sections": 2}, "no option"),
])
def test_bad_options(opts, needle):
    with pytest.raises(SparsynError, match=needle) as err:
        PACKCNN(**opts)
    assert "\n" not in str(err.value)


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
