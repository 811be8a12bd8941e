"""cocotb bench of the R x C SystolicArray: a random integer matrix product W (N x K) @ X (K x P).

Parameters: ``rows``, ``cols``, ``lanes``, ``entry_width``, ``scheme``, ``meta``, ``weight`` (N x K),
``x`` (K x P) and ``passes``: the scheme's tile program as ``[section, [[lane_k...], [entry...]]...]``
(R slots per pass, see :class:`sparsyn.sw.schedule.TileProgram`).

Per pass: load the R weight rows (one ``load`` bit per cycle), stream the P input vectors on
consecutive cycles, collect the P aligned column-sum vectors when ``y_valid`` is high, and add them
to the section's accumulators (as the engine's accumulator buffer does). The final N x P matrix is
compared exactly with ``W @ X``; a mismatch names channel, position (pixel), expected, actual.
Results: ``passes``, ``checked``, ``stream_cycles`` (cycles spent streaming+draining, for the
latency model), ``latency`` (measured cycles from the first x to the first y).
"""
from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge, Timer

from sparsyn.sim.benches.common import start_clock
from sparsyn.sim.runner import bench_params, bench_result


def _word(values, width):
    word = 0
    mask = (1 << width) - 1
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (width * i)
    return word


def _split_signed(word: int, width: int, count: int) -> list[int]:
    out = []
    for i in range(count):
        v = (word >> (width * i)) & ((1 << width) - 1)
        out.append(v - (1 << width) if v >> (width - 1) else v)
    return out


@cocotb.test()
async def array_matrix_product(dut):
    p = bench_params()
    rows, cols, lanes, ew = p["rows"], p["cols"], p["lanes"], p["entry_width"]
    w = np.asarray(p["weight"], dtype=np.int64)
    x = np.asarray(p["x"], dtype=np.int64)
    n, k = w.shape
    pixels = x.shape[1]
    sections = -(-n // cols)
    acc = np.zeros((sections * cols, pixels), dtype=np.int64)
    await start_clock(dut, load=0, x_valid=0, x=0, entries=0)
    latency = None
    stream_cycles = 0
    for section, slots in p["passes"]:
        # load weights: row r on cycle r
        for r, (_lane_k, entries) in enumerate(slots):
            dut.load.value = 1 << r
            dut.entries.value = _word(entries, ew)
            await RisingEdge(dut.clk)
        dut.load.value = 0
        # activation vectors of every pixel, row-major (row r, lane l) -> bits (r*L+l)*8
        vecs = []
        for pix in range(pixels):
            vals = [x[kk, pix] if kk >= 0 else 0 for lane_k, _e in slots for kk in lane_k]
            vecs.append(_word(vals, 8))
        got, t = [], 0
        while len(got) < pixels:
            if t < pixels:
                dut.x_valid.value = 1
                dut.x.value = vecs[t]
            else:
                dut.x_valid.value = 0
            await RisingEdge(dut.clk)
            await ReadOnly()
            if int(dut.y_valid.value):
                if latency is None:
                    latency = t + 1
                got.append(_split_signed(int(dut.y.value), 32, cols))
            t += 1
            if t > pixels + 4 * (rows + cols) + 16:
                raise AssertionError(f"array {rows}x{cols}: only {len(got)} of {pixels} outputs "
                                     f"after {t} cycles (y_valid never came)")
            await Timer(1, "ns")
        stream_cycles += t
        acc[section * cols:(section + 1) * cols] += np.asarray(got, dtype=np.int64).T
    expected = w @ x
    actual = acc[:n]
    bench_result(passes=len(p["passes"]), checked=int(actual.size), stream_cycles=stream_cycles,
                 latency=latency)
    diff = np.argwhere(expected != actual)
    if len(diff):
        ch, pos = (int(v) for v in diff[0])
        raise AssertionError(f"array {rows}x{cols}: channel {ch} position {pos}: expected "
                             f"{int(expected[ch, pos])}, actual {int(actual[ch, pos])} "
                             f"({len(diff)} of {actual.size} sums differ; W {n}x{k}, {pixels} input vectors)")
