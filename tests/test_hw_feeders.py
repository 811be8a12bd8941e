"""The window and channel-group feeders in Amaranth's simulator: every emitted vector equals the numpy
im2col window / channel group of its output pixel, for odd geometries, strides, padding and held steps."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from sparsyn.hw.feeders import FEEDERS, feed_steps
from sparsyn.hw.plan import LayerPlan, EngineLimits
from sparsyn.sw.array_format import array_layouts
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import random_quant_layer


def plan_for(layer, feed, rows, lanes):
    meta = {"array": {"rows": rows, "cols": 1, "lanes": lanes}, "in_channels": layer.in_shape[0],
            "kernel": list(layer.kernel), "sections": 1, "feed": feed, "k": layer.k}
    from amaranth.lib import data
    entry = data.StructLayout({"w": 8})
    return LayerPlan(layer, None, ArrayConfig(rows, 1, lanes), entry, array_layouts(meta, entry), [], EngineLimits(),
                     feed=feed)


def expected_vector(x, layer, feed, lanes, desc, oy, ox):
    cin, h, w = layer.in_shape
    kh, kw = layer.kernel
    s, p = layer.stride, layer.padding
    out = []
    for l in range(lanes):
        if feed == "window":
            c, (dy, dx) = desc, divmod(l, kw)
        else:
            c, dy, dx = desc * lanes + l, 0, 0
        y, xx = oy * s - p + dy, ox * s - p + dx
        out.append(int(x[c, y, xx]) if c < cin and 0 <= y < h and 0 <= xx < w else 0)
    return out


def run_feeder(layer, feed, rows, lanes, descs, hold, passes=2):
    """Load a random image, scan ``passes`` passes (descriptors per pass and row) with each step held ``hold``
    cycles; returns (image, [(pass, vectors of each emitted pixel)])."""
    plan = plan_for(layer, feed, rows, lanes)
    dut = FEEDERS[feed](plan)
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=layer.in_shape)
    steps = feed_steps(feed, layer)
    got = []
    key = "channel" if feed == "window" else "group"

    async def bench(ctx):
        ctx.set(dut.busy, 0)
        for v in x.ravel():
            ctx.set(dut.act_in.valid, 1)
            ctx.set(dut.act_in.payload, int(v))
            await ctx.tick()
        ctx.set(dut.act_in.valid, 0)
        ctx.set(dut.busy, 1)
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        for ps in range(passes):
            for r in range(rows):
                ctx.set(dut.lanes[r], {"valid": 1, key: descs[ps][r]})
            for t in range(steps * hold):
                ctx.set(dut.issue, 1)
                ctx.set(dut.last, t % hold == hold - 1)
                await ctx.tick()
                if ctx.get(dut.x.valid):
                    got.append((ps - (1 if t < dut.latency else 0), [list(ctx.get(dut.x.payload[r])) for r in range(rows)]))
        ctx.set(dut.issue, 0)
        for _ in range(dut.latency + 1):
            await ctx.tick()
            if ctx.get(dut.x.valid):
                got.append((passes - 1, [list(ctx.get(dut.x.payload[r])) for r in range(rows)]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return x, got


@pytest.mark.parametrize("geom,hold", [
    (("conv", 3, 7, 6, 1, 3, 1, 1), 1),
    (("conv", 2, 9, 10, 1, 5, 2, 1), 1),
    (("conv", 3, 8, 7, 1, (3, 2), 3, 0), 1),
    (("conv", 2, 6, 6, 1, 3, 1, 1), 3),          # every step held 3 cycles (time-multiplexed PE)
    (("conv", 2, 5, 7, 1, (1, 3), 1, 0), 2),
])
def test_window_feeder_emits_every_window(geom, hold):
    layer = random_quant_layer(np.random.default_rng(0), *geom)
    kh, kw = layer.kernel
    cin = layer.in_shape[0]
    descs = [[(r + ps) % cin for r in range(2)] for ps in range(2)]
    x, got = run_feeder(layer, "window", 2, kh * kw, descs, hold)
    _, ho, wo = layer.out_shape
    assert len(got) == 2 * ho * wo
    for i, (ps, vec) in enumerate(got):
        oy, ox = divmod(i % (ho * wo), wo)
        for r in range(2):
            assert vec[r] == expected_vector(x, layer, "window", kh * kw, descs[i // (ho * wo)][r], oy, ox), (i, r)


@pytest.mark.parametrize("cin,lanes,stride,pad,hold", [(10, 4, 1, 0, 1), (7, 3, 2, 1, 1), (5, 5, 1, 0, 2)])
def test_group_feeder_emits_every_channel_group(cin, lanes, stride, pad, hold):
    layer = random_quant_layer(np.random.default_rng(1), "conv", cin, 5, 4, 1, 1, stride, pad)
    groups = -(-cin // lanes)
    descs = [[(r + ps) % groups for r in range(2)] for ps in range(2)]
    x, got = run_feeder(layer, "channels", 2, lanes, descs, hold)
    _, ho, wo = layer.out_shape
    assert len(got) == 2 * ho * wo
    for i, (ps, vec) in enumerate(got):
        oy, ox = divmod(i % (ho * wo), wo)
        for r in range(2):
            assert vec[r] == expected_vector(x, layer, "channels", lanes, descs[i // (ho * wo)][r], oy, ox), (i, r)


def test_window_feeder_needs_the_kernel_window_as_lanes():
    import gc
    import warnings
    layer = random_quant_layer(np.random.default_rng(0), "conv", 2, 5, 5, 1, 3, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the half-built component is never elaborated
        with pytest.raises(ValueError, match="needs 9 lanes"):
            FEEDERS["window"](plan_for(layer, "window", 2, 4))
        gc.collect()
