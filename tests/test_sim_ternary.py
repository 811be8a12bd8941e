"""Ternary RTL in Icarus and Verilator (cocotb), bit-exact against the golden model: the adder-array PE on
random ternary tiles, LayerEngines of random ternary layers with random tile occupancy, and every layer
of the default digits model compressed with the ternary scheme."""
import numpy as np
import pytest

from sparsyn.hw.pe import ProcessingElement
from sparsyn.hw.schemes import make_product
from sparsyn.sim.check import compressed_default, run_engine, run_model_layers
from sparsyn.sim.runner import build, run_bench
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer
from sparsyn.sw.schemes.ternary import TernaryScheme
from sparsyn.sw.ternarize import random_ternary_layer
from sparsyn.sw.testing import random_input

ARRAY = ArrayConfig(4, 4)


def check_row(row, layer, images):
    assert row["bit_exact"] and row["outputs_checked"] == images * layer.n * layer.pixels
    assert set(row["cycles_all"]) == {row["cycles_model"]}, (row["cycles_all"], row["cycles_model"])
    assert row["cycles_exact"] and row["cycles_all"] == row["cycles_model_all"]
    # measured utilization counts all T lanes of each PE, so it agrees with the model and stays <= 1
    assert row["utilization"] == pytest.approx(row["utilization_model"]) and 0 < row["utilization"] <= 1


def test_pe_random_ternary_tiles(simulator, tmp_path):
    tile = 8
    packed = PackedLayer("ternary", {"tile": tile}, {})
    pe = ProcessingElement(make_product(packed))
    rng = np.random.default_rng(4)
    vectors = []
    for i in range(300):
        trits = rng.integers(-1, 2, tile) if i >= 4 else [(-1, 1, 0, -1)[i]] * tile
        entry = TernaryScheme.entry_word(trits)
        xs = rng.integers(-128, 128, tile).tolist() if i >= 4 else [-128] * tile
        psum = int(rng.integers(-2**30, 2**30))
        vectors.append([entry, xs, psum, list(TernaryScheme.entry_coefficients(packed, entry))])
    bld = build(pe, simulator, "pe_ternary8")
    res = run_bench(bld, "sparsyn.sim.benches.bench_pe",
                    {"scheme": "ternary", "meta": packed.meta, "lanes": tile, "vectors": vectors},
                    test_dir=tmp_path)
    assert res["checked"] == len(vectors)


def test_engine_random_ternary_layer_random_occupancy(simulator, tmp_path):
    rng = np.random.default_rng(21)
    # K = 5*3*3 = 45 is not a multiple of T = 8: the last tile is padded with zero lanes
    layer = random_ternary_layer(rng, "conv", 5, 6, 6, 7, 3, 1, 1, tile=8, cols=ARRAY.cols, occupancy=0.4,
                                 name="tern_rand_conv")
    packed = TernaryScheme(array=ARRAY, tile=8).pack(layer)
    assert 0 < packed.meta["stats"]["stored_tiles"] < packed.meta["stats"]["groups"] == packed.meta["sections"] * 6
    row = run_engine(layer, packed, ARRAY, simulator, random_input(rng, layer, 2), test_dir=tmp_path)
    check_row(row, layer, 2)


@pytest.fixture(scope="session")
def default_ternary():
    """The default digits model compressed with the ternary scheme (short training: same scheme and ROM
    format as the defaults) and two test images through its golden model."""
    return compressed_default(TernaryScheme(array=ARRAY, sparsity=0.5, penalty_epochs=4, finetune_epochs=4))


def _check_default_layers(simulator, default_ternary, tmp_path):
    rows = run_model_layers(default_ternary, ARRAY, simulator, tmp_path)
    for row, layer in zip(rows, [l for l in default_ternary[0].layers if l.kind in ("conv", "linear")]):
        check_row(row, layer, 2)
    assert [r["scheme"] for r in rows] == ["dense", "ternary", "ternary"]   # conv1 stays int8, conv2 and fc ternary


def test_engine_default_model_ternary_icarus(default_ternary, tmp_path):
    from sparsyn.sim.tools import have_simulator
    if have_simulator("icarus"):
        pytest.skip(have_simulator("icarus"))
    _check_default_layers("icarus", default_ternary, tmp_path)


@pytest.mark.slow
def test_engine_default_model_ternary_verilator(default_ternary, tmp_path):
    from sparsyn.sim.tools import have_simulator
    if have_simulator("verilator"):
        pytest.skip(have_simulator("verilator"))
    _check_default_layers("verilator", default_ternary, tmp_path)
