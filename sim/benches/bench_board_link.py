"""cocotb bench of a design's UART host link (``rx`` / ``tx``, e.g. the inference top): blocking host code talks to it
at bit level through :class:`~sparsyn.sim.board_sim.CocotbBoard`.

Parameters: ``host`` — ``"package.module:function"``, a blocking ``function(transport, args) -> dict`` (the host side
of ``sparsyn infer --port sim:icarus|verilator`` is :func:`sparsyn.boards.infer.rtl_host`; it is named, not imported
here, so ``sim/`` does not depend on ``boards/``); ``args`` — JSON handed to it; ``divisor`` — clock cycles per UART
bit; ``clk_hz`` — the board clock (simulated seconds = cycles / ``clk_hz``).

The host runs in a thread (``cocotb.task.bridge``); simulated time runs only while it waits for a reply. Results:
``result`` (the host's dict) and ``cycles`` (simulated clock cycles), or ``error`` — the message of the
:class:`~sparsyn.sw.errors.SparsynError` the host raised (a mismatch, a missing reply), and the test fails.
"""
from __future__ import annotations

import importlib

import cocotb
from cocotb.task import bridge

from sparsyn.sim.board_sim import CocotbBoard
from sparsyn.sim.runner import bench_params, bench_result
from sparsyn.sw.errors import SparsynError


def host_function(name: str):
    """``"package.module:function"`` -> the function."""
    module, _, func = name.partition(":")
    return getattr(importlib.import_module(module), func)


@cocotb.test()
async def host_talks_to_the_board(dut):
    p = bench_params()
    period = await CocotbBoard.start_clock(dut, p["clk_hz"])
    board = CocotbBoard(dut, divisor=p["divisor"], clk_hz=p["clk_hz"], period_steps=period)
    board.start()
    host = host_function(p["host"])
    try:
        result = await bridge(host)(board, p.get("args", {}))
    except SparsynError as err:
        bench_result(error=str(err), cycles=board.cycles)
        raise AssertionError(str(err)) from None
    bench_result(result=result, cycles=board.cycles)


def link_faults(transport, args: dict) -> dict:
    """Host code that probes the link's error handling (for tests): a WRITE with a corrupted CRC, garbage bytes and
    a truncated frame, each answered with its error frame; then the input reads back unchanged and IDENTIFY works.
    Returns ``{"errors": [error code names], "readback_ok": bool, "design_hash": hex}``."""
    from sparsyn.hw.inference import REGION_INPUT
    from sparsyn.sw import link_protocol as lp
    from sparsyn.sw.link_client import LinkClient
    timeout = float(args.get("timeout_s", 0.01))
    client = LinkClient(transport, timeout_s=timeout)
    good = bytes(range(16))
    client.write(REGION_INPUT, 0, good)

    def error_reply(data: bytes) -> str | None:
        transport.write(data)
        frames = [f for f in lp.FrameDecoder().feed(transport.read(8, timeout)) if isinstance(f, lp.Frame)]
        if not frames or not frames[0].is_error:
            return None
        code = frames[0].error()[0]
        return getattr(code, "name", str(code))

    bad = bytearray(lp.write_request(REGION_INPUT, 0, b"\xff" * 16))
    bad[-1] ^= 0x40                                           # CRC corrupted
    errors = [error_reply(bytes(bad)), error_reply(b"\x00\x13\x37"),
              error_reply(lp.read_request(REGION_INPUT, 0, 4)[:5])]   # truncated frame
    readback_ok = client.read(REGION_INPUT, 0, 16) == good
    return {"errors": errors, "readback_ok": readback_ok, "design_hash": client.identify().design_hash.hex()}
