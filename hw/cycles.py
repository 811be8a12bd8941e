"""Analytic cycle model of the LayerEngine, exact for its FSM (see :mod:`sparsyn.hw.engine`).

Every latency here is read from the component that owns it (:class:`~.control.LayerControl`,
:class:`~.activation.ActivationBuffer`, :class:`~.array.SystolicArray` via :func:`~.array.array_latency`,
:class:`~.accumulator.AccumulatorBuffer`, :class:`~.requant_sequencer.RequantSequencer`), so a
component that changes its pipeline changes the model with it.

Per section: ``LOAD`` reads the R lane-descriptor words of its first pass (R + the ROM read latency
1: :meth:`LayerControl.load_cycles`). Each pass ``STREAM``s one output pixel per cycle (Ho*Wo
cycles) while its PE rows are loaded one per cycle just ahead of its first pixel. A pass followed
by another pass of the same section hands over without draining: the next pass's first pixel may
enter as soon as the last pixel has left row 0's last column, ``Ho*Wo + C - 1`` cycles after its own
first pixel, and no earlier than the R+1 cycles the lane-descriptor preload takes nor the 4 the
accumulator read-modify-write needs (:func:`pass_period`). The section's last pass drains: its last
pixel, issued in cycle Ho*Wo-1, reaches the array after the activation read (2: registered address,
block RAM), leaves it R+C+2 cycles later (pipelined PEs) and is added into the accumulator buffer
(registered sum) in the next cycle -> Ho*Wo + R + C + 5 cycles (:func:`last_pass_cycles`). Then
``REQUANT`` of the section's real channels, one value per cycle plus the requant sequencer's
pipeline (accumulator read 2: block RAM, register; + requant unit 6) -> channels*Ho*Wo + 8 cycles
(:func:`requant_cycles`).

With another activation feeder (:mod:`.feeders`) a pass issues that feeder's steps instead of Ho*Wo pixels
(a kernel-window scan has ``Ho*((Wo-1)*stride + kw)``), each held for the PE's phases (a time-multiplexed
datapath): the same formulas with ``steps * phases`` in place of Ho*Wo for the STREAM phases; requant
still takes one cycle per output value.
"""
from __future__ import annotations

import numpy as np

from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig, TileProgram

from .accumulator import AccumulatorBuffer
from .activation import ActivationBuffer
from .array import array_latency
from .control import LayerControl
from .requant_sequencer import RequantSequencer

#: The LayerEngine builds its array with pipelined PEs (each PE's product registered, see
#: :class:`sparsyn.hw.pe.ProcessingElement`): the array latency is R + C + 2.
PIPELINED_PES = True


def load_cycles(rows: int) -> int:
    """The LOAD phase of a section (:meth:`LayerControl.load_cycles`)."""
    return LayerControl.load_cycles(rows)


def pass_period(rows: int, cols: int, pixels: int) -> int:
    """Cycles between the first pixels of two consecutive passes of a section."""
    # the next pass's first pixel follows the last one out of row 0's last column; its lane
    # descriptors are preloaded (LOAD's R reads) during this pass; a pixel's accumulator word is
    # written back (write_latency - 1 cycles after the array output) before the next pass reads it
    # (read_ahead cycles before its array output)
    acc = AccumulatorBuffer
    return max(pixels + cols - 1, LayerControl.load_cycles(rows), acc.read_ahead + acc.write_latency)


def last_pass_cycles(rows: int, cols: int, pixels: int, feed_latency: int = ActivationBuffer.latency) -> int:
    """The last pass of a section: issue ``pixels`` vectors (the feeder's steps; the last one always
    emits), then wait until the last accumulator write (= pixels + R + C + 5 with pipelined PEs)."""
    return (pixels + feed_latency + array_latency(rows, cols, PIPELINED_PES) - 1
            + AccumulatorBuffer.write_latency)


def requant_cycles(channels: int, pixels: int) -> int:
    """Busy time of the requant sequencer for one section: one value per cycle plus its pipeline."""
    return channels * pixels + RequantSequencer.latency


