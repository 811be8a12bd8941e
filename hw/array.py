"""The weight-stationary R x C systolic array, generic over the PE datapath (scheme) and lanes L."""
from __future__ import annotations

from typing import Callable

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer

from .layouts import acc_vector, act_vector, weight_word
from .pe import ProcessingElement
from .schemes.base import ProductUnit, make_product


def array_latency(rows: int, cols: int, pipelined: bool = False) -> int:
    """Cycles from an input vector on ``x`` to its column sums on ``y`` (skew + R PEs + deskew; plus
    :attr:`ProcessingElement.product_latency` = 3 with pipelined PEs: registered datapath inputs and product)."""
    return rows + cols - 1 + (ProcessingElement.product_latency if pipelined else 0)


class SystolicArray(wiring.Component):
    """R x C PEs. Rows consume input slots (activations move right), columns are output channels
    (partial sums move down, starting from 0 at the top row).

    The input vector (R rows x L lanes, one output pixel) is skewed internally (row r delayed by r
    cycles) and the column sums are deskewed (column c delayed by C-1-c cycles), so the ports are
    aligned: ``y[c] = sum_r product(entry[r][c], x[r])`` for the ``x`` presented ``R + C - 1`` cycles
    earlier (:func:`array_latency`). Throughput: one input vector per cycle; ``y_valid`` follows
    ``x_valid`` with the same latency.

    With a time-multiplexed PE datapath (``phases`` = P > 1) each vector is presented for P cycles with
    ``phase`` = 0 .. P-1 (skewed with it); ``x_valid`` marks its last phase, and ``y``/``y_valid`` follow
    that cycle with the same latency (throughput one vector per P cycles).

    Weights are loaded one array row at a time: every PE of row r whose ``load[r]`` is high takes its
    column's entry from ``entries`` (the weight-memory word of that row).

    Parameters
    ----------
    array : ArrayConfig (rows R, cols C, lanes L).
    product : PackedLayer or callable
        ``make_product(packed, (row, col))`` is called per PE for a PackedLayer; a callable is used as
        the factory and called with each PE's ``(row, col)``.
    pipelined : bool
        Register every PE's product before its adder (see :class:`ProcessingElement`); latency + 3.

    Attributes
    ----------
    load : In(R); entries : In(ArrayLayout(entry_layout, C))
    layer : In (only with a datapath shared by several layers, see :mod:`.shared_product`)
    x : In(ArrayLayout(ArrayLayout(signed(8), L), R)); x_valid : In(1)
    y : Out(ArrayLayout(signed(32), C)); y_valid : Out(1)
    """

    def __init__(self, array: ArrayConfig, product: PackedLayer | Callable[[tuple[int, int]], ProductUnit],
                 pipelined: bool = False):
        self.array = array
        self.pipelined = bool(pipelined)
        self.factory = ((lambda position: make_product(product, position)) if isinstance(product, PackedLayer)
                        else product)
        probe = self._probe = self.factory((0, 0))   # PE (0, 0)'s datapath: it tells the entry layout
        if probe.lanes != array.lanes:
            raise ValueError(f"PE datapath takes {probe.lanes} lanes, array has {array.lanes}")
        self.entry_layout = probe.signature.members["entry"].shape
        self.latency = array_latency(array.rows, array.cols, self.pipelined)
        #: Cycles each input vector is held (a time-multiplexed PE datapath; 1 otherwise).
        self.phases = probe.phases
        members = {
            "load": In(array.rows),
            "entries": In(weight_word(self.entry_layout, array.cols)),
            "x": In(data.ArrayLayout(act_vector(array.lanes), array.rows)),
            "x_valid": In(1),
            "y": Out(acc_vector(array.cols)),
            "y_valid": Out(1),
        }
        if self.phases > 1:
            members["phase"] = In(range(self.phases))
        if "layer" in probe.signature.members:
            # a datapath shared by several layers: the active layer, to every PE
            members["layer"] = In(probe.signature.members["layer"].shape)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        rows, cols, lanes = self.array.rows, self.array.cols, self.array.lanes
        pes = [[ProcessingElement(self._probe if (r, c) == (0, 0) else self.factory((r, c)), self.pipelined)
                for c in range(cols)] for r in range(rows)]
        for r in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{r}_{c}"] = pe = pes[r][c]
                m.d.comb += [pe.load.eq(self.load[r]), pe.entry_in.eq(self.entries[c])]
                if "layer" in self.signature.members:
                    m.d.comb += pe.layer.eq(self.layer)
                if c > 0:
                    m.d.comb += pe.x_in.eq(pes[r][c - 1].x_out)
                    if self.phases > 1:
                        m.d.comb += pe.phase_in.eq(pes[r][c - 1].phase_out)
                if r > 0:
                    m.d.comb += pe.psum_in.eq(pes[r - 1][c].psum_out)
                else:
                    m.d.comb += pe.psum_in.eq(0)
        # input skew: row r sees its activations r cycles late
        for r in range(rows):
            prev = self.x[r]
            for d in range(r):
                reg = Signal(act_vector(lanes), name=f"skew_{r}_{d}")
                m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += pes[r][0].x_in.eq(prev)
            if self.phases > 1:
                ph = self.phase
                for d in range(r):
                    reg = Signal.like(self.phase, name=f"phase_skew_{r}_{d}")
                    m.d.sync += reg.eq(ph)
                    ph = reg
                m.d.comb += pes[r][0].phase_in.eq(ph)
        # output deskew: column c is delayed by C-1-c cycles so all columns line up
        for c in range(cols):
            prev = pes[rows - 1][c].psum_out
            for d in range(cols - 1 - c):
                reg = Signal.like(prev, name=f"deskew_{c}_{d}")
                m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += self.y[c].eq(prev)
        prev = self.x_valid
        for d in range(self.latency):
            reg = Signal(name=f"valid_{d}")
            m.d.sync += reg.eq(prev)
            prev = reg
        m.d.comb += self.y_valid.eq(prev)
        return m
