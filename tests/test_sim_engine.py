"""LayerEngine regression: every layer of the default digits model and random layers, in Icarus and
Verilator, bit-exact against the golden model, measured cycles equal to the exact cycle model."""
import copy

import numpy as np
import pytest

from sparsyn.sim.check import CycleMismatch, model_inputs, run_engine
from sparsyn.sim.runner import BenchFailure
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import pack_layer, random_input, random_quant_layer

ARRAY = ArrayConfig(4, 4)

#: Random layers: odd channel counts, stride 2, padding 0/1, 1x1 and 5x5 kernels, Linear with K > R
#: and N > C (several passes and sections, the tail section padded). (name, kind, cin, h, w, cout,
#: kernel, stride, padding, relu)
RANDOM_LAYERS = [
    ("odd3x3p1", "conv", 3, 7, 7, 5, 3, 1, 1, True),
    ("s2p0", "conv", 2, 9, 9, 3, 3, 2, 0, False),
    ("k1x1", "conv", 5, 4, 4, 7, 1, 1, 0, True),
    ("k5x5p1s2", "conv", 2, 9, 9, 6, 5, 2, 1, False),
    ("linear37x11", "linear", 37, 1, 1, 11, 1, 1, 0, False),
]


def check_row(row):
    assert row["bit_exact"] and row["outputs_checked"] > 0
    assert len(set(row["cycles_all"])) == 1, f"cycle count varies between images: {row['cycles_all']}"
    # no tolerance: every image's measured cycles equal the model's (run_engine raises otherwise)
    assert row["cycles_exact"] and row["cycles_all"] == row["cycles_model_all"], row
    assert row["cycles_measured"] == row["cycles_model"], (f"{row['layer']}: measured {row['cycles_measured']} "
                                                           f"cycles, model {row['cycles_model']}")
    assert 0 < row["utilization"] <= 1


@pytest.fixture(scope="session")
def default_dense():
    """The default digits model compressed with the dense scheme, and two test images through it."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    from sparsyn.sw.schemes import get_scheme
    qmodel, packed, _report = compress_model(default_model(progress=False), get_scheme("dense")(array=ARRAY), digits(),
                                             progress=False, log=lambda *a, **k: None)
    x, outs = model_inputs(qmodel, images=2)
    return qmodel, packed, x, outs


@pytest.mark.parametrize("index", [0, 1, 2], ids=["conv1", "conv2", "fc"])
def test_engine_default_model_layer(simulator, default_dense, index, tmp_path):
    qmodel, packed, x, outs = default_dense
    compute = [(i, layer) for i, layer in enumerate(qmodel.layers) if layer.kind in ("conv", "linear")]
    assert len(compute) == 3
    i, layer = compute[index]
    layer_in = x if i == 0 else outs[i - 1]
    row = run_engine(layer, packed[layer.name], ARRAY, simulator, layer_in, test_dir=tmp_path)
    check_row(row)
    assert row["outputs_checked"] == 2 * layer.n * layer.pixels


@pytest.mark.parametrize("case", RANDOM_LAYERS, ids=[c[0] for c in RANDOM_LAYERS])
def test_engine_random_layer(simulator, case, tmp_path):
    name, kind, cin, h, w, cout, k, s, p, relu = case
    rng = np.random.default_rng(sum(map(ord, name)))
    layer = random_quant_layer(rng, kind, cin, h, w, cout, kernel=k, stride=s, padding=p, relu=relu, name=name)
    x = random_input(rng, layer, batch=2)
    row = run_engine(layer, pack_layer(layer, array=ARRAY), ARRAY, simulator, x, test_dir=tmp_path)
    check_row(row)


def test_engine_back_pressure(tmp_path):
    """Bubbles on act_in and back-pressure on act_out must not change a single output or the cycles."""
    rng = np.random.default_rng(3)
    layer = random_quant_layer(rng, "conv", 3, 5, 5, 6, kernel=3, stride=1, padding=1, name="bp")
    x = random_input(rng, layer, batch=2)
    row = run_engine(layer, pack_layer(layer, array=ARRAY), ARRAY, "icarus", x, test_dir=tmp_path,
                     in_pauses=[1, 0, 1, 1, 0], out_pauses=[0, 1, 1, 0, 1])
    check_row(row)


def test_engine_mismatch_names_layer_position_and_waveform(tmp_path):
    """A golden model that disagrees with the RTL (bias changed after generation) must be reported with
    layer/image/channel/position/expected/actual and a waveform file."""
    from sparsyn.sim.check import make_engine
    rng = np.random.default_rng(4)
    layer = random_quant_layer(rng, "conv", 2, 5, 5, 3, kernel=3, stride=1, padding=0, relu=False, name="bad")
    packed = pack_layer(layer, array=ARRAY)
    engine = make_engine(layer, packed, ARRAY)     # hardware built from the true layer
    wrong = copy.deepcopy(layer)
    wrong.bias[2] += 1 << int(wrong.shift[2])      # golden model now differs on channel 2
    x = random_input(rng, layer, batch=1)
    with pytest.raises(BenchFailure) as info:
        run_engine(wrong, packed, ARRAY, "icarus", x, test_dir=tmp_path, engine=engine)
    msg = str(info.value)
    assert "mismatch in layer bad" in msg and "channel 2" in msg and "expected" in msg and "actual" in msg
    assert "waveform:" in msg and info.value.waveform.exists() and info.value.waveform.stat().st_size > 0


def test_unknown_simulator_is_one_line_error():
    from sparsyn.sw.errors import SparsynError
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "linear", 4, 1, 1, 2)
    with pytest.raises(SparsynError, match="unknown simulator 'modelsim'"):
        run_engine(layer, pack_layer(layer, array=ARRAY), ARRAY, "modelsim", random_input(rng, layer))


def test_cycle_model_off_by_one_is_a_failure(tmp_path):
    """There is no tolerance: a cycle model one cycle off the RTL fails the run (bit-exact or not)."""
    from sparsyn.sim.check import make_engine
    rng = np.random.default_rng(5)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 3, kernel=3, stride=1, padding=1, name="offby1")
    packed = pack_layer(layer, array=ARRAY)
    x = random_input(rng, layer, batch=2)
    engine = make_engine(layer, packed, ARRAY)
    check_row(run_engine(layer, packed, ARRAY, "icarus", x, test_dir=tmp_path / "exact", engine=engine))
    engine.plan.model["total"] += 1            # the same hardware, a model that is one cycle off
    with pytest.raises(CycleMismatch, match=r"layer offby1: image 0 took \d+ cycles in RTL but the cycle model "
                                            r"says \d+ \(-1\); the model must be exact"):
        run_engine(layer, packed, ARRAY, "icarus", x, test_dir=tmp_path / "off", engine=engine)


def test_array_other_than_the_packed_one_is_refused():
    from sparsyn.sw.errors import SparsynError
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "linear", 4, 1, 1, 2)
    with pytest.raises(SparsynError, match="packed for 4x4, not 2x2"):
        run_engine(layer, pack_layer(layer, array=ARRAY), ArrayConfig(2, 2), "icarus", random_input(rng, layer))
