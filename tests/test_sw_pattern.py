"""The ``pattern`` scheme's SPM ROM format and its refusals (pure software; the RTL is in test_sim_pattern /
test_hw_pattern)."""
import numpy as np
import pytest

from sparsyn.sw.array_format import bits_for_range
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.schemes import Rom, get_scheme
from sparsyn.sw.schemes.pattern import PatternScheme, derive_table, pattern_rom
from sparsyn.sw.testing import random_pattern_layer, random_quant_layer


def packed_layer(kind="conv", kernel=3, n=4, p=8, m=4, zero=0.2, seed=0, array="4x4"):
    rng = np.random.default_rng(seed)
    args = ("conv", 6, 6, 6, 9, kernel, 1, kernel // 2) if kind == "conv" else ("linear", 30, 1, 1, 7)
    layer, table, ids = random_pattern_layer(rng, *args, n=n, patterns=p, m=m, zero_fraction=zero)
    s = PatternScheme(array=array, n=n, patterns=p, nm_n=n, nm_m=m, nm_patterns=p, connectivity=0.1 if zero else 0)
    s.tables[layer.name], s.zero_id[layer.name] = table, zero > 0
    return layer, table, ids, s.pack(layer)


@pytest.mark.parametrize("kind,kernel,n,p,m", [("conv", 3, 4, 8, 4), ("conv", 5, 3, 7, 4), ("conv", 1, 2, 6, 4),
                                               ("linear", 1, 2, 6, 4), ("linear", 1, 3, 9, 5)])
def test_pack_decode_round_trip_and_bits(kind, kernel, n, p, m):
    layer, table, ids, packed = packed_layer(kind, kernel, n, p, m)
    assert np.array_equal(PatternScheme.decode(packed), layer.weight)
    meta = packed.meta
    g = kernel * kernel if kernel > 1 else m
    assert meta["group"] == g and meta["keep"] == n and meta["patterns"] == p
    assert meta["feed"] == ("window" if kernel > 1 else "channels")
    # the ROMs by kind: n int8 weights per PE entry, the ids (index) in their own ROM, the table
    idb = bits_for_range(p + 1)
    rows = meta["passes"] * 4
    assert (packed.roms["weights"].width, packed.roms["weights"].depth) == (4 * n * 8, max(2, rows))
    assert packed.roms["ids"].kind == "index" and packed.roms["ids"].width == 4 * idb == 4 * meta["index_bits"]
    assert packed.roms["patterns"].kind == "table" and packed.roms["patterns"].bits == max(2, p) * n * bits_for_range(g)
    kinds = packed.bits_by_kind()
    zero_rows = sum(1 for s in range(-(-layer.n // 4)) for j in range(ids.shape[1])
                    if (ids[s * 4:(s + 1) * 4, j] < 0).all())
    # no row skipped: the rows are implicit (row t reads channel / group t) and no lanes ROM is stored
    assert meta["implicit_rows"] == (zero_rows == 0) == ("lanes" not in packed.roms)
    lanes = packed.roms["lanes"].bits if "lanes" in packed.roms else 0
    assert kinds["index"] == packed.roms["ids"].bits + lanes
    assert kinds["table"] == packed.roms["patterns"].bits + packed.roms["passes"].bits
    assert sum(kinds.values()) == packed.rom_bits
    # a section row whose kernels are all zero costs no slot
    assert meta["stats"]["slots"] == meta["stats"]["dense_slots"] - zero_rows


def test_table_rom_is_the_decode_table():
    """Swap two pattern-table words: the decoded weights move with them (the golden model reads the file)."""
    layer, table, _, packed = packed_layer(zero=0.0)
    words = packed.roms["patterns"].words
    swapped = [words[1], words[0]] + words[2:]
    packed.roms["patterns"] = Rom(packed.roms["patterns"].width, swapped, "table")
    w = PatternScheme.decode(packed)
    assert not np.array_equal(w, layer.weight)
    assert np.count_nonzero(w) == np.count_nonzero(layer.weight)


def test_corrupt_roms_refused():
    layer, table, _, packed = packed_layer(zero=0.0, p=5)
    meta = packed.meta
    # an id past the table (no zero id reserved)
    ids = packed.roms["ids"]
    bad = Rom(ids.width, [ids.words[0] | ((1 << meta["index_bits"]) - 1)] + ids.words[1:], "index")
    with pytest.raises(SparsynError, match="pattern id 7, past the layer's 5 patterns"):
        PatternScheme.decode(type(packed)(packed.scheme, meta, {**packed.roms, "ids": bad}))
    # a table word with repeated positions
    t = packed.roms["patterns"]
    with pytest.raises(SparsynError, match="pattern table word 0 .* is not 4 ascending positions"):
        PatternScheme.decode(type(packed)(packed.scheme, meta, {**packed.roms, "patterns": Rom(t.width, [0] + t.words[1:], "table")}))
    # the table missing
    with pytest.raises(SparsynError, match="pattern table ROM of this layer is missing"):
        PatternScheme.decode(type(packed)(packed.scheme, meta, {k: v for k, v in packed.roms.items() if k != "patterns"}))


@pytest.mark.parametrize("opts,match", [
    ({"n": 0}, r"option n=0 must be in 1\.\.8 for a 3x3 kernel"),
    ({"n": 9}, r"option n=9 must be in 1\.\.8 for a 3x3 kernel"),
    ({"patterns": 0}, r"option patterns=0 must be in 1\.\.64"),
    ({"n": 1, "patterns": 10}, r"option patterns=10 must be in 1\.\.9 .*C\(9,1\) = 9"),
    ({"n": 4, "patterns": 100}, r"option patterns=100 must be in 1\.\.64 .*the PE decodes at most 64"),
    ({"nm_n": 4}, r"option nm_n=4 must be in 1\.\.3 for a channel group of nm_m=4"),
    ({"nm_patterns": 7}, r"option nm_patterns=7 must be in 1\.\.6"),
    ({"vectors": "refuse"}, r"layer fc has no spatial kernel .* vectors=refuse; set vectors=nm"),
    ({"vectors": "sometimes"}, r"vectors must be nm, dense or refuse"),
    ({"connectivity": 1.0}, r"connectivity must be in \[0, 1\)"),
    ({"layer_n": "conv1"}, r"'conv1' is not NAME=N"),
    ({"layer_n": "conv3=2"}, r"layer_n names 'conv3', which is not a conv/linear layer of the model; its layers are: conv1"),
    ({"layer_n": "conv1=9"}, r"option layer_n=conv1=9 must be in 1\.\.8 for a 3x3 kernel"),
    ({"nm_m": 1}, r"nm_m must be in 2\.\.49"), ({"layer_n": "conv1=x"}, r"n 'x' of layer 'conv1' is not an integer"),
])
def test_bad_options_refused_in_one_line(opts, match):
    """Each refusal names the option and its valid range (before any training)."""
    from sparsyn.sw.model_zoo import DigitsCNN
    with pytest.raises(SparsynError, match=match) as err:
        s = PatternScheme(**opts)
        from sparsyn.sw.data import digits
        s._targets(DigitsCNN(), digits())
    assert "\n" not in str(err.value)


def test_kernel_larger_than_the_pe_refused():
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "conv", 1, 9, 9, 2, 8, 1, 0, name="big")
    with pytest.raises(SparsynError, match="a 8x8 kernel of 64 weights is larger than the pattern PE is generated for"):
        PatternScheme().schedule(layer)


def test_unpruned_layer_refused():
    rng = np.random.default_rng(1)
    layer = random_quant_layer(rng, "conv", 2, 5, 5, 3, 3, 1, 1, name="dense_l")
    with pytest.raises(SparsynError, match="dense_l has a group with 9 nonzeros, more than n=4; only layers pruned"):
        PatternScheme().pack(layer)
    layer, table, _, _ = packed_layer(zero=0.0, p=8)
    s = PatternScheme(patterns=8)
    s.tables[layer.name] = table[:3]          # a table that does not cover the kernels
    with pytest.raises(SparsynError, match="which no pattern of the layer keeps"):
        s.pack(layer)


def test_derive_table_needs_no_more_than_p():
    g = np.zeros((4, 9), dtype=np.int64)
    for i in range(4):
        g[i, [i, i + 1, i + 2, 8]] = 1
    assert derive_table(g, 4, 4, "x").shape == (4, 9)
    with pytest.raises(SparsynError, match="needs 4 patterns, more than patterns=3"):
        derive_table(g, 4, 3, "x")


def test_pattern_rom_layout():
    table = np.zeros((3, 9), dtype=bool)
    table[0, [0, 4, 8]] = table[1, [1, 2, 3]] = table[2, [5, 6, 7]] = True
    rom = pattern_rom(table)
    assert rom.width == 3 * 4 and rom.words == [0 | 4 << 4 | 8 << 8, 1 | 2 << 4 | 3 << 8, 5 | 6 << 4 | 7 << 8]
    assert get_scheme("pattern") is PatternScheme


@pytest.mark.parametrize("opt,needle", [("n=9", "option n=9 must be in 1..8 for a 3x3 kernel"),
                                        ("patterns=200", "option patterns=200 must be in 1..64"),
                                        ("nm_n=4", "option nm_n=4 must be in 1..3"),
                                        ("vectors=refuse", "layer fc has no spatial kernel")])
def test_cli_refuses_bad_pattern_options_before_any_work(tmp_path, opt, needle):
    """``sparsyn compress --scheme pattern --opt ...``: one line, exit 2, no output folder, no training."""
    import subprocess
    import sys
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", "compress", "--scheme", "pattern", "--opt", opt,
                        "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert "pattern: step" not in r.stdout and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_vectors_dense_keeps_fc_int8_and_the_rest_runs_end_to_end():
    """vectors=dense: conv layers get patterns, the Linear layer stays dense int8; the packed model decodes to
    the integer model exactly (projection only: no fine-tuning, so the test stays fast)."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    s = PatternScheme(vectors="dense", prune_steps=1, finetune_epochs=0, connectivity=0.2)
    s.progress = False
    q, packed, report = compress_model(default_model(progress=False), s, digits(), progress=False,
                                       log=lambda *a, **k: None)
    assert {name: p.scheme for name, p in packed.items()} == {"conv1": "pattern", "conv2": "pattern", "fc": "dense"}
    for layer in q.layers:
        if layer.kind in ("conv", "linear"):
            assert np.array_equal(get_scheme(packed[layer.name].scheme).decode(packed[layer.name]), layer.weight)
    st = packed["conv2"].meta["stats"]
    assert st["zero_kernels"] >= round(0.2 * st["kernels"]) and packed["conv2"].meta["zero_id"]
    assert report["history"]["accuracy"]["steps"][0]["n"] == {"conv1": 4, "conv2": 4}
