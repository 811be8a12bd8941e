"""``sparsyn bench --scheme pattern``: its tables on tiny inputs (a narrow digits CNN, small synthetic layers),
every figure tied to the ROMs it reports on, cycles measured in Amaranth's simulation equal to the model."""
import numpy as np
import pytest
import torch

from sparsyn.sw import bench_pattern as bench
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.schemes.pattern import PatternScheme

A44 = ArrayConfig(4, 4)


@pytest.fixture(scope="module")
def tiny():
    """A narrow digits CNN (4 / 8 channels), briefly trained, compressed with pattern (defaults but one short
    pruning step) and with dense int8."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import DigitsCNN
    from sparsyn.sw.train import train
    torch.manual_seed(0)
    model, data = DigitsCNN(4, 8), digits()
    train(model, data, epochs=3, lr=5e-3, progress=False)
    quiet = {"progress": False, "log": lambda *a, **k: None}
    pat = compress_model(model, PatternScheme(array=A44, prune_steps=1, finetune_epochs=1), data, **quiet)
    dense = compress_model(model, get_scheme("dense")(array=A44), data, **quiet)
    return pat, dense


def lanes_bits(roms) -> int:
    """The row-descriptor ROM's bits (0 when the rows are implicit: no ``lanes`` ROM is stored)."""
    return roms["lanes"].bits if "lanes" in roms else 0


def test_registered():
    from sparsyn.sw.cmd_bench import SCHEME_BENCHES
    assert SCHEME_BENCHES["pattern"] == ("sparsyn.sw.bench_pattern", "run_pattern_bench")


def test_size_rows_are_the_roms(tiny):
    (q, p, r), _ = tiny
    rows = {row["layer"]: row for row in bench.size_rows(q, p, r)}
    assert set(rows) == {"conv1", "conv2", "fc", "MODEL"}
    for name in ("conv1", "conv2", "fc"):
        row, roms = rows[name], p[name].roms
        assert row["scheme"] == "pattern"
        assert (row["weight_bits"], row["ids_bits"], row["lanes_bits"], row["table_bits"]) == \
            (roms["weights"].bits, roms["ids"].bits, lanes_bits(roms), roms["patterns"].bits)
        assert row["other_bits"] == roms["passes"].bits + roms["bias"].bits + roms["requant"].bits
        assert row["other_roms"] == ["bias", "passes", "requant"]
        parts = row["weight_bits"] + row["ids_bits"] + row["lanes_bits"] + row["table_bits"] + row["other_bits"]
        assert row["stored_bits"] == parts == p[name].rom_bits
        assert row["ids_pct_of_weights"] == pytest.approx(100 * roms["ids"].bits / roms["weights"].bits)
        assert row["index_pct_of_weights"] == \
            pytest.approx(100 * (roms["ids"].bits + lanes_bits(roms)) / roms["weights"].bits)
        layer = q.layer(name)
        assert row["rate_vs_int8"] == pytest.approx(8 * layer.n * layer.k / p[name].rom_bits)
        assert row["weights_rate_vs_int8"] == pytest.approx(8 * layer.n * layer.k / roms["weights"].bits)
    # defaults: 3x3 keep 4 of 9 with P = 8 (3-bit ids); FC 2:4 with 6 patterns (3-bit ids)
    assert (rows["conv2"]["keep"], rows["conv2"]["patterns"], rows["conv2"]["mode"]) == (4, 8, "kernel")
    assert rows["conv2"]["spm_analytic_pct"] == pytest.approx(100 * 3 / 32)
    assert (rows["fc"]["keep"], rows["fc"]["group"], rows["fc"]["mode"]) == (2, 4, "vector")
    assert rows["fc"]["spm_analytic_pct"] == pytest.approx(100 * 3 / 16)
    # conv2: 8 outputs = 2 full sections, every kernel stored: the ids ROM is exactly one 3-bit id per kernel
    assert rows["conv2"]["ids_bits"] == 3 * rows["conv2"]["kernels"]
    assert rows["conv2"]["ids_pct_of_weights"] == pytest.approx(rows["conv2"]["spm_analytic_pct"])
    total = rows["MODEL"]
    assert total["stored_bits"] == r["stored_bits"] == sum(pk.rom_bits for pk in p.values())
    assert total["ids_bits"] == sum(pk.roms["ids"].bits for pk in p.values())
    assert total["rate_vs_fp32"] == pytest.approx(r["rate_vs_fp32"])
    assert total["weights_rate_vs_int8"] == pytest.approx(r["weights_rate_vs_int8"])
    spm = bench.spm_overhead_rows(list(rows.values()))
    assert spm[0]["overhead_pct"] == pytest.approx(100 * 3 / 32)
    assert spm[0]["rate_vs_fp32"] == pytest.approx(288 / 35)
    paper = next(s for s in spm if s["kind"] == "paper")
    assert 96 < paper["weight_bits_per_id"] < 98                 # 3 bits / 3.1 %: not n=4 int8 (32 bits)
    assert all(s["overhead_pct"] == pytest.approx(100 * 3 / 96) for s in spm if s["case"].startswith("candidate")
               and s["id_bits"] == 3)
    measured = next(s for s in spm if s["case"].startswith("measured: digits conv2 ids"))
    assert measured["overhead_pct"] == rows["conv2"]["ids_pct_of_weights"]


