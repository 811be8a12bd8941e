"""LayerEngine end to end in Amaranth's simulator vs the golden model; cycle model vs measured cycles."""
import numpy as np
import pytest

from sparsyn.hw.amaranth_sim import simulate_engine
from sparsyn.hw.cycles import program_cycles, useful_macs, utilization
from sparsyn.hw.engines import layer_engine, plan_layer
from sparsyn.hw.plan import EngineLimits
from sparsyn.hw.requant import REQUANT_LATENCY
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import first_mismatch, run_layer
from sparsyn.sw.requant import MAX_SHIFT, MULT_BITS, choose_multiplier, clamp_range
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.testing import (pack_layer, random_input, random_maxpool_layer, random_pattern_layer,
                                random_quant_layer)

# (kind, cin, h, w, cout, kernel, stride, padding), array RxC, extra options
LAYERS = {
    "conv3x3_pad1_odd": (("conv", 3, 6, 6, 5, 3, 1, 1), (4, 4), {}),
    "conv3x3_stride2": (("conv", 2, 7, 7, 3, 3, 2, 1), (2, 3), {}),
    "conv1x1": (("conv", 4, 5, 5, 3, 1, 1, 0), (3, 2), {}),
    "conv5x5_pad2": (("conv", 1, 6, 6, 2, 5, 1, 2), (4, 4), {"relu": False}),
    "conv_rect_kernel_1x1_array": (("conv", 2, 5, 6, 3, (3, 2), 2, 0), (1, 1), {}),
    "linear_k_gt_r_n_gt_c": (("linear", 19, 1, 1, 11, 1, 1, 0), (4, 4), {"relu": False}),
    "conv_sparse": (("conv", 3, 5, 5, 6, 3, 1, 1), (3, 4), {"density": 0.3}),
    "linear_tall_array": (("linear", 30, 1, 1, 5, 1, 1, 0), (6, 2), {"relu": False}),  # pass period = R+1
    "conv1x1_requant_bound": (("conv", 2, 6, 6, 7, 1, 1, 0), (2, 3), {}),       # sections wait for requant
    "conv_2x2_output": (("conv", 4, 4, 4, 3, 3, 2, 0), (5, 2), {"relu": False}),
}


def check(layer, x, y):
    exp = run_layer(layer, x[None] if x.dim() == 3 else x)[0].numpy()
    mm = first_mismatch([layer.name], [exp[None]], [np.asarray(y).reshape(exp.shape)[None]])
    assert mm is None, str(mm)
    return exp


@pytest.mark.parametrize("name", list(LAYERS))
def test_engine_matches_golden_and_cycle_model(name):
    args, (r, c), opts = LAYERS[name]
    rng = np.random.default_rng(len(name))
    layer = random_quant_layer(rng, *args, name=name, **opts)
    array = ArrayConfig(r, c)
    engine = layer_engine(layer, pack_layer(layer, array=array))
    images = [random_input(rng, layer)[0] for _ in range(2)]
    outs, stats = simulate_engine(engine, [x.numpy().ravel() for x in images])
    for x, y in zip(images, outs):
        exp = check(layer, x, y)
        lo, hi = clamp_range(layer.relu)
        # not a degenerate layer (tiny outputs: at least a few distinct values)
        assert len(np.unique(exp)) > min(3, exp.size // 3) and exp.min() >= lo and exp.max() <= hi
    # the engine's model (from its pass-table ROM) is the model of the scheme's TileProgram
    model = program_cycles(get_scheme("dense")(array=array).schedule(layer)[0], layer)
    assert engine.model == model
    for st in stats:
        # the cycles port, the bench's own count and the analytic model agree exactly
        assert st["cycles"] == st["measured"] == model["total"], (st, model)
    assert model["total"] == model["load"] + model["stream"] + model["requant_exposed"]
    # requant overlaps the next section: what stays exposed is at most its busy time + hand-overs
    assert 0 < model["requant_exposed"] <= model["requant"] + model["sections"] + 1
    if model["sections"] == 1:
        assert model["requant_exposed"] == model["requant"] + 1
    assert model["useful_macs"] == int(np.count_nonzero(layer.weight)) * layer.pixels == useful_macs(layer)
    assert model["utilization"] == pytest.approx(model["useful_macs"] / (r * c * model["total"]))
    assert 0 < model["utilization"] <= 1


def test_engine_output_back_pressure_and_restart():
    rng = np.random.default_rng(7)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 3, 3, 1, 1)
    engine = layer_engine(layer, pack_layer(layer, array=ArrayConfig(2, 2)))
    images = [random_input(rng, layer)[0] for _ in range(3)]
    outs, stats = simulate_engine(engine, [x.numpy().ravel() for x in images], ready_pattern=(1, 0, 0, 1, 1, 0))
    for x, y in zip(images, outs):
        check(layer, x, y)
    assert {(s["cycles"], s["measured"]) for s in stats} == {(engine.model["total"],) * 2}