def layer_cycles(sections: list[tuple[int, int]], array: ArrayConfig, layer: QuantLayer, steps: int | None = None,
                 feed_latency: int = ActivationBuffer.latency, pe_macs: int | None = None) -> dict:
    """Cycles of one image through the LayerEngine.

    ``steps``: issue cycles of one pass (the activation feeder's steps, :func:`sparsyn.hw.feeders.feed_steps`,
    times the cycles a time-multiplexed PE holds each; default Ho*Wo, one per output pixel);
    ``feed_latency``: the feeder's ``issue`` -> ``x`` latency;
    ``pe_macs``: multiply-accumulates one PE can do per cycle (default its L lanes; a pattern PE has L = kh*kw
    lanes but n multipliers) — the denominator of ``utilization``, also returned.

    ``sections``: (passes, real output channels) of each section, in order (from the pass table,
    see :class:`sparsyn.hw.plan.LayerPlan`); ``array``: R x C with the PE lanes L.
    ``load`` and ``stream`` are the compute FSM's phases; ``requant`` is the requant process's busy
    time, which overlaps the next section's passes; ``requant_exposed`` = ``total - load - stream`` is
    the part that is not hidden (stalls, the last section's requant, hand-over cycles).

    Also returns ``passes``, ``sections``, ``pixels``, ``array_latency`` and ``useful_macs`` /
    ``utilization`` (useful MACs / (R*C*L*total), L = the PE lanes).
    """
    r, c = array.rows, array.cols
    per_section = [n for n, _ in sections]
    channels = [ch for _, ch in sections]
    passes = sum(per_section)
    pixels = layer.pixels
    steps = pixels if steps is None else steps
    period, last = pass_period(r, c, steps), last_pass_cycles(r, c, steps, feed_latency)
    load = len(per_section) * load_cycles(r)
    stream = sum((n - 1) * period + last for n in per_section)
    requant = sum(requant_cycles(n, pixels) for n in channels)
    # cycle-exact replay of the FSM: t = cycles elapsed; the requant process is busy in cycles
    # [launch+1, rq_free) and the compute FSM may only launch a section while it is idle
    t, rq_free = 0, 0
    for n_pass, ch in zip(per_section, channels):
        t += load_cycles(r) + (n_pass - 1) * period + last
        launch = t - 1 if rq_free <= t - 1 else max(t, rq_free)   # in the last STREAM cycle, or WAIT_REQUANT
        t = launch + 1
        rq_free = launch + 1 + requant_cycles(ch, pixels)
    total = max(t, rq_free) + 1                                   # FINISH sees the requant idle, sets done
    macs = useful_macs(layer)
    return {"total": total, "load": load, "stream": stream, "requant": requant,
            "requant_exposed": total - load - stream,
            "passes": passes, "sections": len(per_section), "pixels": pixels, "steps": steps,
            "array_latency": array_latency(r, c, PIPELINED_PES), "useful_macs": macs,
            "pe_macs": pe_macs or array.lanes,
            "utilization": utilization(macs, r, c, total, pe_macs or array.lanes)}


def program_cycles(program: TileProgram, layer: QuantLayer, feed: str = "lanes", pe_macs: int | None = None,
                   phases: int = 1) -> dict:
    """:func:`layer_cycles` of a TileProgram before it is packed (what-if figures in benchmarks)."""
    from .feeders import feed_steps, feeder_class
    r, c = program.array.rows, program.array.cols
    sections = [(max(1, -(-len(slots) // r)), min(c, program.n - s * c)) for s, slots in enumerate(program.sections)]
    return layer_cycles(sections, program.array, layer, feed_steps(feed, layer) * phases, feeder_class(feed).latency,
                        pe_macs)


def useful_macs(layer: QuantLayer) -> int:
    """Nonzero-weight MACs per image: nonzeros of the N x K matrix times Ho*Wo."""
    return int(np.count_nonzero(layer.weight)) * layer.pixels


def utilization(macs: int, rows: int, cols: int, cycles: int, lanes: int = 1) -> float:
    """PE utilization = useful MACs / (PEs x lanes x cycles): a PE with L lanes can do L MACs
    (or, ternary, L adds) per cycle, so 1.0 means every lane of every PE did useful work every cycle."""
    return macs / (rows * cols * lanes * cycles) if cycles else 0.0


def model_cycles(layer_totals: list[int], handovers: list[tuple[int, list[int]]]) -> dict:
    """Cycles of the ModelEngine from start to done.

    ``layer_totals``: each LayerEngine's ``total``; ``handovers[i]``: (elements leaving LayerEngine i,
    [cycles of each pool between it and LayerEngine i+1 from its last input to its last output,
    :func:`sparsyn.hw.pools.pool_cycles`: a max-pool's scan, an average-pool's pipeline]). Each layer costs
    its total plus one cycle in which the controller sees ``done``; each hand-over costs one cycle per
    element, the pools' time after their last input, and one cycle to start the next layer.
    """
    layers = sum(t + 1 for t in layer_totals)
    transfer = sum(n + sum(pools) + 1 for n, pools in handovers)
    return {"total": layers + transfer, "layers": layers, "transfer": transfer}