def test_cycle_rows_rtl_equals_model(tiny):
    from sparsyn.hw.window_feeder import window_steps
    (q, p, _), (dq, dp, _) = tiny
    rows = {row["layer"]: row for row in bench.cycle_rows(q, p, dq, dp, A44, measure=True)}
    assert set(rows) == {"conv1", "conv2", "fc"}
    for name, row in rows.items():
        assert row["scheme"] == "pattern" and row["array"] == "4x4"
        assert row["bit_exact"] and row["cycles_exact"] and row["cycles_rtl"] == row["cycles_model"]
        assert row["dense_feed"] == "lanes" and row["dense_steps"] == q.layer(name).pixels
    for name in ("conv1", "conv2"):
        assert rows[name]["feed"] == "window" and rows[name]["lanes"] == 9
        assert rows[name]["steps"] == window_steps(q.layer(name)) > rows[name]["pixels"]
    assert rows["fc"]["feed"] == "channels" and rows["fc"]["steps"] == 1 and rows["fc"]["lanes"] == 4


def test_nm_rows(tiny):
    (q, p, _), _ = tiny
    rows = bench.nm_rows(q.layer("fc"), p["fc"], shape=(8, 64))
    by = {(r["format"], r.get("matrix")): r for r in rows}
    nvidia = by[("NVIDIA 2:4 (analytic)", None)]
    assert nvidia["bits_per_nonzero"] == 2 and nvidia["bits_per_weight"] == 1
    spm = next(r for r in rows if r["format"].startswith("SPM 2:4, P=6"))
    assert spm["bits_per_weight"] == 0.75 and spm["bits_per_nonzero"] == 1.5
    fc = by[("measured: ids ROM", "digits fc 10x32")]
    assert fc["metadata_bits"] == p["fc"].roms["ids"].bits and fc["weight_bits"] == p["fc"].roms["weights"].bits
    assert fc["bits_per_nonzero"] == fc["metadata_bits"] / fc["kept_slots"]
    assert fc["kept_slots"] == 10 * 32 // 2          # every 4-group keeps 2 (no zero id by default)
    assert by[("measured: ids + lanes ROMs", "digits fc 10x32")]["metadata_bits"] == \
        p["fc"].roms["ids"].bits + lanes_bits(p["fc"].roms)
    # 8 outputs fill the 4 columns: one 3-bit id per group of 4, exactly the analytic figure
    syn = by[("measured: ids ROM", "synthetic 8x64")]
    assert syn["metadata_bits"] == 3 * 8 * 16 and syn["bits_per_weight"] == 0.75 and syn["bits_per_nonzero"] == 1.5
    assert syn["nvidia_metadata_bits"] == 2 * syn["kept_slots"] and 0 < syn["kept_energy"] < 1