def test_cycle_model_structure():
    rng = np.random.default_rng(3)
    layer = random_quant_layer(rng, "conv", 3, 6, 6, 9, 3, 1, 1)
    program = get_scheme("dense")(array=ArrayConfig(4, 4)).schedule(layer)[0]
    m = program_cycles(program, layer)
    assert plan_layer(layer, pack_layer(layer, array=ArrayConfig(4, 4))).model == m
    assert m["sections"] == 3 and m["passes"] == 3 * 7              # ceil(9/4) sections x ceil(27/4) passes
    assert m["load"] == m["sections"] * (4 + 1)                     # lane descriptors per section
    # per section: 6 overlapped passes of Ho*Wo + C - 1, then the last pass drains (Ho*Wo + R + C + 5)
    assert m["stream"] == 3 * (6 * (36 + 4 - 1) + (36 + 4 + 4 + 5))
    assert m["requant"] == 9 * 36 + 3 * (2 + REQUANT_LATENCY)         # acc read (RAM, register) + requant per section
    assert utilization(10, 2, 5, 0) == 0.0


def test_utilization_counts_every_lane_of_a_multi_lane_pe():
    """A ternary PE has T lanes: its capacity is R*C*T operations per cycle, so utilization stays <= 1."""
    rng = np.random.default_rng(5)
    layer = random_quant_layer(rng, "linear", 64, 1, 1, 16)
    layer.weight = rng.integers(-1, 2, size=layer.weight.shape)
    scheme = get_scheme("ternary")(array=ArrayConfig(4, 4), sparsity=0.0)
    program = scheme.schedule(layer)[0]
    arr = program.array
    assert arr.lanes > 1
    m = program_cycles(program, layer)
    plan = plan_layer(layer, scheme.pack(layer))
    assert plan.array == arr and plan.model == m
    assert m["utilization"] == pytest.approx(m["useful_macs"] / (4 * 4 * arr.lanes * m["total"]))
    assert 0 < m["utilization"] <= 1


def test_engine_refuses_layer_that_does_not_fit():
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "conv", 4, 8, 8, 4, 3, 1, 1, name="big")
    packed = pack_layer(layer, array=ArrayConfig(4, 4))
    with pytest.raises(SparsynError, match=r"layer big does not fit the activation buffer: needs 256 .*limit 100 "
                                           r"\(156 over\)"):
        layer_engine(layer, packed, limits=EngineLimits(act_elements=100))
    with pytest.raises(SparsynError, match="accumulator buffer"):
        layer_engine(layer, packed, limits=EngineLimits(acc_words=10))
    with pytest.raises(SparsynError, match="weight memory.*larger --array"):
        layer_engine(layer, packed, limits=EngineLimits(weight_depth=8))
    with pytest.raises(SparsynError, match="output buffer"):
        layer_engine(layer, packed, limits=EngineLimits(out_elements=255))
    # the plan alone refuses too (nothing is constructed before it succeeds)
    with pytest.raises(SparsynError, match="output buffer"):
        plan_layer(layer, packed, limits=EngineLimits(out_elements=255))


def test_engine_rejects_bad_layers():
    rng = np.random.default_rng(1)
    layer = random_quant_layer(rng, "linear", 8, 1, 1, 3, name="fc")
    array = ArrayConfig(2, 2)
    packed = pack_layer(layer, array=array)
    bad = random_quant_layer(np.random.default_rng(1), "linear", 8, 1, 1, 3, name="fc")
    bad.mult[1] = 1 << MULT_BITS
    with pytest.raises(SparsynError, match="fc: requant mult/shift outside"):
        layer_engine(bad, packed)
    with pytest.raises(SparsynError, match="fc: requant mult/shift outside"):
        pack_layer(bad, array=array)               # the ROM cannot hold it either: refused, not truncated
    bad.mult[1], bad.shift[0] = 1, MAX_SHIFT + 1
    with pytest.raises(SparsynError, match="mult/shift"):
        layer_engine(bad, packed)
    with pytest.raises(SparsynError, match="mult/shift"):
        pack_layer(bad, array=array)
    huge = random_quant_layer(np.random.default_rng(1), "linear", 8, 1, 1, 3, name="fc")
    huge.bias[0] = 2**31 - 10
    with pytest.raises(SparsynError, match="exceeds the 32-bit accumulator"):
        layer_engine(huge, pack_layer(huge, array=array))
    with pytest.raises(SparsynError, match="pool is a maxpool; engines run conv/linear"):
        layer_engine(random_maxpool_layer(2, 4, 4), packed)
    # the array is part of the packed layer: another one is refused in one line
    with pytest.raises(SparsynError, match=r"packed for 2x2, not 3x2") as err:
        layer_engine(layer, packed, ArrayConfig(3, 2))
    assert "\n" not in str(err.value)
    assert plan_layer(layer, packed, ArrayConfig(2, 2)).array == ArrayConfig(2, 2)


