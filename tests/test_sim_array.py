"""Systolic-array bench: random integer matrix products through the scheme's tile schedule, shapes that
are and are not multiples of the array size, in Icarus and Verilator."""
import numpy as np
import pytest

from sparsyn.hw.array import SystolicArray, array_latency
from sparsyn.sim.runner import build, run_bench
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.testing import pack_layer, random_quant_layer

#: (N, K, pixels): exact multiples of 4x4, N and K not multiples (tail section and tail pass padded),
#: a single column of work, K < R.
SHAPES = [(8, 8, 5), (7, 13, 6), (1, 5, 3), (10, 3, 4)]


def array_params(rng, array, n, k, pixels):
    layer = random_quant_layer(rng, "linear", k, 1, 1, n)
    program = get_scheme("dense")(array=array).schedule(layer)[0]
    x = rng.integers(-128, 128, size=(k, pixels))
    x[0, 0], x[-1, -1] = -128, 127
    passes = [[s, [[list(slot.lane_k), list(slot.entries)] for slot in slots]] for s, slots in program.passes]
    return {"rows": array.rows, "cols": array.cols, "lanes": array.lanes, "entry_width": program.entry_width,
            "weight": layer.weight.tolist(), "x": x.tolist(), "passes": passes}


@pytest.fixture(scope="module")
def array4x4():
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "linear", 4, 1, 1, 4)
    return SystolicArray(ArrayConfig(4, 4), pack_layer(layer, "dense", array=ArrayConfig(4, 4)))


def test_array_random_matrices(simulator, array4x4, tmp_path):
    bld = build(array4x4, simulator, "array4x4")
    rng = np.random.default_rng(7)
    for i, (n, k, pixels) in enumerate(SHAPES):
        params = array_params(rng, ArrayConfig(4, 4), n, k, pixels)
        res = run_bench(bld, "sparsyn.sim.benches.bench_array", params, test_dir=tmp_path / str(i))
        assert res["checked"] == n * pixels
        assert res["passes"] == -(-n // 4) * max(1, -(-k // 4))
        assert res["latency"] == array_latency(4, 4), "measured latency differs from array_latency()"


def test_array_non_square(tmp_path):
    """A 3x5 array (rows != cols, neither divides the matrix) in Icarus."""
    rng = np.random.default_rng(1)
    layer = random_quant_layer(rng, "linear", 4, 1, 1, 4)
    arr = SystolicArray(ArrayConfig(3, 5), pack_layer(layer, "dense", array=ArrayConfig(3, 5)))
    bld = build(arr, "icarus", "array3x5")
    res = run_bench(bld, "sparsyn.sim.benches.bench_array", array_params(rng, ArrayConfig(3, 5), 11, 7, 4),
                    test_dir=tmp_path)
    assert res["checked"] == 44 and res["latency"] == array_latency(3, 5)


def test_verilator_build_split_into_several_cpp_files(tmp_path, monkeypatch):
    """Designs big enough for Verilator to split its C++ output compile with the precompiled header
    (the PyPI wheel's verilated.mk leaves ``CFG_CXXFLAGS_PCH_I`` empty; the runner must supply it).
    ``--output-split 50`` forces the split on a small array; a fresh build root avoids the cache."""
    import sparsyn.sim.runner as runner
    from sparsyn.sim.tools import have_simulator
    if have_simulator("verilator"):
        pytest.skip(have_simulator("verilator"))
    monkeypatch.setattr(runner, "VERILATOR_ARGS", [*runner.VERILATOR_ARGS, "--output-split", "50"])
    rng = np.random.default_rng(3)
    layer = random_quant_layer(rng, "linear", 4, 1, 1, 4)
    arr = SystolicArray(ArrayConfig(2, 2), pack_layer(layer, "dense", array=ArrayConfig(2, 2)))
    bld = build(arr, "verilator", "array2x2split", root=tmp_path / "builds")
    assert len(list(bld.build_dir.glob("Vtop___024root__*.cpp"))) > 1, "the build was not split"
    res = run_bench(bld, "sparsyn.sim.benches.bench_array", array_params(rng, ArrayConfig(2, 2), 3, 5, 4),
                    test_dir=tmp_path / "run")
    assert res["checked"] == 12
