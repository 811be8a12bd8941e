"""cocotb bench of one LayerEngine (a conv/linear layer with its weights in ROM) against the golden model.

Parameters (JSON, see :func:`sparsyn.sim.runner.run_bench`):

* ``layer``: name and shapes of the layer the engine was generated for;
* ``images``: list of flat int8 input tensors in CHW order;
* ``expected``: per image, the golden model's flat output (``sparsyn.sw.golden.run_layer``, computed
  by the caller so that the simulator process does not import PyTorch: ~5 s per run);
* ``timeout_cycles``: cycles to wait for ``done`` after ``start``;
* ``in_pauses`` / ``out_pauses`` (optional): 0/1 patterns of valid / ready (back-pressure).

Per image, in bulk: push the whole input through ``act_in``, pulse ``start``, wait for ``done``
without per-cycle Python, read ``cycles``, drain ``act_out``. The scoreboard compares every output
element with the golden model's and fails; it returns the outputs so that the caller locates the first
difference with :func:`sparsyn.sw.golden.first_mismatch` (layer/image/channel/position/expected/actual,
see :func:`sparsyn.sim.check.run_engine`). Results: ``cycles`` (per image), ``outputs`` (per image, flat),
``outputs_checked``, ``sim_cycles`` (clock cycles of the whole run).
"""
from __future__ import annotations

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import ReadOnly, RisingEdge, with_timeout

from sparsyn.sim.benches.common import pull_stream, push_stream, start_clock
from sparsyn.sim.runner import bench_params, bench_result

PERIOD_NS = 10


@cocotb.test()
async def engine_matches_golden(dut):
    p = bench_params()
    name, in_shape, out_shape = p["layer"]["name"], p["layer"]["in_shape"], p["layer"]["out_shape"]
    images = [np.asarray(x, dtype=np.int64) for x in p["images"]]
    n_out = int(np.prod(out_shape))
    await start_clock(dut, PERIOD_NS, start=0, act_in__valid=0, act_in__payload=0, act_out__ready=0)
    t_start = get_sim_time("ns")
    cycles, actual = [], []
    for idx, x in enumerate(images):
        if x.size != int(np.prod(in_shape)):
            raise ValueError(f"image {idx} has {x.size} values, layer {name} takes {in_shape}")
        await push_stream(dut, "act_in", x.tolist(), p.get("in_pauses"))
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await with_timeout(RisingEdge(dut.done), p["timeout_cycles"] * PERIOD_NS, "ns")
        await ReadOnly()
        cycles.append(int(dut.cycles.value))
        await RisingEdge(dut.clk)
        out = await pull_stream(dut, "act_out", n_out, p.get("out_pauses"))
        actual.append(out)
    sim_cycles = int((get_sim_time("ns") - t_start) // PERIOD_NS)
    bench_result(cycles=cycles, outputs=actual, outputs_checked=len(actual) * n_out, sim_cycles=sim_cycles)
    expected = np.asarray(p["expected"], dtype=np.int64)
    got = np.asarray(actual, dtype=np.int64)
    differ = int(np.count_nonzero(expected != got))
    if differ:
        raise AssertionError(f"layer {name}: {differ} of {got.size} outputs differ from the golden model")

