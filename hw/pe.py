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

    **Time-multiplexed datapath** (``product.phases`` = P > 1, pipelined only): every activation vector is
    held for P cycles with ``phase_in`` = 0 .. P-1 (``phase_out`` is its registered copy, like ``x_out``);
    the registered part-products of phases 0 .. P-2 are summed in a local register and the last phase's
    is added with ``psum_in``: ``psum_out`` changes once per vector, 2 cycles after its last phase, and
    ``psum_in`` is taken 1 cycle after it — the same hand-over as P = 1 with the vector's last phase in
    the role of its only cycle, so the array chains such PEs unchanged (throughput one vector per P
    cycles).

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
    phase_in : In(range(P)); phase_out : Out(range(P)), registered copy (only when P > 1).
    layer : In (only for a datapath shared by several layers): the active layer, passed to it.
    psum_in : In(signed(32)); psum_out : Out(signed(32)), registered.
    """

    def __init__(self, product: ProductUnit, pipelined: bool = False):
        self.product = product
        self.pipelined = bool(pipelined)
        if product.registered and not self.pipelined:
            raise ValueError("a datapath that registers its product needs pipelined=True")
        self.entry_layout = product.signature.members["entry"].shape
        self.lanes = product.lanes
        self.phases = product.phases
        if self.phases > 1 and not self.pipelined:
            raise ValueError("a time-multiplexed PE datapath (phases > 1) needs pipelined=True")
        members = {
            "load": In(1),
            "entry_in": In(self.entry_layout),
            "x_in": In(act_vector(self.lanes)),
            "x_out": Out(act_vector(self.lanes)),
            "psum_in": In(signed(ACC_BITS)),
            "psum_out": Out(signed(ACC_BITS)),
        }
        if self.phases > 1:
            members.update(phase_in=In(range(self.phases)), phase_out=Out(range(self.phases)))
        if "layer" in product.signature.members:
            members["layer"] = In(product.signature.members["layer"].shape)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.product = product = self.product
        # data registers without reset (like the x pass-through and the product register): yosys packs the ones
        # around a multiplier into the DSP block, whose paths nextpnr then times
        entry = Signal(self.entry_layout, reset_less=True)
        with m.If(self.load):
            m.d.sync += entry.eq(self.entry_in)
        m.d.comb += [product.entry.eq(entry), product.x.eq(self.x_in)]
        if "layer" in product.signature.members:
            m.d.comb += product.layer.eq(self.layer)
        prod = product.product
        if self.pipelined and not product.registered:
            prod = Signal.like(product.product, name="prod", reset_less=True)
            m.d.sync += prod.eq(product.product)
        m.d.sync += self.x_out.eq(self.x_in)
        if self.phases == 1:
            m.d.sync += self.psum_out.eq(self.psum_in + prod)
            return m
        # time-multiplexed: prod holds the part of phase ``prod_phase``
        m.d.comb += product.phase.eq(self.phase_in)
        prod_phase = Signal(range(self.phases))
        # the parts of phases 0 .. prod_phase-1: at most P-1 products, so only as wide as their sum needs
        part = Signal(signed(len(prod) + (self.phases - 1).bit_length()), name="part")
        whole = Signal(signed(len(part) + 1), name="whole")    # all P parts of the vector
        m.d.comb += whole.eq(part + prod)
        m.d.sync += [self.phase_out.eq(self.phase_in), prod_phase.eq(self.phase_in)]
        with m.If(prod_phase == self.phases - 1):
            m.d.sync += self.psum_out.eq(self.psum_in + whole)
        with m.Elif(prod_phase == 0):
            m.d.sync += part.eq(prod)
        with m.Else():
            m.d.sync += part.eq(part + prod)
        return m
