"""cocotb bench of a stream unit (max-pool, average-pool, residual add): N int8 input streams in, one out.

Parameters (JSON, see :func:`sparsyn.sim.runner.run_bench`):

* ``name``: the layer's name (for messages);
* ``inputs``: ``{port: flat int8 values}``, every image's CHW tensor one after the other, per input stream;
* ``images``: how many images the streams hold; ``expected``: per image, the flat expected output (the golden
  model's, computed by the caller: the simulator process does not import PyTorch);
* ``set`` (optional): ``{port: value}`` held constant from reset (e.g. ``layer_index`` of a shared unit);
* ``in_pauses`` (optional): one pause spec for every input, or ``{port: spec}``; ``out_pauses``: the spec of
  ``o.ready``. A spec is None (always on), a 0/1 list (repeated) or ``{"random": p, "seed": s}`` (on with
  probability p) — see :func:`sparsyn.sim.benches.common.pause_pattern`;
* ``timeout_cycles``: idle cycles after which a stalled stream fails the bench.

Every input stream has its own driver (its own valid gaps); a monitor takes ``o`` and the scoreboard compares
every output element, in order, with the expected one as it arrives. Per image the bench measures the cycles
from its first input handshake (on any input) to its last output handshake, both counted. Results: ``cycles``
(per image), ``outputs`` (per image, flat), ``outputs_checked``, ``first_mismatch`` (``[image, element,
expected, actual]`` or None), ``sim_cycles``.
"""
from __future__ import annotations

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import ReadOnly, RisingEdge

from sparsyn.sim.benches.common import pause_pattern, start_clock
from sparsyn.sim.runner import bench_params, bench_result

PERIOD_NS = 10


def _cycle() -> int:
    """The index of the rising edge whose time step this is (called in its ReadOnly phase)."""
    return int(get_sim_time("ns")) // PERIOD_NS


async def drive(dut, port: str, values: list[int], per_image: int, pauses, timeout: int) -> list[int]:
    """Send ``values`` through stream ``port``; returns the cycle of the handshake of each image's first element."""
    valid, ready, payload = (getattr(dut, f"{port}__{s}") for s in ("valid", "ready", "payload"))
    gate = pause_pattern(pauses)
    firsts, i, idle = [], 0, 0
    while i < len(values):
        on = next(gate)
        valid.value = on
        payload.value = int(values[i]) & 0xFF
        await ReadOnly()
        if on and int(ready.value) == 1:
            if i % per_image == 0:
                firsts.append(_cycle())
            i, idle = i + 1, 0
        else:
            idle += 1
            if idle > timeout:
                raise AssertionError(f"input {port} stalled: {i} of {len(values)} elements taken after {timeout} "
                                     "idle cycles")
        await RisingEdge(dut.clk)
    valid.value = 0
    return firsts


class Scoreboard:
    """Compares every output element, in order, with the expected one; keeps the first difference."""

    def __init__(self, expected: list[list[int]]):
        self.expected = expected
        self.per_image = len(expected[0]) if expected else 0
        self.outputs = [[] for _ in expected]
        self.checked = self.differ = 0
        self.first = None

    def put(self, value: int) -> None:
        image, element = divmod(self.checked, self.per_image)
        want = self.expected[image][element]
        self.outputs[image].append(value)
        self.checked += 1
        if value != want:
            self.differ += 1
            if self.first is None:
                self.first = [image, element, want, value]


async def monitor(dut, board: Scoreboard, pauses, timeout: int) -> list[int]:
    """Take ``o`` into the scoreboard; returns the cycle of the handshake of each image's last element."""
    valid, ready, payload = dut.o__valid, dut.o__ready, dut.o__payload
    gate = pause_pattern(pauses)
    total = board.per_image * len(board.expected)
    lasts, idle = [], 0
    while board.checked < total:
        on = next(gate)
        ready.value = on
        await ReadOnly()
        if on and int(valid.value) == 1:
            board.put(payload.value.to_signed())
            if board.checked % board.per_image == 0:
                lasts.append(_cycle())
            idle = 0
        else:
            idle += 1
            if idle > timeout:
                raise AssertionError(f"output o stalled: {board.checked} of {total} elements after {timeout} "
                                     "idle cycles")
        await RisingEdge(dut.clk)
    ready.value = 0
    return lasts


@cocotb.test()
async def stream_unit_matches_golden(dut):
    p = bench_params()
    name, images, inputs = p["name"], int(p["images"]), p["inputs"]
    idle = {f"{port}__valid": 0 for port in inputs}
    idle.update({f"{port}__payload": 0 for port in inputs})
    idle.update(p.get("set") or {})
    await start_clock(dut, PERIOD_NS, o__ready=0, **idle)
    t0 = _cycle()
    in_pauses = p.get("in_pauses")
    per_port = in_pauses if isinstance(in_pauses, dict) and "random" not in in_pauses else {}
    timeout = int(p["timeout_cycles"])
    board = Scoreboard(p["expected"])
    drivers = [cocotb.start_soon(drive(dut, port, values, len(values) // images,
                                       per_port.get(port) if per_port else in_pauses, timeout))
               for port, values in inputs.items()]
    lasts = await monitor(dut, board, p.get("out_pauses"), timeout)
    firsts = [await d for d in drivers]
    cycles = [last - min(f[k] for f in firsts) + 1 for k, last in enumerate(lasts)]
    bench_result(cycles=cycles, outputs=board.outputs, outputs_checked=board.checked, first_mismatch=board.first,
                 sim_cycles=_cycle() - t0)
    if board.first is not None:
        image, element, want, got = board.first
        raise AssertionError(f"layer {name}: {board.differ} of {board.checked} outputs differ from the golden model; "
                             f"first: image {image} element {element}: expected {want}, got {got}")
