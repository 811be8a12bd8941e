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

    With ``pipelined=True`` the datapath works one cycle later, on registered copies of ``x_in`` and the
    entry, and its product passes two registers (the first is the datapath's own if it has one, see
    :attr:`ProductUnit.registered`) before ``psum_out <= psum_in + prod``: :attr:`product_latency` = 3
    cycles from ``x_in`` to the adder. The multiplier (a DSP block on an FPGA, often placed far from the
    registers around it) then has the cycle to itself and its two routes, and the partial-sum adder has
    a cycle of its own. The partial sum leaves 4 cycles after its ``x_in`` (the array's latency grows by
    three, see :func:`sparsyn.hw.array.array_latency`) and ``psum_in`` is taken three cycles after that
    ``x_in`` — which is when the PE above delivers it, so the array chains pipelined PEs unchanged; the
    entry is still only used in the cycle its ``x_in`` is present.

    **Time-multiplexed datapath** (``product.phases`` = P > 1, pipelined only): every activation vector is
    held for P cycles with ``phase_in`` = 0 .. P-1 (``phase_out`` is its registered copy, like ``x_out``);
    the registered part-products of phases 0 .. P-2 are summed in a local register and the last phase's
    is added with ``psum_in``: ``psum_out`` changes once per vector, 4 cycles after its last phase, and
    ``psum_in`` is taken 3 cycles after it — the same hand-over as P = 1 with the vector's last phase in
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

    #: Cycles from ``x_in`` to a pipelined PE's adder: the datapath's input registers, two product registers.
    product_latency = 3

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
        # pipelined: the datapath works a cycle later, on its own registered copies of the entry and x_in, and its
        # product passes two registers before the adder (see product_latency). x_p holds what x_out holds; its
        # initial value differs so that yosys keeps it a register of its own (it merges registers with the same
        # input and initial value) that can sit next to the multiplier
        d_entry, d_x = entry, self.x_in
        if self.pipelined:
            d_entry = Signal.like(entry, name="entry_p")
            bits = len(self.x_in.as_value())
            d_x = Signal(bits, name="x_p", init=(1 << bits) - 1, reset_less=True)
            m.d.sync += [d_entry.eq(entry), d_x.eq(self.x_in)]
        m.d.comb += [product.entry.eq(d_entry), product.x.eq(d_x)]
        if "layer" in product.signature.members:
            m.d.comb += product.layer.eq(self.layer)
        prod = product.product
        stages = self.product_latency - 1 - int(product.registered) if self.pipelined else 0
        for s in range(stages):
            # the last one sign-extended to the partial sum's width: yosys' iCE40 DSP packing (0.70) takes two
            # product registers of the multiplier's width into its SB_MAC16 and leaves the second one driven by 0
            last = s == stages - 1
            reg = Signal(signed(ACC_BITS) if last else product.product.shape(), name="prod" if last else f"prod_{s}",
                         reset_less=True)
            m.d.sync += reg.eq(prod)
            prod = reg
        m.d.sync += self.x_out.eq(self.x_in)
        if self.phases == 1:
            m.d.sync += self.psum_out.eq(self.psum_in + prod)
            return m
        # time-multiplexed: the datapath computes the part of phase_out (phase_in registered, like its x);
        # prod holds the part of phase ``prod_phase``
        prod_phase = Signal(range(self.phases))
        m.d.comb += product.phase.eq(self.phase_out)
        # the parts of phases 0 .. prod_phase-1: at most P-1 products, so only as wide as their sum needs
        part = Signal(signed(len(product.product) + (self.phases - 1).bit_length()), name="part")
        whole = Signal(signed(len(part) + 1), name="whole")    # all P parts of the vector
        m.d.comb += whole.eq(part + prod)
        m.d.sync += self.phase_out.eq(self.phase_in)
        phase = self.phase_out
        for s in range(self.product_latency - 1):       # the phase travels with its product
            last = s == self.product_latency - 2
            reg = prod_phase if last else Signal(range(self.phases), name=f"prod_phase_{s}")
            m.d.sync += reg.eq(phase)
            phase = reg
        with m.If(prod_phase == self.phases - 1):
            m.d.sync += self.psum_out.eq(self.psum_in + whole)
        with m.Elif(prod_phase == 0):
            m.d.sync += part.eq(prod)
        with m.Else():
            m.d.sync += part.eq(part + prod)
        return m
