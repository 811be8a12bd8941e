"""Pattern (PCNN / SPM) RTL in Icarus and Verilator (cocotb), bit-exact against the golden model with exact
cycles: the SPM pattern-decode PE on random patterns, ids and weights (every pattern and the zero id, odd n
and P, 3x3 / 5x5 windows and channel groups), LayerEngines of random pattern layers (5x5, 1x1, stride 2,
padding, Linear N:M, zero kernels), and every conv/FC layer of the default model compressed with ``pattern``."""
import numpy as np
import pytest

from sparsyn.hw.pe import ProcessingElement
from sparsyn.hw.schemes import make_product
from sparsyn.sim.check import compressed_default, run_engine, run_model_layers
from sparsyn.sim.runner import build, run_bench
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer
from sparsyn.sw.schemes.pattern import PatternScheme, entry_word, pattern_rom
from sparsyn.sw.array_format import bits_for_range
from sparsyn.sw.testing import random_input, random_pattern_layer


def random_table(rng, g: int, n: int, p: int) -> np.ndarray:
    table = set()
    while len(table) < p:
        table.add(tuple(sorted(rng.choice(g, size=n, replace=False).tolist())))
    out = np.zeros((p, g), dtype=bool)
    for i, pos in enumerate(sorted(table)):
        out[i, list(pos)] = True
    return out


def pe_packed(table: np.ndarray, zero_id: bool) -> PackedLayer:
    p, g = table.shape
    n = int(table[0].sum())
    meta = {"group": g, "keep": n, "patterns": p, "zero_id": zero_id, "weight_bits": 8,
            "index_bits": bits_for_range(p + int(zero_id))}
    return PackedLayer("pattern", meta, {"patterns": pattern_rom(table)})


@pytest.mark.parametrize("g,n,p,zero_id", [(9, 3, 5, True), (25, 5, 7, False), (5, 3, 10, True)],
                         ids=["3x3_n3_P5_zero", "5x5_n5_P7", "m5_n3_P10_zero"])
def test_pe_random_patterns(simulator, tmp_path, g, n, p, zero_id):
    rng = np.random.default_rng(g * 100 + n)
    table = random_table(rng, g, n, p)
    packed = pe_packed(table, zero_id)
    pe = ProcessingElement(make_product(packed))
    ids = list(range(p + int(zero_id)))
    vectors = []
    for i in range(40 * len(ids)):
        pid = ids[i % len(ids)]                     # every pattern (and the zero id) again and again
        ws = rng.integers(-128, 128, n).tolist() if i >= len(ids) else [(-128, 127)[i % 2]] * n
        entry = entry_word(pid, ws, packed.meta["index_bits"])
        xs = rng.integers(-128, 128, g).tolist() if i >= len(ids) else [-128] * g
        psum = int(rng.integers(-2**30, 2**30))
        vectors.append([entry, xs, psum, list(PatternScheme.entry_coefficients(packed, entry))])
    assert {v[0] & ((1 << packed.meta["index_bits"]) - 1) for v in vectors} == set(ids)
    if zero_id:     # the zero id's weights are ignored: a nonzero weight field must still give 0
        assert PatternScheme.entry_coefficients(packed, entry_word(p, [5] * n, packed.meta["index_bits"])) == (0,) * g
    bld = build(pe, simulator, f"pe_pattern_{g}_{n}_{p}")
    res = run_bench(bld, "sparsyn.sim.benches.bench_pe",
                    {"scheme": "pattern", "meta": packed.meta, "lanes": g, "vectors": vectors}, test_dir=tmp_path)
    assert res["checked"] == len(vectors)


def check_row(row, layer, images):
    assert row["bit_exact"] and row["outputs_checked"] == images * layer.n * layer.pixels
    assert row["cycles_exact"] and row["cycles_all"] == row["cycles_model_all"]
    assert set(row["cycles_all"]) == {row["cycles_model"]}          # every image, every kernel: same cycles
    assert row["utilization"] == pytest.approx(row["utilization_model"]) and 0 < row["utilization"] <= 1


