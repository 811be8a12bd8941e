"""The activation feeders' image store: the input in B interleaved banks, one set of banks per array row,
and the feeders' common port interface."""
from __future__ import annotations

import operator

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import ACT_BITS, act_vector, bits_for_range
from .memories import buffer_memory
from .per_layer import LayerSelect


class FeedSignature(wiring.Signature):
    """The port interface of every activation feeder (see :mod:`.feeders`), from the feeder's side.

    Parameters
    ----------
    descriptor : the layout of one row descriptor (a ``lanes``-ROM word).
    rows, lanes : R array rows, L lanes per row (positive).
    layers : int
        Layers sharing the feeder (> 1 adds the ``layer`` input: the active layer, see :mod:`.per_layer`).

    Interface attributes
    --------------------
    act_in : In(stream.Signature(signed(8))); busy, clear : In(1)
    lanes : In(ArrayLayout(descriptor, R)); restart, issue : In(1); last : In(1, init=1)
    pixel : Out(1)
    x : Out(stream.Signature(ArrayLayout(ArrayLayout(signed(8), L), R), always_ready=True))
    """

    def __init__(self, descriptor, rows: int, lanes: int, layers: int = 1):
        for name, v in (("rows", rows), ("lanes", lanes), ("layers", layers)):
            if operator.index(v) < 1:
                raise TypeError(f"{name} must be a positive integer, not {v!r}")
        self._descriptor, self._rows, self._lanes = descriptor, int(rows), int(lanes)
        self._layers = int(layers)
        super().__init__({
            # the active layer of a feeder shared by several layers (stable while it runs)
            **({"layer": In(range(self._layers))} if self._layers > 1 else {}),
            "act_in": In(stream.Signature(signed(ACT_BITS))),
            "busy": In(1),
            "clear": In(1),
            "lanes": In(data.ArrayLayout(descriptor, self._rows)),
            "restart": In(1),
            "issue": In(1),
            "last": In(1, init=1),
            "pixel": Out(1),
            "x": Out(stream.Signature(data.ArrayLayout(act_vector(self._lanes), self._rows), always_ready=True)),
        })

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def layers(self) -> int:
        return self._layers

    def __eq__(self, other):
        return (isinstance(other, FeedSignature) and (self._descriptor, self.rows, self.lanes, self.layers)
                == (other._descriptor, other.rows, other.lanes, other.layers))

    def __repr__(self):
        return f"FeedSignature({self._descriptor!r}, rows={self.rows}, lanes={self.lanes}, layers={self.layers})"