def test_synthetic_layer_packs_its_table():
    rng = np.random.default_rng(1)
    w = rng.laplace(size=(8, 8 * 9))
    s = bench.synthetic_pattern_layer(w, "conv", 3, 5, rounds=2, name="syn")
    table, packed = s["table"], s["packed"]
    assert table.shape == (5, 9) and (table.sum(axis=1) == 3).all()
    assert PatternScheme.table(packed) == [tuple(np.flatnonzero(t)) for t in table]
    support = PatternScheme.decode(packed).reshape(-1, 9) != 0
    assert np.array_equal(PatternScheme.decode(packed), s["layer"].weight)
    assert all(any((~row | t).all() for t in table) for row in support)   # every kernel inside a pattern
    assert 0 < s["kept_energy"] < 1


def test_vgg_rows_tie_to_the_roms():
    rows, tables = bench.vgg_rows((8, 8), ns=(2, 4), p=8, rounds=2)
    assert [r["keep"] for r in rows] == [2, 4] and set(tables) == {2, 4}
    for r in rows:
        n = r["keep"]
        assert tables[n].shape == (8, 9) and (tables[n].sum(axis=1) == n).all()
        assert r["kernels"] == 64 and r["index_bits"] == 3
        assert r["ids_bits"] == 3 * 64 and r["weight_bits"] == 8 * n * 64
        assert r["stored_bits"] == sum(r[k] for k in ("weight_bits", "ids_bits", "lanes_bits", "table_bits",
                                                      "other_bits"))
        assert r["ids_pct_of_weights"] == pytest.approx(r["spm_analytic_pct"]) == pytest.approx(100 * 3 / (8 * n))
        assert r["rate_vs_int8"] == pytest.approx(8 * 8 * 72 / r["stored_bits"])
    assert rows[0]["kept_energy"] < rows[1]["kept_energy"] < 1


def test_feeder_memories_and_pe_components(tiny):
    (q, p, _), _ = tiny
    conv2 = q.layer("conv2")
    rows = bench.feeder_memory_rows(conv2, p["conv2"], A44, synth=False, formula_layers=[("same", conv2)])
    window, im2col, fwindow, fim2col = rows
    cin, h, w = conv2.in_shape
    assert (window["memories"], window["words_each"]) == (4 * 3, cin * -(-h // 3) * w)
    assert (im2col["memories"], im2col["words_each"]) == (4 * 9, cin * h * w)
    for counted, formula in ((window, fwindow), (im2col, fim2col)):     # the docstrings' formulas hold
        assert (counted["memories"], counted["words_each"], counted["bits"]) == \
            (formula["memories"], formula["words_each"], formula["bits"])
    from itertools import combinations
    tables = {n: np.zeros((8, 9), dtype=bool) for n in (4, 2)}
    for n, t in tables.items():
        for i, pos in enumerate(list(combinations(range(9), n))[:8]):
            t[i, list(pos)] = True
    comps = bench.pe_components(tables)
    assert {name: mults for name, (_, mults) in comps.items()} == {
        "pattern PE 3x3 n=4 P=8": 4, "pattern PE 3x3 n=2 P=8": 2, "pattern PE 3x3 n=4 P=8 mults=1 (pipelined)": 1,
        "datapath: pattern n=4 P=8": 4,
        "int8 MAC PE (1 lane)": 1, "datapath: int8 multiplier": 1}
    from sparsyn.sw.bench_ternary import synth_cells
    cells = synth_cells(comps["datapath: pattern n=4 P=8"][0](), "ice40", dsp=True)
    assert cells["mul_cells"] == 4 and cells["dsps"] == 4      # n multipliers, whatever the 9 lanes
    cells = synth_cells(comps["pattern PE 3x3 n=4 P=8 mults=1 (pipelined)"][0](), "ice40", dsp=True)
    assert cells["mul_cells"] == 1 and cells["dsps"] == 1      # time-multiplexed: one multiplier
