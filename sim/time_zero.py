"""Icarus Verilog: make the combinational logic of Amaranth's Verilog evaluate at time 0.

Amaranth writes comb logic through Yosys as ``always @*`` blocks that each read a dummy register declared
``reg \\$auto$verilog_backend...dump_module$N = 0;``: under Verilog-2005 that initializer is an event at time 0 that
runs every block once. Icarus compiles with ``-g2012`` (cocotb's runner), where a declaration initializer is no
event, so a block whose inputs are registers that keep their initial value (e.g. an FSM's ``ready = state == IDLE``)
is never run and its output stays X until an input changes — the inference top's framer then never accepts a reply
payload. Verilator evaluates everything at time 0 and needs no fix.
"""
from __future__ import annotations

import re

_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) += *(?:1'h)?0;$", re.MULTILINE)


def settle_at_time_zero(verilog_text: str) -> str:
    """``verilog_text`` with each ``dump_module`` trigger register set to 1 at ``#0``: every ``always @*`` block that
    reads it runs once at time 0, after all blocks have started waiting."""
    return _TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0 {m.group(2)} = 1'h1;", verilog_text)
