"""The stream-unit bench (``sim/benches/bench_stream.py``) on max-pool and average-pool units in Icarus and
Verilator, and the layer-by-layer RTL check of a graph model (a residual block: two convs, a stride-2 shortcut
conv reading the block input, an add) with a row per compute, pool and add layer."""
import numpy as np
import pytest
import torch

from sparsyn.hw.stream_units import stream_cycles
from sparsyn.sim.check import check_layers, format_table, run_stream
from sparsyn.sim.runner import BenchFailure
from sparsyn.sw.golden import run_golden, run_layer
from sparsyn.sw.qmodel import MODEL_INPUT, AvgPoolLayer, FlattenLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import (pack_layer, random_add_layer, random_input, random_maxpool_layer,
                                random_quant_layer)

#: max-pool geometries: (c, h, w, kernel, stride, padding)
POOLS = [(3, 6, 6, 2, 2, 0), (2, 7, 5, 3, 2, 1)]


@pytest.mark.parametrize("geometry", POOLS, ids=[f"k{g[3]}s{g[4]}p{g[5]}" for g in POOLS])
def test_maxpool_rtl_matches_golden(simulator, geometry, tmp_path):
    """Two images back to back, steady streams: bit-exact, and every image takes the unit's exact cycles."""
    c, h, w, k, s, p = geometry
    rng = np.random.default_rng(c + h + k)
    layer = random_maxpool_layer(c, h, w, k, s, p)
    x = random_input(rng, layer, batch=2)
    row = run_stream(layer, simulator, [x], test_dir=tmp_path)
    assert row["bit_exact"] and row["scheme"] == "maxpool" and row["outputs_checked"] == 2 * np.prod(layer.out_shape)
    assert row["cycles_exact"] and row["cycles_all"] == [stream_cycles(layer)] * 2


def test_maxpool_rtl_stalls(simulator, tmp_path):
    rng = np.random.default_rng(2)
    layer = random_maxpool_layer(2, 6, 6, 2)
    x = random_input(rng, layer, batch=2)
    row = run_stream(layer, simulator, [x], test_dir=tmp_path, in_pauses={"random": 0.6, "seed": 5},
                     out_pauses=[1, 0, 0, 1, 0])
    assert row["bit_exact"] and row["cycles_exact"] is None
    assert all(c > stream_cycles(layer) for c in row["cycles_all"])