class BankedImage(wiring.Component):
    """An int8 tensor streamed in row-major order, stored interleaved along one axis over B banks, R times.

    The tensor is viewed as (outer, axis, inner) (e.g. C x H x W with axis = H, or 1 x C x H*W with
    axis = C): element ``(o, a, i)`` goes to bank ``a mod B`` at word ``o*ceil(A/B)*I + (a // B)*I + i``, in
    each of the R copies (one per array row, so every row reads its own banks). Several tensor shapes (the
    layers sharing a feeder) may use the store: ``outer``/``axis``/``inner`` are then lists and the ``layer``
    input selects the shape being written (``names``: the layers they belong to); the memories hold the largest. A read of B consecutive
    ``a`` values (one per bank) takes one cycle.

    Write side: ``act_in`` while ``busy`` is low (``ready = ~busy``); the element is registered first and
    written in the next cycle (so the producer's logic and the bank/address counters are separate timing
    paths); the position wraps after the last element and returns to the first on ``clear``. Read side: ``addr[r][b]`` -> ``data[r][b]`` with
    :attr:`latency` = 1 (block RAM). No word is read in the cycle it is written (the image is written only
    while the engine is idle). R x B memories of ``outer*ceil(A/B)*I`` words: R image copies in all.

    Attributes
    ----------
    act_in : In(stream.Signature(signed(8))); busy, clear : In(1)
    addr : In(ArrayLayout(ArrayLayout(unsigned, B), R)); data : Out(ArrayLayout(ArrayLayout(signed(8), B), R))
    """

    #: Cycles from ``addr`` to ``data``.
    latency = 1

    def __init__(self, copies: int, banks: int, outer, axis, inner, names=None):
        self.copies, self.banks = operator.index(copies), operator.index(banks)
        #: per tensor shape that uses the store (several: the ``layer`` input selects; a list each)
        self.outers = [operator.index(v) for v in (outer if isinstance(outer, (list, tuple)) else [outer])]
        self.axes = [operator.index(v) for v in (axis if isinstance(axis, (list, tuple)) else [axis])]
        self.inners = [operator.index(v) for v in (inner if isinstance(inner, (list, tuple)) else [inner])]
        if not len(self.outers) == len(self.axes) == len(self.inners):
            raise ValueError("outer, axis and inner must list the same number of shapes")
        self.outer, self.axis, self.inner = self.outers[0], self.axes[0], self.inners[0]
        #: the names of the layers whose shapes these are (their per-layer values in a descriptor table)
        self.names = list(names) if names is not None else [f"shape{k}" for k in range(len(self.outers))]
        #: words of one channel (outer index) in one bank, and of a whole bank (per shape)
        self.planes = [-(-a // self.banks) * i for a, i in zip(self.axes, self.inners)]
        self.plane = self.planes[0]
        self.depth = max(o * pl for o, pl in zip(self.outers, self.planes))
        word = unsigned(bits_for_range(self.depth))
        super().__init__({
            **({"layer": In(range(len(self.outers)))} if len(self.outers) > 1 else {}),
            "act_in": In(stream.Signature(signed(ACT_BITS))),
            "busy": In(1),
            "clear": In(1),
            "addr": In(data.ArrayLayout(data.ArrayLayout(word, self.banks), self.copies)),
            "data": Out(data.ArrayLayout(data.ArrayLayout(signed(ACT_BITS), self.banks), self.copies)),
        })

    def elaborate(self, platform):
        m = Module()
        B, depth = self.banks, self.depth
        sel = LayerSelect(m, self.layer if len(self.outers) > 1 else None, self.names, self)
        A = sel(self.axes, name="axis")
        inner = sel(self.inners, name="inner")
        outer = sel(self.outers, name="outer")
        plane = sel(self.planes, name="plane")
        mems = [[buffer_memory(signed(ACT_BITS), depth) for _ in range(B)] for _ in range(self.copies)]
        # the position (o, a, i) as counters: bank = a mod B, row = the word of (o, a // B, 0)
        pos_i = Signal(range(max(max(self.inners), 2)))
        pos_a = Signal(range(max(max(self.axes), 2)))
        pos_o = Signal(range(max(max(self.outers), 2)))
        bank = Signal(range(max(B, 2)))
        row = Signal(range(max(depth + max(self.planes), 2)))
        chan = Signal(range(max(depth + max(self.planes), 2)))      # the word of (o, 0, 0)
        write, value = Signal(), Signal(signed(ACT_BITS))      # the accepted element, registered
        m.d.comb += self.act_in.ready.eq(~self.busy)
        m.d.sync += [write.eq(self.act_in.valid & ~self.busy), value.eq(self.act_in.payload)]
        for r, copy in enumerate(mems):
            for b, mem in enumerate(copy):
                m.submodules[f"bank_{r}_{b}"] = mem
                wr, rd = mem.write_port(), mem.read_port()
                m.d.comb += [wr.addr.eq(row + pos_i), wr.data.eq(value), wr.en.eq(write & (bank == b)),
                             rd.addr.eq(self.addr[r][b]), self.data[r][b].eq(rd.data)]
        with m.If(write):
            m.d.sync += pos_i.eq(pos_i + 1)
            with m.If(pos_i == inner - 1):
                m.d.sync += pos_i.eq(0)
                with m.If(pos_a == A - 1):
                    m.d.sync += [pos_a.eq(0), bank.eq(0)]
                    with m.If(pos_o == outer - 1):
                        m.d.sync += [pos_o.eq(0), chan.eq(0), row.eq(0)]
                    with m.Else():
                        m.d.sync += [pos_o.eq(pos_o + 1), chan.eq(chan + plane), row.eq(chan + plane)]
                with m.Else():
                    m.d.sync += pos_a.eq(pos_a + 1)
                    with m.If(bank == B - 1):
                        m.d.sync += [bank.eq(0), row.eq(row + inner)]
                    with m.Else():
                        m.d.sync += bank.eq(bank + 1)
        with m.If(self.clear):
            m.d.sync += [pos_i.eq(0), pos_a.eq(0), pos_o.eq(0), bank.eq(0), row.eq(0), chan.eq(0), write.eq(0)]
        return m
