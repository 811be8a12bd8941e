"""AddUnit against the golden model: random shapes, multipliers, shifts and ReLU, bit-exact and cycle-exact with
steady streams, bit-exact under valid gaps and back-pressure; in Amaranth's simulator and, through the stream
bench, in Icarus and Verilator."""
import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from sparsyn.hw.add import ADD_SHIFT_CAP, AddUnit, add_cycles, check_add
from sparsyn.hw.stream_units import StreamUnit, stream_unit
from sparsyn.sim.check import run_stream
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_layer
from sparsyn.sw.qmodel import AddLayer
from sparsyn.sw.testing import random_add_layer, random_input


def golden(layer, a, b) -> np.ndarray:
    return run_layer(layer, torch.as_tensor(a), torch.as_tensor(b)).reshape(-1).numpy()


def gaps(rng, n: int, p: float):
    """A 0/1 pattern of length n, 1 with probability p (valid / ready), never all 0."""
    pattern = (rng.random(n) < p).astype(int).tolist()
    return pattern if any(pattern) else [1]


def run_add(unit: AddUnit, a, b, *, a_pattern=(1,), b_pattern=(1,), ready_pattern=(1,), layer_index=None):
    """Stream ``a`` and ``b`` through ``unit`` (patterns: valid / ready per cycle, repeated); returns the outputs and
    the cycles from the first input handshake to the last output handshake, both counted."""
    a, b = (np.asarray(v).reshape(-1) for v in (a, b))
    n = len(a)
    got, first, last = [], [], []

    async def source(ctx, port, values, pattern):
        i, t = 0, 0
        while i < n:
            on = pattern[t % len(pattern)]
            ctx.set(port.valid, on)
            ctx.set(port.payload, int(values[i]))
            _, _, ready = await ctx.tick().sample(port.ready)
            if on and ready:
                if i == 0:
                    first.append(t)
                i += 1
            t += 1
        ctx.set(port.valid, 0)

    async def sink(ctx):
        if layer_index is not None:
            ctx.set(unit.layer_index, layer_index)
        t = 0
        while len(got) < n:
            rdy = ready_pattern[t % len(ready_pattern)]
            ctx.set(unit.o.ready, rdy)
            _, _, valid, y = await ctx.tick().sample(unit.o.valid, unit.o.payload)
            if valid and rdy:
                got.append(y)
                last.append(t)
            t += 1
            assert t < 100 * (n + 20), f"{len(got)} of {n} outputs"

    async def source_a(ctx):
        await source(ctx, unit.a, a, a_pattern)

    async def source_b(ctx):
        await source(ctx, unit.b, b, b_pattern)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(source_a)
    sim.add_testbench(source_b)
    sim.add_testbench(sink)
    sim.run()
    return np.array(got, dtype=np.int64), last[-1] - min(first) + 1


#: (c, h, w, relu, mult_a, mult_b, shift): None draws a random value; the fixed ones hit the corners.
AMARANTH_CASES = [
    (3, 4, 5, True, None, None, None),
    (2, 3, 3, False, None, None, None),
    (1, 1, 7, False, (1 << 15) - 1, (1 << 15) - 1, 1),       # the widest sums: every output clamps
    (4, 2, 2, True, 0, 1, 1),                                  # a branch multiplied by 0; shift 1 rounds halves up
    (2, 2, 3, False, 12345, 23456, ADD_SHIFT_CAP - 1),         # every output rounds to 0 or +-1
    (2, 2, 2, False, 30000, 30000, 47),                        # the largest shift: all 0
]


@pytest.mark.parametrize("case", AMARANTH_CASES, ids=[f"case{i}" for i in range(len(AMARANTH_CASES))])
def test_add_unit_matches_golden(case):
    c, h, w, relu, ma, mb, shift = case
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    layer = random_add_layer(rng, c, h, w, relu=relu, mult_a=ma, mult_b=mb, shift=shift)
    check_add(layer)
    a, b = random_input(rng, layer), random_input(rng, layer)
    want = golden(layer, a, b)
    got, cycles = run_add(AddUnit(layer), a, b)
    assert np.array_equal(got, want), (np.argwhere(got != want)[0], got, want)
    assert cycles == add_cycles(layer) == c * h * w + AddUnit.latency