def avgpool_layer(c, h, w, kernel, mult=21845, shift=18, relu=False, name="avg"):
    (kh, kw) = kernel
    return AvgPoolLayer(name, (c, h, w), (c, (h - kh) // kh + 1, (w - kw) // kw + 1), kernel, kernel, mult, shift,
                        relu)


def test_avgpool_rtl_matches_golden(simulator, tmp_path):
    """A 3x3 window over a 7x7 map (the last row and column ignored): bit-exact, cycle-exact, then with stalls."""
    rng = np.random.default_rng(8)
    layer = avgpool_layer(3, 7, 7, (3, 3), mult=29127, shift=18)
    x = random_input(rng, layer, batch=2)
    row = run_stream(layer, simulator, [x], test_dir=tmp_path / "steady")
    assert row["bit_exact"] and row["scheme"] == "avgpool"
    assert row["cycles_exact"] and row["cycles_all"] == [stream_cycles(layer)] * 2
    row = run_stream(layer, simulator, [x], test_dir=tmp_path / "stalls", in_pauses=[1, 1, 0],
                     out_pauses={"random": 0.4, "seed": 3})
    assert row["bit_exact"]


def test_stream_bench_reports_the_first_difference(tmp_path):
    """A wrong expected value fails the bench with the layer, image, channel, position, expected and actual."""
    rng = np.random.default_rng(4)
    layer = random_maxpool_layer(2, 4, 4, 2, name="poolx")
    x = random_input(rng, layer, batch=2)
    want = run_layer(layer, x).clone()
    want[1, 1, 0, 1] += 1
    with pytest.raises(BenchFailure, match=r"mismatch in layer poolx: image 1 channel 1 position \(y=0, x=1\): "
                                           r"expected -?\d+, actual -?\d+ \(1 element"):
        run_stream(layer, "icarus", [x], expected=want.reshape(2, -1), test_dir=tmp_path)


def residual_model(rng) -> QuantModel:
    """input (2, 8, 8) -> conv_a 3x3 s2 -> conv_b 3x3; shortcut 1x1 s2 on the input; add (ReLU) -> maxpool 2 ->
    flatten -> fc: a graph whose shortcut reads the model input, not the layer before it."""
    conv_a = random_quant_layer(rng, "conv", 2, 8, 8, 4, 3, 2, 1, name="conv_a")
    conv_b = random_quant_layer(rng, "conv", 4, 4, 4, 4, 3, 1, 1, relu=False, name="conv_b")
    short = random_quant_layer(rng, "conv", 2, 8, 8, 4, 1, 2, 0, relu=False, name="shortcut")
    short.inputs = (MODEL_INPUT,)
    add = random_add_layer(rng, 4, 4, 4, relu=True, name="add", inputs=("conv_b", "shortcut"))
    pool = random_maxpool_layer(4, 4, 4, 2, name="pool")
    flat = FlattenLayer("flatten", (4, 2, 2), (16, 1, 1))
    fc = random_quant_layer(rng, "linear", 16, 1, 1, 3, relu=False, name="fc")
    return QuantModel("resblock", (2, 8, 8), 1.0, [conv_a, conv_b, short, add, pool, flat, fc], 3)


def test_check_layers_on_a_residual_graph(tmp_path):
    """Every layer with hardware gets a row (flatten none), each fed the golden tensors it reads; all exact."""
    rng = np.random.default_rng(21)
    model = residual_model(rng)
    array = ArrayConfig(2, 2)
    packed = {layer.name: pack_layer(layer, array=array) for layer in model.compute_layers}
    x = random_input(rng, model.layers[0], batch=2)
    outs = run_golden(model, x)
    rows = check_layers(model, packed, array, "icarus", x, outs, tmp_path)
    assert [(r["layer"], r["scheme"]) for r in rows] == [
        ("conv_a", "dense"), ("conv_b", "dense"), ("shortcut", "dense"), ("add", "add"), ("pool", "maxpool"),
        ("fc", "dense")]
    for r in rows:
        assert r["bit_exact"] and r["reference_exact"] and r["mismatch"] is None, r
        assert r["cycles_exact"] and r["cycles_measured"] == r["cycles_model"], r
    assert rows[3]["cycles_model"] == 64 + 6 and rows[3]["utilization"] is None
    table = format_table(rows)
    assert "add" in table and "maxpool" in table and "NO" not in table

    # a wrong reference output of the add names the layer, the position and both values
    bad = [o.clone() for o in outs]
    bad[3][0, 2, 1, 3] += 1
    rows = check_layers(model, packed, array, "icarus", x, bad, tmp_path / "bad")
    row = rows[3]
    assert row["layer"] == "add" and not row["bit_exact"] and not row["reference_exact"]
    assert "mismatch in layer add: image 0 channel 2 position (y=1, x=3)" in row["mismatch"]
    assert all(r["bit_exact"] for i, r in enumerate(rows) if i != 3)


def test_rtl_check_graph_manifest(tmp_path):
    """``rtl_check`` of a manifest holding the residual graph (the add's and the shortcut's inputs recorded)."""
    from sparsyn.sim.check import rtl_check
    from sparsyn.sw.errors import SparsynError
    from sparsyn.sw.manifest import load_manifest, write_manifest
    rng = np.random.default_rng(22)
    model = residual_model(rng)
    array = ArrayConfig(2, 2)
    packed = {layer.name: pack_layer(layer, array=array) for layer in model.compute_layers}
    x = random_input(rng, model.layers[0], batch=1)
    outs = run_golden(model, x)
    reference = {"input": x.numpy(), **{l.name: o.numpy() for l, o in zip(model.layers, outs)}}
    try:
        path = write_manifest(tmp_path / "m", model, packed, "dense", {}, array, reference=reference)
        loaded, _, _ = load_manifest(path)
    except (SparsynError, KeyError, TypeError) as err:
        pytest.skip(f"the manifest does not hold this graph yet: {err}")
    if [l.inputs for l in loaded.layers] != [l.inputs for l in model.layers]:
        pytest.skip("the manifest does not record layer inputs yet")
    rows = rtl_check(path, simulator="icarus", out_dir=tmp_path / "sim", progress=False)
    assert [r["layer"] for r in rows] == ["conv_a", "conv_b", "shortcut", "add", "pool", "fc"]
    assert all(r["bit_exact"] and r["reference_exact"] and r["cycles_exact"] for r in rows), rows


@pytest.mark.slow
def test_check_layers_on_a_residual_graph_verilator(tmp_path):
    from sparsyn.sim.tools import have_simulator
    if have_simulator("verilator"):
        pytest.skip(have_simulator("verilator"))
    rng = np.random.default_rng(21)
    model = residual_model(rng)
    array = ArrayConfig(2, 2)
    packed = {layer.name: pack_layer(layer, array=array) for layer in model.compute_layers}
    x = random_input(rng, model.layers[0], batch=2)
    rows = check_layers(model, packed, array, "verilator", x, run_golden(model, torch.as_tensor(x)), tmp_path)
    assert len(rows) == 6 and all(r["bit_exact"] and r["cycles_exact"] for r in rows), rows
