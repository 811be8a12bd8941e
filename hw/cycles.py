"""Analytic cycle model of the LayerEngine, exact for its FSM (see :mod:`sparsyn.hw.engine`).

Per section: ``LOAD`` reads the R lane-descriptor words of its first pass (R+1 cycles: one memory
read latency). Each pass ``STREAM``s one output pixel per cycle (Ho*Wo cycles) while its PE rows
are loaded one per cycle just ahead of its first pixel. A pass followed by another pass of the same
section hands over without draining: the next pass's first pixel may enter as soon as the last pixel
has left row 0's last column, ``Ho*Wo + C - 1`` cycles after its own first pixel, and no earlier than
the R+1 cycles the lane-descriptor preload takes nor the 4 the accumulator read-modify-write
needs (:func:`pass_period`). The section's last pass
drains: its last pixel, issued in cycle Ho*Wo-1, reaches the array after the activation read (2:
registered address, block RAM), leaves it R+C cycles later (pipelined PEs) and is added into the accumulator
buffer (registered sum) in the next cycle -> Ho*Wo + R + C + 3 cycles (:func:`last_pass_cycles`). Then ``REQUANT`` of the section's real channels, one
value per cycle plus the pipeline (accumulator read 1 + requant unit
:data:`~sparsyn.hw.requant.REQUANT_LATENCY`) -> channels*Ho*Wo + 1 + REQUANT_LATENCY cycles.
"""
from __future__ import annotations

import numpy as np

from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig, TileProgram

from .array import array_latency
from .requant import REQUANT_LATENCY

#: Cycles of the LOAD phase beyond R (the weight memory's read latency).
LOAD_EXTRA = 1
#: The LayerEngine's array registers each PE's product (see :class:`sparsyn.hw.pe.ProcessingElement`).
PIPELINED_PES = True
#: Activation-buffer read latency in front of the array (registered im2col address + block RAM read).
ACT_READ_LATENCY = 2
#: Accumulator read-modify-write: the array output is added to the word read for it and the
#: registered sum is written one cycle later; the last pass ends with that write.
ACC_WRITE_LATENCY = 2
#: The accumulator word is read this many cycles before the array output it is added to (block RAM
#: read, then a register in front of the adder).
ACC_READ_AHEAD = 2
#: Accumulator-buffer read latency in front of the requant unit.
ACC_READ_LATENCY = 1


def load_cycles(rows: int) -> int:
    return rows + LOAD_EXTRA


def pass_period(rows: int, cols: int, pixels: int) -> int:
    """Cycles between the first pixels of two consecutive passes of a section."""
    # a pixel's accumulator word is written back (ACC_WRITE_LATENCY - 1 cycles after the array output)
    # before the next pass reads it (ACC_READ_AHEAD cycles before its array output)
    return max(pixels + cols - 1, rows + LOAD_EXTRA, ACC_READ_AHEAD + ACC_WRITE_LATENCY)


def last_pass_cycles(rows: int, cols: int, pixels: int) -> int:
    """The last pass of a section: issue ``pixels`` vectors, then wait until the last accumulator
    write (= pixels + R + C)."""
    return pixels + ACT_READ_LATENCY + array_latency(rows, cols, PIPELINED_PES) - 1 + ACC_WRITE_LATENCY


def requant_cycles(channels: int, pixels: int) -> int:
    return channels * pixels + ACC_READ_LATENCY + REQUANT_LATENCY


def layer_cycles(sections: list[tuple[int, int]], array: ArrayConfig, layer: QuantLayer) -> dict:
    """Cycles of one image through the LayerEngine.

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
    load = len(per_section) * load_cycles(r)
    stream = sum((n - 1) * pass_period(r, c, pixels) + last_pass_cycles(r, c, pixels) for n in per_section)
    requant = sum(requant_cycles(n, pixels) for n in channels)
    # cycle-exact replay of the FSM: t = cycles elapsed; the requant process is busy in cycles
    # [launch+1, rq_free) and the compute FSM may only launch a section while it is idle
    t, rq_free = 0, 0
    for n_pass, ch in zip(per_section, channels):
        t += load_cycles(r) + (n_pass - 1) * pass_period(r, c, pixels) + last_pass_cycles(r, c, pixels)
        launch = t - 1 if rq_free <= t - 1 else max(t, rq_free)   # in the last STREAM cycle, or WAIT_REQUANT
        t = launch + 1
        rq_free = launch + 1 + requant_cycles(ch, pixels)
    total = max(t, rq_free) + 1                                   # FINISH sees the requant idle, sets done
    macs = useful_macs(layer)
    return {"total": total, "load": load, "stream": stream, "requant": requant,
            "requant_exposed": total - load - stream,
            "passes": passes, "sections": len(per_section), "pixels": pixels,
            "array_latency": array_latency(r, c, PIPELINED_PES), "useful_macs": macs,
            "utilization": utilization(macs, r, c, total, array.lanes)}


def program_cycles(program: TileProgram, layer: QuantLayer) -> dict:
    """:func:`layer_cycles` of a TileProgram before it is packed (what-if figures in benchmarks)."""
    r, c = program.array.rows, program.array.cols
    sections = [(max(1, -(-len(slots) // r)), min(c, program.n - s * c)) for s, slots in enumerate(program.sections)]
    return layer_cycles(sections, program.array, layer)


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
    [maxpool scan cycles of the pools between it and LayerEngine i+1]). Each layer costs its total plus
    one cycle in which the controller sees ``done``; each hand-over costs one cycle per element, the
    pools' scan time after their last input, and one cycle to start the next layer.
    """
    layers = sum(t + 1 for t in layer_totals)
    transfer = sum(n + sum(pools) + 1 for n, pools in handovers)
    return {"total": layers + transfer, "layers": layers, "transfer": transfer}