def test_add_unit_exercises_rounding_and_both_clamps():
    """The random constants give outputs that round (odd sums at the half), clamp at 127 and at the low bound."""
    rng = np.random.default_rng(11)
    layer = random_add_layer(rng, 4, 6, 6, relu=False, shift=15)
    a, b = random_input(rng, layer), random_input(rng, layer)
    want = golden(layer, a, b)
    assert (want == 127).any() and (want == -128).any() and ((want > -128) & (want < 127)).sum() > 50
    got, _ = run_add(AddUnit(layer), a, b)
    assert np.array_equal(got, want)


def edge_pairs(layer):
    """Inputs (1, C, H, W) whose sums a + b (mult_a = mult_b = 2**14, shift 14: y = a + b exactly) lie on and
    around both clamp bounds of either ReLU setting, and the int8 extremes."""
    sums = [126, 127, 128, 129, 254, -1, 0, 1, -127, -128, -129, -130, -256, 100, -100]
    a = [min(127, max(-128, t // 2)) for t in sums]
    pairs = [(x, t - x) for x, t in zip(a, sums)] + [(127, 127), (-128, -128), (-128, 127), (127, -128)]
    n = int(np.prod(layer.in_shape))
    pairs = (pairs * n)[:n]
    shape = (1, *layer.in_shape)
    return (torch.tensor([p[0] for p in pairs]).reshape(shape), torch.tensor([p[1] for p in pairs]).reshape(shape))


#: (name, mult_b, relu): mult_a = 2**14 over shift 14, so y = a + b (exact sums on the clamp bounds) or, with
#: mult_b = 2**13, y = a + b/2 (every odd b a tie, rounded half up)
EDGE_LAYERS = [("sums", 1 << 14, False), ("sums_relu", 1 << 14, True), ("halves", 1 << 13, False),
               ("halves_relu", 1 << 13, True)]


def edge_layer(name, mult_b, relu):
    return AddLayer(name, (1, 3, 7), (1, 3, 7), ("x", "y"), 1 << 14, mult_b, 14, relu=relu)


@pytest.mark.parametrize("case", EDGE_LAYERS, ids=[c[0] for c in EDGE_LAYERS])
def test_add_unit_edges(case):
    """Sums exactly on, one inside and one past each bound (127 / 128, -128 / -129, 0 / -1 with ReLU), and ties."""
    layer = edge_layer(*case)
    a, b = edge_pairs(layer)
    want = golden(layer, a, b)
    lo = 0 if layer.relu else -128
    if layer.mult_b == layer.mult_a:
        assert np.array_equal(want, np.clip((a + b).reshape(-1).numpy(), lo, 127))
    else:
        ties = (b.reshape(-1).numpy() % 2 == 1)
        assert ties.sum() > 5 and np.array_equal(want, np.clip((2 * a + b + 1).reshape(-1).numpy() // 2, lo, 127))
    got, _ = run_add(AddUnit(layer), a, b)
    assert np.array_equal(got, want), (np.argwhere(got != want)[0], got, want)


def test_add_unit_stalls():
    """Valid gaps on each input (independent) and back-pressure on the output change no output."""
    rng = np.random.default_rng(7)
    layer = random_add_layer(rng, 3, 5, 4, relu=True)
    a, b = random_input(rng, layer), random_input(rng, layer)
    got, cycles = run_add(AddUnit(layer), a, b, a_pattern=gaps(rng, 13, 0.6), b_pattern=gaps(rng, 17, 0.7),
                          ready_pattern=gaps(rng, 11, 0.5))
    assert np.array_equal(got, golden(layer, a, b))
    assert cycles > add_cycles(layer)


def test_add_unit_shared_by_layers():
    """A list of add layers shares one unit; ``layer_index`` picks the constants."""
    rng = np.random.default_rng(3)
    layers = [random_add_layer(rng, 2, 3, 3, relu=True, name="add0"),
              random_add_layer(rng, 1, 4, 4, relu=False, shift=16, name="add1"),
              random_add_layer(rng, 2, 2, 2, relu=False, shift=ADD_SHIFT_CAP + 5, name="add2")]
    for k, layer in enumerate(layers):
        a, b = random_input(rng, layer), random_input(rng, layer)
        got, _ = run_add(AddUnit(layers), a, b, layer_index=k, ready_pattern=(1, 1, 0))
        assert np.array_equal(got, golden(layer, a, b)), layer.name


def test_check_add_refuses():
    ok = AddLayer("ok", (2, 3, 3), (2, 3, 3), ("x", "y"), 100, 200, 10)
    check_add(ok)
    bad = [(AddLayer("s0", (2, 3, 3), (2, 3, 3), ("x", "y"), 1, 1, 0), "shift 0 is outside 1..47"),
           (AddLayer("s48", (2, 3, 3), (2, 3, 3), ("x", "y"), 1, 1, 48), "shift 48 is outside"),
           (AddLayer("m", (2, 3, 3), (2, 3, 3), ("x", "y"), 1 << 15, 1, 3), "mult_a 32768 is outside"),
           (AddLayer("neg", (2, 3, 3), (2, 3, 3), ("x", "y"), 1, -1, 3), "mult_b -1 is outside"),
           (AddLayer("shape", (2, 3, 3), (2, 3, 4), ("x", "y"), 1, 1, 3), "differs from output shape"),
           (AddLayer("one", (2, 3, 3), (2, 3, 3), ("x",), 1, 1, 3), "reads 1 tensors")]
    for layer, text in bad:
        with pytest.raises(SparsynError, match=text):
            check_add(layer)
        with pytest.raises(SparsynError, match=text):
            stream_unit(layer)


#: Random adds for the cocotb bench: (c, h, w, seed).
RTL_CASES = [(3, 4, 5, 1), (1, 7, 3, 2), (6, 2, 2, 3)]


@pytest.mark.parametrize("case", RTL_CASES, ids=[f"{c}x{h}x{w}" for c, h, w, _ in RTL_CASES])
def test_add_rtl_matches_golden(simulator, case, tmp_path):
    """Two images back to back, steady streams: every output bit-exact, every image cycle-exact."""
    c, h, w, seed = case
    rng = np.random.default_rng(seed)
    layer = random_add_layer(rng, c, h, w)
    a, b = random_input(rng, layer, batch=2), random_input(rng, layer, batch=2)
    row = run_stream(layer, simulator, [a, b], test_dir=tmp_path)
    assert row["bit_exact"] and row["outputs_checked"] == 2 * c * h * w
    assert row["cycles_exact"] and row["cycles_all"] == [add_cycles(layer)] * 2 == row["cycles_model_all"]


def test_add_rtl_edges(simulator, tmp_path):
    """The clamp bounds exactly and ties (see :data:`EDGE_LAYERS`), with and without ReLU."""
    for case in EDGE_LAYERS:
        layer = edge_layer(*case)
        a, b = edge_pairs(layer)
        row = run_stream(layer, simulator, [a, b], test_dir=tmp_path / layer.name)
        assert row["bit_exact"] and row["cycles_exact"]


def test_add_rtl_stalls(simulator, tmp_path):
    """Random valid gaps on both inputs and random ready on the output: still bit-exact, only slower."""
    rng = np.random.default_rng(9)
    layer = random_add_layer(rng, 4, 3, 3, relu=False)
    a, b = random_input(rng, layer, batch=2), random_input(rng, layer, batch=2)
    row = run_stream(layer, simulator, [a, b], test_dir=tmp_path,
                     in_pauses={"a": {"random": 0.7, "seed": 1}, "b": [1, 0, 1, 1, 0]},
                     out_pauses={"random": 0.5, "seed": 2})
    assert row["bit_exact"] and row["outputs_checked"] == 2 * 36 and row["cycles_exact"] is None
    assert all(c > add_cycles(layer) for c in row["cycles_all"])


def test_add_rtl_shared_unit(tmp_path):
    """The shared unit (several layers, ``layer_index`` input) in Icarus: the selected layer's constants."""
    rng = np.random.default_rng(4)
    layers = [random_add_layer(rng, 2, 3, 3, relu=True, name="add0"),
              random_add_layer(rng, 2, 3, 3, relu=False, name="add1")]
    su = StreamUnit(layers[1], AddUnit(layers), ("a", "b"), add_cycles(layers[1]))
    a, b = random_input(rng, layers[1]), random_input(rng, layers[1])
    row = run_stream(layers[1], "icarus", [a, b], test_dir=tmp_path, settings={"layer_index": 1}, unit=su)
    assert row["bit_exact"] and row["cycles_exact"]
