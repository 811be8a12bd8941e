"""Run the generated components in Amaranth's own simulator (unit tests, small layers).

The simulator is slow (pure Python): use it for small layers; whole models run in Verilator through
the cocotb benches.
"""
from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from sparsyn.sw.qmodel import AvgPoolLayer, MaxPoolLayer, QuantLayer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer


def check_pe_cases(pe, cases) -> int:
    """Simulate a :class:`~sparsyn.hw.pe.ProcessingElement` on ``cases`` of
    ``(entry_bits, xs, psum_in, product)``: load the entry, then (load low, ``entry_in`` changed to
    show the entry is held) apply ``xs``/``psum_in`` and assert ``psum_out == psum_in + product`` and
    ``x_out == xs`` one cycle later. Returns the number of cases checked."""
    width = len(pe.entry_in.as_value())
    checked = []

    async def bench(ctx):
        for entry, xs, psum, product in cases:
            ctx.set(pe.entry_in.as_value(), entry)
            ctx.set(pe.load, 1)
            await ctx.tick()
            ctx.set(pe.load, 0)
            ctx.set(pe.entry_in.as_value(), ~entry & ((1 << width) - 1))
            ctx.set(pe.x_in, list(xs))
            ctx.set(pe.psum_in, psum)
            await ctx.tick()
            assert ctx.get(pe.psum_out) == psum + product, (entry, xs, psum, product)
            assert list(ctx.get(pe.x_out)) == list(xs)
            checked.append(1)

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return len(checked)


async def _send(ctx, port, values):
    """Drive a stream with ``values`` (one element per cycle when ready)."""
    ctx.set(port.valid, 1)
    for v in values:
        ctx.set(port.payload, int(v))
        while True:
            _, _, ready = await ctx.tick().sample(port.ready)
            if ready:
                break
    ctx.set(port.valid, 0)


async def _receive(ctx, port, count, limit, ready_pattern=(1,)):
    """Collect ``count`` elements; ``ready`` follows ``ready_pattern`` cyclically (back-pressure)."""
    out = []
    spins = 0
    while len(out) < count:
        ready = ready_pattern[spins % len(ready_pattern)]
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and ready:
            out.append(int(payload))
        spins += 1
        if spins > limit:
            raise TimeoutError(f"stream delivered {len(out)} of {count} elements in {limit} cycles")
    ctx.set(port.ready, 0)
    return out


def simulate_engine(engine, images, max_cycles: int = 10_000_000,
                    ready_pattern=(1,)) -> tuple[list[np.ndarray], list[dict]]:
    """Run ``images`` (each a flat CHW int array) through a LayerEngine or ModelEngine one after another.

    Returns the flat CHW outputs and, per image, ``{"cycles": cycles port, "measured": cycles counted
    by the bench from the start pulse to done}``. ``ready_pattern`` throttles ``act_out.ready``.
    """
    n_out = engine.out_elements
    sim = Simulator(engine)
    sim.add_clock(1e-8)
    outs, stats = [], []

    async def bench(ctx):
        for img in images:
            await _send(ctx, engine.act_in, np.asarray(img).ravel())
            ctx.set(engine.start, 1)
            await ctx.tick()
            ctx.set(engine.start, 0)
            counted = 0
            while True:
                _, _, done = await ctx.tick().sample(engine.done)
                if done:
                    break
                counted += 1
                if counted > max_cycles:
                    raise TimeoutError(f"engine not done after {max_cycles} cycles")
            # tick().sample() sees values before the edge: the loop ends one edge after done rose
            stats.append({"cycles": ctx.get(engine.cycles), "measured": counted})
            outs.append(np.array(await _receive(ctx, engine.act_out, n_out,
                                                    4 * len(ready_pattern) * n_out + 16, ready_pattern), dtype=np.int64))

    sim.add_testbench(bench)
    sim.run()
    return outs, stats


def run_layer_rtl(layer: QuantLayer, packed: PackedLayer, x, array: ArrayConfig | None = None, **kw):
    """One image (int tensor/array of the layer's input shape) through the layer's engine (from the one
    factory, :mod:`sparsyn.hw.engines`) -> ((N, Ho, Wo) int64 output, stats, engine)."""
    from .engines import layer_engine
    engine = layer_engine(layer, packed, array, **kw)
    outs, stats = simulate_engine(engine, [np.asarray(x).reshape(-1)])
    return outs[0].reshape(layer.out_shape), stats[0], engine


def run_pool_rtl(layer: MaxPoolLayer | AvgPoolLayer, x) -> np.ndarray:
    """One image through the layer's pool unit (MaxPoolUnit, AvgPoolUnit) -> (C, Ho, Wo) int64."""
    from .pools import check_pool, pool_unit
    check_pool(layer)
    unit = pool_unit(layer)
    sim = Simulator(unit)
    sim.add_clock(1e-8)
    n_out = int(np.prod(layer.out_shape))
    result = []

    async def feeder(ctx):
        await _send(ctx, unit.i, np.asarray(x).ravel())

    async def sink(ctx):
        result.extend(await _receive(ctx, unit.o, n_out, 64 * (n_out + int(np.prod(layer.in_shape))) + 64))

    sim.add_testbench(feeder)
    sim.add_testbench(sink)
    sim.run()
    return np.array(result, dtype=np.int64).reshape(layer.out_shape)
