"""The generic weight-stationary processing element; its datapath is a scheme's :class:`ProductUnit`."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import ACC_BITS, act_vector
from .schemes.base import ProductUnit


class ProcessingElement(wiring.Component):
    """One PE: stationary entry register, activation pass-through register, partial-sum register.

    ``psum_out <= psum_in + product(entry, x_in)`` and ``x_out <= x_in`` every cycle;
    ``entry <= entry_in`` when ``load`` is high. Latency 1 cycle for both the activation vector
    (to the right neighbour) and the partial sum (to the PE below); throughput one activation vector
    per cycle.

    With ``pipelined=True`` the product is registered first (``prod <= product(entry, x_in)``,
    ``psum_out <= psum_in + prod``): the multiplier (a DSP block on an FPGA) sits between two
    registers and the partial-sum adder gets a cycle of its own. The partial sum then leaves 2 cycles
    after its ``x_in`` (the array's latency grows by one, see :func:`sparsyn.hw.array.array_latency`)
    and ``psum_in`` is taken one cycle after that ``x_in`` — which is when the PE above delivers it,
    so the array chains pipelined PEs unchanged; the entry is still only used in the cycle its
    ``x_in`` is present.

    Parameters
    ----------
    product : ProductUnit
        The scheme's combinational datapath (one instance per PE, e.g. from ``make_product(packed)``).

    Attributes
    ----------
    load : In(1)
        Load ``entry_in`` into the stationary entry register.
    entry_in : In(entry_layout)
    x_in : In(ArrayLayout(signed(8), L)); x_out : Out(same), registered copy of ``x_in``.
    psum_in : In(signed(32)); psum_out : Out(signed(32)), registered.
    """

    def __init__(self, product: ProductUnit, pipelined: bool = False):
        self.product = product
        self.pipelined = bool(pipelined)
        self.entry_layout = product.signature.members["entry"].shape
        self.lanes = product.lanes
        super().__init__({
            "load": In(1),
            "entry_in": In(self.entry_layout),
            "x_in": In(act_vector(self.lanes)),
            "x_out": Out(act_vector(self.lanes)),
            "psum_in": In(signed(ACC_BITS)),
            "psum_out": Out(signed(ACC_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.product = product = self.product
        entry = Signal(self.entry_layout)
        with m.If(self.load):
            m.d.sync += entry.eq(self.entry_in)
        m.d.comb += [product.entry.eq(entry), product.x.eq(self.x_in)]
        prod = product.product
        if self.pipelined:
            prod = Signal.like(product.product, name="prod")
            m.d.sync += prod.eq(product.product)
        m.d.sync += [
            self.x_out.eq(self.x_in),
            self.psum_out.eq(self.psum_in + prod),
        ]
        return m
