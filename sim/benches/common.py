"""Shared pieces of the cocotb benches: layer (de)serialisation, clock/reset, bulk stream drivers.

The parent process (:func:`sparsyn.sim.runner.run_bench`) hands each bench a JSON parameter file;
layers travel through :func:`layer_to_json` / :func:`layer_from_json` so that the bench can run the
golden model (:func:`sparsyn.sw.golden.run_layer`) itself as its transaction-level model.

Stream drivers follow the handshake rule of ``amaranth.lib.stream``: a transfer happens on a rising
edge where ``valid`` and ``ready`` are both high. They drive right after a rising edge, then sample
in the ``ReadOnly`` phase of the same time step (settled values, identical in Icarus and Verilator)
and only then wait for the edge that performs the transfer.
"""
from __future__ import annotations

import itertools

import numpy as np

from sparsyn.sw.qmodel import QuantLayer


def layer_to_json(layer: QuantLayer) -> dict:
    """A QuantLayer as plain JSON (everything the golden model and the hardware generator read)."""
    return {"name": layer.name, "kind": layer.kind, "in_shape": list(layer.in_shape),
            "out_shape": list(layer.out_shape), "kernel": list(layer.kernel), "stride": layer.stride,
            "padding": layer.padding, "weight": np.asarray(layer.weight).tolist(),
            "bias": [int(v) for v in layer.bias], "mult": [int(v) for v in layer.mult],
            "shift": [int(v) for v in layer.shift], "relu": bool(layer.relu),
            "weight_bits": layer.weight_bits, "scheme": layer.scheme}


def layer_from_json(d: dict) -> QuantLayer:
    n = len(d["bias"])
    return QuantLayer(name=d["name"], kind=d["kind"], in_shape=tuple(d["in_shape"]),
                      out_shape=tuple(d["out_shape"]), kernel=tuple(d["kernel"]), stride=d["stride"],
                      padding=d["padding"], weight=np.asarray(d["weight"], dtype=np.int64).reshape(n, -1),
                      bias=np.asarray(d["bias"], dtype=np.int64), mult=np.asarray(d["mult"], dtype=np.int64),
                      shift=np.asarray(d["shift"], dtype=np.int64), relu=d["relu"], in_scale=1.0,
                      out_scale=1.0, weight_scale=np.ones(n), weight_bits=d["weight_bits"], scheme=d["scheme"])


def pause_pattern(spec):
    """``None`` -> always active; a list of 0/1 -> that pattern repeated (back-pressure / bubbles);
    ``{"random": p, "seed": s}`` -> active with probability ``p`` each cycle (seeded: the same run twice)."""
    if isinstance(spec, dict):
        import random
        rng, p = random.Random(spec.get("seed", 0)), float(spec["random"])
        return (int(rng.random() < p) for _ in itertools.count())
    return itertools.repeat(1) if not spec else itertools.cycle(spec)


async def start_clock(dut, period_ns: int = 10, **idle):
    """Drive the inputs named in ``idle`` (name=value) first, then start ``dut.clk`` and hold
    ``dut.rst`` for two cycles. (Inputs left undriven are Z, and registers would shift Z in.)"""
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge
    for name, value in idle.items():
        getattr(dut, name).value = value
    Clock(dut.clk, period_ns, unit="ns").start()
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def push_stream(dut, prefix: str, values, pauses=None, width: int = 8):
    """Send ``values`` (ints, two's complement in ``width`` bits) through stream ``prefix`` (valid/ready/payload)."""
    from cocotb.triggers import ReadOnly, RisingEdge
    valid, ready, payload = (getattr(dut, f"{prefix}__{s}") for s in ("valid", "ready", "payload"))
    mask = (1 << width) - 1
    gate = pause_pattern(pauses)
    i, n = 0, len(values)
    while i < n:
        on = next(gate)
        valid.value = on
        payload.value = int(values[i]) & mask
        await ReadOnly()
        accepted = on and int(ready.value) == 1
        await RisingEdge(dut.clk)
        if accepted:
            i += 1
    valid.value = 0


async def pull_stream(dut, prefix: str, count: int, pauses=None, timeout_cycles: int = 100000) -> list[int]:
    """Receive ``count`` signed payloads from stream ``prefix``; raises if it stalls ``timeout_cycles``."""
    from cocotb.triggers import ReadOnly, RisingEdge
    valid, ready, payload = (getattr(dut, f"{prefix}__{s}") for s in ("valid", "ready", "payload"))
    gate = pause_pattern(pauses)
    out, idle = [], 0
    while len(out) < count:
        on = next(gate)
        ready.value = on
        await ReadOnly()
        if on and int(valid.value) == 1:
            out.append(payload.value.to_signed())
            idle = 0
        else:
            idle += 1
            if idle > timeout_cycles:
                raise AssertionError(f"{prefix} stalled: {len(out)} of {count} outputs after "
                                     f"{timeout_cycles} idle cycles")
        await RisingEdge(dut.clk)
    ready.value = 0
    return out