#: name -> (layer args, n, P, m, zero fraction, array, multipliers per PE (0 = n))
LAYERS = {
    "3x3_pad1_n3_P5_zero": (("conv", 5, 7, 6, 6, 3, 1, 1), 3, 5, 4, 0.25, (4, 4), 0),
    "5x5_stride2_pad1_n5_P7": (("conv", 3, 9, 10, 5, 5, 2, 1), 5, 7, 4, 0.0, (2, 3), 0),
    "3x3_stride2_n4_P8": (("conv", 4, 8, 7, 6, 3, 2, 0), 4, 8, 4, 0.1, (3, 4), 0),
    "1x1_stride2_3of5_P9": (("conv", 10, 6, 6, 5, 1, 2, 0), 3, 9, 5, 0.1, (2, 4), 0),
    "linear_2of4_P6": (("linear", 30, 1, 1, 7), 2, 6, 4, 0.0, (3, 4), 0),
    # time-multiplexed PEs: 5 products on 2 multipliers (3 cycles per window), 2:4 on 1 multiplier
    "3x3_n5_P7_2mults_zero": (("conv", 4, 6, 7, 5, 3, 1, 1), 5, 7, 4, 0.2, (3, 2), 2),
    "linear_2of4_P6_1mult": (("linear", 22, 1, 1, 6), 2, 6, 4, 0.0, (2, 4), 1),
    # many zero kernels: whole array rows skipped, so the rows are not implicit (the lanes ROM is stored)
    "3x3_skipped_rows_n4_P4": (("conv", 8, 5, 5, 2, 3, 1, 1), 4, 4, 4, 0.8, (2, 2), 0),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_engine_random_pattern_layer(simulator, tmp_path, name):
    args, n, p, m, zero, (r, c), mults = LAYERS[name]
    rng = np.random.default_rng(len(name))
    layer, table, _ = random_pattern_layer(rng, *args, n=n, patterns=p, m=m, zero_fraction=zero, name=name)
    scheme = PatternScheme(array=ArrayConfig(r, c), n=n, patterns=p, nm_n=n, nm_m=m, nm_patterns=p,
                           connectivity=0.1 if zero else 0.0, mults=mults)
    scheme.tables[layer.name], scheme.zero_id[layer.name] = table, zero > 0
    packed = scheme.pack(layer)
    usage = packed.meta["stats"]["usage"]
    assert len(usage) == p and all(usage), usage                     # every pattern is exercised
    assert (packed.meta["stats"]["zero_kernels"] > 0) == (zero > 0)
    assert PatternScheme.pe_phases(packed) == (-(-n // mults) if mults else 1)
    st = packed.meta["stats"]
    assert packed.meta["implicit_rows"] == (st["slots"] == st["dense_slots"]) == ("lanes" not in packed.roms)
    if name == "3x3_skipped_rows_n4_P4":
        assert st["slots"] < st["dense_slots"]
    row = run_engine(layer, packed, ArrayConfig(r, c), simulator, random_input(rng, layer, 2),
                     test_dir=tmp_path / name)
    check_row(row, layer, 2)


@pytest.fixture(scope="session")
def default_pattern():
    """The default digits model compressed with the pattern scheme (short fine-tuning: same scheme and ROM
    format as the defaults) and two test images through its golden model."""
    return compressed_default(PatternScheme(array=ArrayConfig(4, 4), prune_steps=2, finetune_epochs=1,
                                            connectivity=0.1))


def _check_default_layers(simulator, default_pattern, tmp_path):
    qmodel, packed = default_pattern[:2]
    rows = run_model_layers(default_pattern, ArrayConfig(4, 4), simulator, tmp_path)
    layers = [l for l in qmodel.layers if l.kind in ("conv", "linear")]
    for row, layer in zip(rows, layers):
        check_row(row, layer, 2)
    # conv1, conv2: 3x3 windows; fc: 2:4 channel groups
    assert [(r["scheme"], packed[l.name].meta["feed"]) for r, l in zip(rows, layers)] == \
        [("pattern", "window"), ("pattern", "window"), ("pattern", "channels")]


def test_engine_default_model_pattern_icarus(default_pattern, tmp_path):
    from sparsyn.sim.tools import have_simulator
    if have_simulator("icarus"):
        pytest.skip(have_simulator("icarus"))
    _check_default_layers("icarus", default_pattern, tmp_path)


@pytest.mark.slow
def test_engine_default_model_pattern_verilator(default_pattern, tmp_path):
    from sparsyn.sim.tools import have_simulator
    if have_simulator("verilator"):
        pytest.skip(have_simulator("verilator"))
    _check_default_layers("verilator", default_pattern, tmp_path)
