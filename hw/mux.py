"""Multiplexer trees built from ``Mux``: continuous assignments in the generated Verilog."""
from __future__ import annotations

from amaranth.hdl import Mux


def mux_tree(sel, items):
    """``items[sel]`` as a balanced tree of 2:1 multiplexers on the bits of ``sel``, LSB first (an index past
    the last item selects one of the items; the callers never produce one).

    Built from ``Mux`` rather than ``Array`` indexing on purpose: ``Array`` becomes an ``always @*`` case
    statement in the Verilog, which Icarus does not evaluate at time 0 — in a PE that only ever holds one
    entry (e.g. an array row that is always a zero slot) its inputs never change, so its output would stay
    X for the whole simulation. ``Mux`` becomes ``assign ... ? ... : ...``, which is always evaluated.
    """
    items = list(items)
    if not items:
        raise ValueError("mux_tree needs at least one item")
    bit = 0
    while len(items) > 1:
        pairs = [items[i:i + 2] for i in range(0, len(items), 2)]
        items = [Mux(sel[bit], p[1], p[0]) if len(p) == 2 else p[0] for p in pairs]
        bit += 1
    return items[0]
