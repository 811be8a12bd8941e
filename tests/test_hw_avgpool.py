"""AvgPoolUnit against the golden model (window sums while streaming, requant, non-tiling maps, back-pressure), the
model engines with average pools (ModelEngine in Amaranth; a tiny DS-CNN-like chain on the sequenced engine in
Icarus and Verilator), and the refusals."""
import dataclasses

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from sparsyn.hw.avgpool import AVGPOOL_PARTIALS, AvgPoolUnit, avgpool_cycles, check_avgpool
from sparsyn.hw.pools import check_pool, pool_cycles
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_golden, run_layer
from sparsyn.sw.qmodel import AvgPoolLayer, FlattenLayer, MaxPoolLayer, QuantModel
from sparsyn.sw.requant import choose_multiplier
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import fit_requant, pack_layer, random_input, random_quant_layer


def avgpool_layer(c, h, w, kernel, stride=None, name="avg", mult=None, shift=None, relu=False):
    """An AvgPoolLayer of the given geometry; ``mult`` / ``shift`` default to ``choose_multiplier(1/area)``."""
    kh, kw = kernel
    sh, sw = stride or kernel
    if mult is None:
        mult, shift = choose_multiplier(1 / (kh * kw))
    return AvgPoolLayer(name, (c, h, w), (c, (h - kh) // sh + 1, (w - kw) // sw + 1), (kh, kw), (sh, sw),
                        mult, shift, relu)


def run_unit(pools, images, index=None, ready=(1,), gaps=(0,)):
    """Stream ``images`` (of ``pools[index]``, back to back) through one AvgPoolUnit; ``ready`` throttles
    ``o.ready`` cyclically, ``gaps`` inserts idle cycles before each input element. Returns the outputs (one
    array per image) and the cycle of every input and output handshake."""
    unit = AvgPoolUnit(pools if len(pools) > 1 else pools[0])
    layer = pools[index or 0]
    n_out = int(np.prod(layer.out_shape))
    got, t_in, t_out = [], [], []

    async def feeder(ctx):
        if index is not None:
            ctx.set(unit.layer_index, index)
        t = 0
        for k, v in enumerate(np.concatenate([np.asarray(x).ravel() for x in images])):
            for _ in range(gaps[k % len(gaps)]):
                await ctx.tick()
                t += 1
            ctx.set(unit.i.valid, 1)
            ctx.set(unit.i.payload, int(v))
            while True:
                _, _, rdy = await ctx.tick().sample(unit.i.ready)
                if rdy:
                    t_in.append(t)
                t += 1
                if rdy:
                    break
            ctx.set(unit.i.valid, 0)

    async def sink(ctx):
        t = 0
        while len(got) < n_out * len(images):
            rdy = ready[t % len(ready)]
            ctx.set(unit.o.ready, rdy)
            _, _, valid, y = await ctx.tick().sample(unit.o.valid, unit.o.payload)
            if valid and rdy:
                got.append(y)
                t_out.append(t)
            t += 1
            assert t < 50 * (len(images) * int(np.prod(layer.in_shape)) + 10), "the unit stopped"

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(feeder)
    sim.add_testbench(sink)
    sim.run()
    outs = [np.array(got[i * n_out:(i + 1) * n_out], dtype=np.int64).reshape(layer.out_shape)
            for i in range(len(images))]
    return outs, t_in, t_out


def check_images(layer, images, outs):
    for i, (x, y) in enumerate(zip(images, outs)):
        exp = run_layer(layer, torch.as_tensor(np.asarray(x)).reshape(1, *layer.in_shape))[0].numpy()
        bad = np.argwhere(y != exp)
        assert not len(bad), f"image {i} at {tuple(bad[0])}: expected {exp[tuple(bad[0])]}, got {y[tuple(bad[0])]}"


def extreme_images(layer):
    """All -128 and all 127: the widest window sums of both signs."""
    return [np.full(layer.in_shape, -128, np.int64), np.full(layer.in_shape, 127, np.int64)]


GEOMETRIES = {
    # name: (C, H, W, kernel, stride)
    "2x2_tiling": (3, 6, 6, (2, 2), None),
    "dscnn_24x5_over_25x5": (2, 25, 5, (24, 5), None),          # the last row is ignored
    "3x2_non_tiling_both_axes": (4, 7, 9, (3, 2), None),        # last row and last column ignored
    "whole_map": (5, 4, 6, (4, 6), None),                      # AdaptiveAvgPool2d(1)
    "stride_past_kernel": (2, 9, 8, (2, 2), (3, 3)),           # gaps between the windows
    "1x1": (2, 3, 4, (1, 1), None),                             # every element its own window
    "rows_only": (2, 7, 3, (3, 1), None),
    "one_window_per_band_full_width": (3, 6, 3, (2, 3), None),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_avgpool_matches_golden_cycle_exact(name):
    c, h, w, kernel, stride = GEOMETRIES[name]
    rng = np.random.default_rng(len(name))
    g = choose_multiplier(float(rng.uniform(1.0, 6.0)) / (kernel[0] * kernel[1]))
    layers = [avgpool_layer(c, h, w, kernel, stride),
              # a gain around 1/area that spreads the outputs (and clamps some), with ReLU
              avgpool_layer(c, h, w, kernel, stride, mult=g[0], shift=g[1], relu=True)]
    for layer in layers:
        check_avgpool(layer)
        images = [random_input(rng, layer)[0].numpy() for _ in range(2)] + extreme_images(layer)
        outs, t_in, t_out = run_unit([layer], images)
        check_images(layer, images, outs)
        # an element every cycle, o.ready high: the last output leaves avgpool_cycles after the last input, and
        # every tensor takes C*H*W + latency cycles from its first input to its last output (both counted)
        n_in, n_out = int(np.prod(layer.in_shape)), int(np.prod(layer.out_shape))
        assert t_out[-1] - t_in[-1] == avgpool_cycles(layer) == pool_cycles(layer) == AvgPoolUnit.latency
        for i in range(len(images)):
            assert t_out[(i + 1) * n_out - 1] - t_in[i * n_in] + 1 == n_in + AvgPoolUnit.latency
        assert t_in == list(range(len(t_in)))            # never stalls the input


def test_avgpool_random_shapes_and_requant():
    """Random geometries (stride >= kernel per axis) and random (mult, shift) over the whole contract range."""
    rng = np.random.default_rng(2024)
    for trial in range(12):
        c, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        kh, kw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        sh = kh + int(rng.integers(0, 2)) * int(rng.integers(0, 3))
        sw = kw + int(rng.integers(0, 2)) * int(rng.integers(0, 3))
        if trial % 3 == 0:
            mult, shift = int(rng.integers(0, 1 << 15)), int(rng.integers(1, 48))
        else:
            mult, shift = choose_multiplier(float(rng.uniform(0.3, 8.0)) / (kh * kw))
        layer = avgpool_layer(c, h, w, (kh, kw), (sh, sw), mult=mult, shift=shift, relu=bool(rng.integers(2)))
        check_avgpool(layer)
        images = [random_input(rng, layer)[0].numpy() for _ in range(2)] + extreme_images(layer)[:1]
        outs, t_in, t_out = run_unit([layer], images)
        check_images(layer, images, outs)
        assert t_out[-1] - t_in[-1] == avgpool_cycles(layer), layer


@pytest.mark.parametrize("ready,gaps", [((1, 0, 0, 1, 0), (0,)), ((0, 1), (0, 3, 0, 0, 1)), ((1,), (2, 0))])
def test_avgpool_back_pressure_and_input_gaps(ready, gaps):
    rng = np.random.default_rng(7)
    for layer in (avgpool_layer(3, 7, 9, (3, 2)), avgpool_layer(2, 25, 5, (24, 5)), avgpool_layer(2, 3, 4, (1, 1))):
        images = [random_input(rng, layer)[0].numpy() for _ in range(2)]
        outs, t_in, t_out = run_unit([layer], images, ready=ready, gaps=gaps)
        check_images(layer, images, outs)
        if ready == (1,):                 # gaps in the input only: still avgpool_cycles after the last input
            assert t_out[-1] - t_in[-1] == avgpool_cycles(layer)


def test_avgpool_unit_shared_by_layers():
    """One unit for three pools (``layer_index``): per-layer geometry, multiplier, shift and clamp; a layer with a
    single window per band after one with three reads its partial sum back in the cycle it is written."""
    rng = np.random.default_rng(3)
    pools = [avgpool_layer(2, 6, 9, (2, 3), name="a"),
             avgpool_layer(3, 6, 3, (3, 3), name="b", relu=True),
             avgpool_layer(1, 25, 5, (24, 5), name="c", mult=12345, shift=19)]
    for index in (2, 0, 1):
        layer = pools[index]
        images = [random_input(rng, layer)[0].numpy() for _ in range(2)]
        outs, t_in, t_out = run_unit(pools, images, index=index)
        check_images(layer, images, outs)
        assert t_out[-1] - t_in[-1] == avgpool_cycles(layer)


def test_avgpool_refusals():
    """What the unit cannot run is refused in one line before a unit exists."""
    def refused(layer, pattern):
        with pytest.raises(SparsynError, match=pattern) as err:
            check_pool(layer)
        assert "\n" not in str(err.value)

    overlapping = avgpool_layer(2, 6, 6, (3, 3), (2, 2))
    refused(overlapping, "AvgPool2d with stride < kernel runs in the golden model only; use stride = kernel")
    refused(avgpool_layer(2, 6, 6, (2, 3), (2, 1)), "stride < kernel")
    wide = avgpool_layer(1, 2, 2 * (AVGPOOL_PARTIALS + 1), (2, 2))
    refused(wide, f"{AVGPOOL_PARTIALS + 1} windows per row band exceed the unit's {AVGPOOL_PARTIALS} partial sums")
    refused(dataclasses.replace(avgpool_layer(1, 4, 4, (2, 2)), mult=1 << 15), "mult 32768 is outside")
    refused(dataclasses.replace(avgpool_layer(1, 4, 4, (2, 2)), shift=0), "shift 0 is outside 1..47")
    refused(dataclasses.replace(avgpool_layer(1, 4, 4, (2, 2)), out_shape=(1, 3, 3)), "output shape")
    refused(avgpool_layer(1, 4, 4, (2, 2)).__class__("big", (1, 4, 4), (1, 1, 1), (5, 5), (5, 5), 1, 1),
            "does not fit the 4x4 map")
    check_pool(avgpool_layer(2, 25, 5, (24, 5)))                 # DS-CNN's pool passes silently


def test_avgpool_needs_no_image_buffer():
    """DS-CNN's pool (64x25x5, 8000 elements) keeps one running sum and one partial sum: no memory at all; a 2x2
    pool over a 32-wide map keeps its 16 partial sums of a band in one small memory (16-bit: area 4 needs 10)."""
    from sparsyn.boards.fit import memory_census
    assert memory_census(AvgPoolUnit(avgpool_layer(64, 25, 5, (24, 5)))) == []
    (mem,) = memory_census(AvgPoolUnit(avgpool_layer(8, 32, 32, (2, 2))))
    assert (mem.depth, mem.width, mem.sync_reads, mem.comb_reads) == (16, 10, 1, 0)


# ------------------------------------------------------------------------------------------- the model engines
ARRAY = ArrayConfig(2, 2)


def depthwise(rng, channels, h, w, name):
    """A random depthwise 3x3 conv (padding 1) as its block-diagonal matrix."""
    layer = random_quant_layer(rng, "conv", channels, h, w, channels, 3, 1, 1, name=name)
    owner = np.arange(layer.n)[:, None] == (np.arange(layer.k) // 9)[None, :]
    return fit_requant(rng, dataclasses.replace(layer, weight=np.where(owner, layer.weight, 0), groups=channels))


def tiny_dscnn(seed=0, variant="plain"):
    """DS-CNN in miniature, integer layers built directly: a non-square first conv (5x3, stride (2, 1), padding
    (2, 1)) on 1x13x5 -> 4x7x5, a depthwise 3x3 + pointwise 1x1 block -> 5x7x5, AvgPool2d((6, 5)) over the
    7x5 map (its last row ignored) -> 5x1x1, flatten, linear -> 4 logits.

    ``variant``: ``"maxpool"``: a 1x1 max-pool right after the first conv too (pools of both kinds on one
    engine); ``"two_avg"``: an AvgPool2d((2, 1)) after the first conv (7x5 -> 3x5, the last row ignored, five
    partial sums per band) and the block on 4x3x5, its AvgPool2d((3, 5)) the whole map: two average pools that
    share one unit on the sequenced engine, their values fields of the descriptor table."""
    rng = np.random.default_rng(seed)
    first = random_quant_layer(rng, "conv", 1, 17, 7, 4, (5, 3), name="conv1")
    first = fit_requant(rng, dataclasses.replace(first, in_shape=(1, 13, 5), out_shape=(4, 7, 5), stride=(2, 1),
                                                 padding=(2, 1)))
    layers, h = [first], 7
    if variant == "maxpool":
        layers.append(MaxPoolLayer("max1", (4, 7, 5), (4, 7, 5), 1, 1, 0))
    if variant == "two_avg":
        layers.append(avgpool_layer(4, 7, 5, (2, 1), name="avg1", relu=True))
        h = 3
    layers += [depthwise(rng, 4, h, 5, "dw"),
               fit_requant(rng, random_quant_layer(rng, "conv", 4, h, 5, 5, 1, relu=False, name="pw")),
               avgpool_layer(5, h, 5, (h - 1 if h == 7 else h, 5), name="avg"),
               FlattenLayer("flat", (5, 1, 1), (5, 1, 1)),
               random_quant_layer(rng, "linear", 5, 1, 1, 4, relu=False, name="fc")]
    model = QuantModel("tiny_avg", (1, 13, 5), 0.1, layers, 4)
    return model, {l.name: pack_layer(l, array=ARRAY) for l in model.compute_layers}


def model_images(model, n, seed=1):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.integers(-128, 128, size=(n, *model.input_shape)), dtype=torch.int64)


def test_model_engine_with_avgpool():
    """The per-layer ModelEngine (Amaranth simulator): bit-exact, and the exact cycle model counts the average
    pool's hand-over (its elements one per cycle, its pipeline, the start cycle)."""
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.hw.model_engine import ModelEngine, plan_model
    model, packed = tiny_dscnn(variant="maxpool")
    plan = plan_model(model, packed, ARRAY)
    assert [p.kind for s in plan.segments for p in s.pools] == ["maxpool", "avgpool"]
    x = model_images(model, 2)
    outs, stats = simulate_engine(ModelEngine(plan), [x[i].numpy().ravel() for i in range(2)])
    gold = run_golden(model, x)
    assert len(np.unique(gold[-2].numpy())) > 3          # the pooled values spread (the requant is exercised)
    for i in range(2):
        assert np.array_equal(outs[i], gold[-1][i].numpy().ravel())
        assert stats[i]["measured"] == stats[i]["cycles"] == plan.cycles(x[i].numpy().ravel())


@pytest.mark.parametrize("variant", ["maxpool", "two_avg"])
def test_sequenced_engine_with_avgpool_amaranth(variant):
    """The sequenced engine in Amaranth's simulator: a pool unit per (position, kind), bit- and cycle-exact; the
    average pools' values are fields of the descriptor table where they differ between the pools sharing a unit."""
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.hw.sequenced_engine import SequencedEngine, plan_sequenced
    model, packed = tiny_dscnn(variant=variant)
    plan = plan_sequenced(model, packed, ARRAY)
    engine = SequencedEngine(plan)
    fields = {f.name: plan.descriptor.values(f.name) for f in plan.descriptor.fields if f.name.startswith("AvgPool")}
    if variant == "maxpool":
        assert engine.unit_keys == [(0, "maxpool"), (0, "avgpool")] and not fields
        assert plan.step_aliases == {"max1": 0, "avg": 2}
    else:
        assert engine.unit_keys == [(0, "avgpool")] and engine.unit_pools == [[model.layer("avg1"), model.layer("avg")]]
        # per step (conv1, dw, pw, fc): the pool after it, 0 where none
        assert fields["AvgPoolUnit.wo_last"] == [4, 0, 0, 0] and fields["AvgPoolUnit.kh_last"] == [1, 0, 2, 0]
        assert fields["AvgPoolUnit.relu"] == [1, 0, 0, 0]
    x = model_images(model, 2, seed=2)
    outs, stats = simulate_engine(engine, [x[i].numpy().ravel() for i in range(2)],
                                  max_cycles=4 * plan.cycle_model["total"])
    gold = run_golden(model, x)
    for i in range(2):
        assert np.array_equal(outs[i], gold[-1][i].numpy().ravel())
        assert stats[i]["measured"] == stats[i]["cycles"] == plan.cycles(x[i].numpy().ravel())


@pytest.mark.filterwarnings("ignore:.*created but never used")      # only the pool unit is converted here
def test_generate_builds_avgpool_modules():
    """``sparsyn generate``'s module list: one AvgPoolUnit per average pool, its cycles from the pool model."""
    from sparsyn.hw.generate import build_modules, convert
    model, packed = tiny_dscnn(variant="maxpool")
    mods = {layer.name: (unit, rec) for layer, unit, _, rec in build_modules(model, packed, ARRAY) if layer is not None}
    unit, rec = mods["avg"]
    assert isinstance(unit, AvgPoolUnit) and rec["kind"] == "avgpool"
    assert rec["cycles"]["total"] == AvgPoolUnit.latency and mods["max1"][1]["kind"] == "maxpool"
    assert "module sparsyn_avg" in convert(unit, "sparsyn_avg")
    import gc
    del mods, unit
    gc.collect()                      # the unconverted units' warnings fall under this test's filter


def test_engines_refuse_unrunnable_pools():
    from sparsyn.hw.model_engine import plan_model
    model, packed = tiny_dscnn()
    i = [l.name for l in model.layers].index("avg")
    bad = dataclasses.replace(model, layers=model.layers[:i] + [avgpool_layer(5, 7, 5, (3, 3), (2, 2), name="ov")]
                              + model.layers[i + 1:])
    bad.layers[i + 1] = FlattenLayer("flat", (5, 3, 2), (30, 1, 1))
    bad.layers[i + 2] = random_quant_layer(np.random.default_rng(0), "linear", 30, 1, 1, 4, name="fc")
    with pytest.raises(SparsynError, match="avgpool ov: AvgPool2d with stride < kernel runs in the golden model only"):
        plan_model(bad, {**packed, "fc": pack_layer(bad.layers[i + 2], array=ARRAY)}, ARRAY)
    first = dataclasses.replace(model, input_shape=(4, 7, 5), layers=[avgpool_layer(4, 7, 5, (7, 5), name="gap")]
                                + [FlattenLayer("f", (4, 1, 1), (4, 1, 1)),
                                   random_quant_layer(np.random.default_rng(0), "linear", 4, 1, 1, 2, name="fc2")])
    with pytest.raises(SparsynError, match="starts with avgpool gap; the ModelEngine needs a conv/linear first"):
        plan_model(first, {"fc2": pack_layer(first.layers[-1], array=ARRAY)}, ARRAY)

    @dataclasses.dataclass
    class MedianPool:                                   # a pool kind no unit runs
        name: str
        in_shape: tuple
        out_shape: tuple
        kind: str = "medianpool"
        inputs: tuple = ()
    odd = dataclasses.replace(model, layers=model.layers[:i] + [MedianPool("med", (5, 7, 5), (5, 1, 1))]
                              + model.layers[i + 1:])
    with pytest.raises(SparsynError, match="layer med of kind medianpool has no hardware unit") as err:
        plan_model(odd, packed, ARRAY)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("variant", ["plain", "two_avg"])
def test_sequenced_engine_with_avgpool_rtl(variant, simulator, tmp_path):
    """The tiny DS-CNN-like chain (non-square conv, depthwise + pointwise, AvgPool over a non-tiling map,
    flatten, linear; and with a second average pool sharing the unit) on the sequenced engine in Icarus and
    Verilator: every logit and every image's cycles."""
    from sparsyn.sim.check import run_sequenced
    model, packed = tiny_dscnn(variant=variant)
    x = model_images(model, 2, seed=3)
    res = run_sequenced(model, packed, ARRAY, simulator, x, test_dir=tmp_path)
    assert res["bit_exact"] and res["cycles_exact"] and res["outputs_checked"] == 2 * 4
    assert res["cycles_measured"] == res["cycles_model"]