def test_random_quant_layer_helper():
    a = random_quant_layer(np.random.default_rng(9), "conv", 3, 7, 5, 4, (3, 1), 2, 1)
    b = random_quant_layer(np.random.default_rng(9), "conv", 3, 7, 5, 4, (3, 1), 2, 1)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.mult, b.mult)
    assert a.in_shape == (3, 7, 5) and a.out_shape == (4, 4, 4) and a.k == 9
    assert a.weight.min() == -128 and a.weight.max() == 127
    assert np.all((a.mult >= 1 << (MULT_BITS - 1)) & (a.mult < 1 << MULT_BITS))
    assert np.all((a.shift >= 1) & (a.shift <= MAX_SHIFT))
    lin = random_quant_layer(np.random.default_rng(9), "linear", 4, 2, 2, 3)
    assert lin.in_shape == (16, 1, 1) and lin.out_shape == (3, 1, 1) and lin.kernel == (1, 1)
    x = random_input(np.random.default_rng(0), a, batch=2)
    assert x.shape == (2, 3, 7, 5) and x.dtype.is_floating_point is False
    assert int(x.min()) == -128 and int(x.max()) == 127
    with pytest.raises(ValueError):
        random_quant_layer(np.random.default_rng(0), "pool", 1, 4, 4, 1)


def _hw_schemes():
    from sparsyn.hw.schemes import scheme_hardware
    from sparsyn.sw.schemes import scheme_names
    return [name for name in scheme_names()
            if name != "dense" and get_scheme(name).hardware and scheme_hardware(name).product is not None]


@pytest.mark.parametrize("scheme", _hw_schemes())
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_engine_runs_every_scheme_unchanged(scheme, kind):
    """The same array/engine with each scheme's PE and TileProgram (L > 1): bit-exact, exact cycles."""
    rng = np.random.default_rng(4)
    args = ("conv", 3, 5, 5, 5, 3, 1, 1) if kind == "conv" else ("linear", 20, 1, 1, 7)
    layer = random_quant_layer(rng, *args, scheme=scheme)
    array = ArrayConfig(3, 4)
    sch = get_scheme(scheme)(array=array)
    if scheme == "pattern":          # weights that keep one of the layer's patterns per kernel / channel group
        n, p = (4, 5) if kind == "conv" else (2, 6)   # the scheme's defaults: n=4 of 3x3, 2:4 vectors
        layer.weight = random_pattern_layer(rng, *args, n=n, patterns=p)[0].weight
    else:
        w = rng.normal(size=layer.weight.shape) * (rng.random(size=layer.weight.shape) < 0.4)
        layer.weight, _, layer.weight_bits = sch.quantize_weights(1, w)
    layer.weight = np.asarray(get_scheme(scheme).decode(sch.pack(layer)), dtype=np.int64)   # effective weights
    # rescale the requantization to the new weight magnitudes so outputs spread over the int8 range
    sigma = max(float(np.abs(layer.weight).sum(axis=1).mean()) * 40.0, 1.0)
    for n in range(layer.n):
        layer.mult[n], layer.shift[n] = choose_multiplier(float(rng.uniform(0.5, 2.0)) * 48.0 / sigma)
    layer.bias[:] = rng.integers(-int(sigma), int(sigma) + 1, size=layer.n)
    packed = sch.pack(layer)         # the ROMs hold the constants too: pack the final layer
    assert np.array_equal(get_scheme(scheme).decode(packed), layer.weight)
    assert all(np.array_equal(a, b) for a, b in zip(get_scheme(scheme).decode_constants(packed),
                                                   (layer.bias, layer.mult, layer.shift)))
    engine = layer_engine(layer, packed)
    assert engine.array.lanes > 1
    x = random_input(rng, layer)[0]
    outs, stats = simulate_engine(engine, [x.numpy().ravel()])
    exp = check(layer, x, outs[0])
    assert len(np.unique(exp)) > 3
    assert stats[0]["cycles"] == stats[0]["measured"] == engine.model["total"]
    sw = get_scheme(scheme)
    assert engine.model == program_cycles(sch.schedule(layer)[0], layer, packed.meta.get("feed", "lanes"),
                                          sw.pe_macs(packed), sw.pe_phases(packed))
