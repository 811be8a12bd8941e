"""``sparsyn bench --scheme permdiag``: its figures tied to the ROMs they report on, the unstructured anchor
model on hand-checked matrices, and the cycles table's RTL rows (small layer) equal to the exact model."""
import numpy as np
import pytest

from sparsyn.sw import bench_permdiag as bench
from sparsyn.sw.perm_diag import structure_offsets
from sparsyn.sw.schemes.permdiag import PermDiagScheme, offset_bits


def test_registered():
    from sparsyn.sw.cmd_bench import SCHEME_BENCHES
    assert SCHEME_BENCHES["permdiag"] == ("sparsyn.sw.bench_permdiag", "run_permdiag_bench")


def test_size_row_is_the_roms():
    for p in (2, 4, 8, 16):
        layer = bench.wide_layer(p, n=64, k=96)
        assert structure_offsets(layer.weight, p)[1] is None
        packed = PermDiagScheme(p=p, pes=4).pack(layer)
        row = bench.size_row("m", layer, packed)
        roms = packed.roms
        assert (row["weight_bits"], row["offset_bits"]) == (roms["weights"].bits, roms["offsets"].bits)
        assert row["constant_bits"] == roms["bias"].bits + roms["requant"].bits
        assert row["stored_bits"] == packed.rom_bits == row["weight_bits"] + row["offset_bits"] + row["constant_bits"]
        # no padding, 4 lanes dividing the block rows: weights are exactly N*K/p int8, plus one k per block
        assert row["weight_bits"] == 8 * 64 * 96 // p and row["offset_bits"] == (64 // p) * (96 // p) * offset_bits(p)
        assert row["structure_rate_vs_int8"] == pytest.approx(8 * 64 * 96 / (8 * 64 * 96 / p + row["offset_bits"]))
        assert row["rate_vs_fp32"] == pytest.approx(32 * 64 * 96 / packed.rom_bits)


def test_unstructured_model_by_hand():
    """Rows interleaved over the PEs, CSC entries, per-column sync; a relative-index gap too large for the index
    costs padding entries."""
    w = np.zeros((4, 3), dtype=np.int64)
    w[[0, 1, 2], 0] = 5          # PE0 (rows 0, 2): 2 entries; PE1 (row 1): 1
    w[3, 1] = 7                  # PE1 (its local row 1): 1 entry
    m = bench.unstructured_model(w, lanes=2, index_bits=4)
    assert m["column_cycles"].tolist() == [2, 1, 0]
    assert (m["entries"], m["padding"], m["nonzero"], m["weight_bits"]) == (4, 0, 4, 32)
    # pointers: (K+1) per PE of ceil(log2(max entries per PE + 1)) bits; PE0 and PE1 hold 2 entries each
    assert m["index_bits"] == 4 * 4 + 4 * 2 * 2
    v = np.zeros((8, 1), dtype=np.int64)
    v[5, 0] = 1                  # one PE, gap of 5 rows with a 1-bit index (step 2): 2 padding entries
    m = bench.unstructured_model(v, lanes=1, index_bits=1)
    assert (m["entries"], m["padding"], m["column_cycles"].tolist()) == (3, 2, [3])


def test_anchor_rows():
    layer = bench.wide_layer(8, n=32, k=64)
    rows, curves = bench.anchor_rows(layer, lanes_list=(2,), p=8)
    pd, un = rows
    packed = PermDiagScheme(p=8, pes=2).pack(layer)
    assert pd["cycles_per_nonzero_input"] == packed.meta["slots"] == 2 and pd["balance"] == 1.0
    assert pd["index_bits"] == packed.roms["offsets"].bits
    assert un["nonzero"] == pd["nonzero"] == int(np.count_nonzero(layer.weight))
    assert un["cycles_per_nonzero_input"] == pytest.approx(curves[0]["column_cycles"].mean())
    assert un["cycles_per_nonzero_input"] >= un["nonzero"] / 64 / 2          # never better than perfect balance


def test_cycle_rows_rtl(tmp_path):
    """The cycles table on a small layer in Icarus: every row measured in RTL equals the exact per-image model,
    the cycles grow by T per nonzero input, and the utilization counts nonzero-weight x nonzero-input MACs."""
    from sparsyn.sim.tools import have_simulator
    if have_simulator("icarus"):
        pytest.skip(have_simulator("icarus"))
    layer = bench.wide_layer(8, n=32, k=48)
    densities = (0.0, 0.5, 1.0)
    images = bench.density_images(np.random.default_rng(0), layer, densities)
    assert [int(np.count_nonzero(x)) for x in images][::2] == [0, 48]
    rows, dense = bench.cycle_rows(layer, images, densities, "icarus", pes_list=(2,), test_dir=tmp_path)
    assert all(r["cycles_exact"] and r["bit_exact"] for r in rows)
    slots = PermDiagScheme(p=8, pes=2).pack(layer).meta["slots"]
    assert rows[2]["cycles_rtl"] - rows[0]["cycles_rtl"] == slots * 48
    assert rows[2]["cycles_per_nonzero"] == slots
    per_col = np.count_nonzero(layer.weight, axis=0)
    assert rows[2]["utilization"] == pytest.approx(per_col.sum() / (2 * rows[2]["cycles_rtl"]))
    assert dense["cycles_model"] > rows[2]["cycles_rtl"] and "cycles_rtl" not in dense
