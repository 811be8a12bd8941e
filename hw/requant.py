"""Requantization unit: the numeric contract of :mod:`sparsyn.sw.requant` in a 2-stage pipeline."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.requant import ACT_MAX, ACT_MIN, MAX_SHIFT

from .layouts import ACC_BITS, ACT_BITS, MULT_BITS, RequantInput

#: Cycles from ``i`` to ``o``.
REQUANT_LATENCY = 2


class RequantUnit(wiring.Component):
    """``y = clamp((acc*mult + 2**(shift-1)) >> shift, lo, hi)``, arithmetic shift, bit-exact.

    ``acc`` signed 32-bit, ``mult`` unsigned 15-bit, ``shift`` 1..47; ``lo, hi = 0, 127`` when
    ``relu`` else ``-128, 127``. Stage 1 registers the 48-bit product (one DSP-sized multiply), stage 2
    adds the rounding constant, shifts and clamps. Latency :data:`REQUANT_LATENCY` = 2 cycles,
    throughput one value per cycle, no back-pressure (``always_ready`` streams).

    Attributes
    ----------
    i : In(stream.Signature(RequantInput, always_ready=True))
    o : Out(stream.Signature(signed(8), always_ready=True))
    """

    latency = REQUANT_LATENCY

    def __init__(self, relu: bool):
        self.relu = bool(relu)
        super().__init__({
            "i": In(stream.Signature(RequantInput, always_ready=True)),
            "o": Out(stream.Signature(signed(ACT_BITS), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        prod_bits = ACC_BITS + MULT_BITS + 1
        prod = Signal(signed(prod_bits))
        shift = Signal(unsigned(6))
        valid1 = Signal()
        m.d.sync += [prod.eq(self.i.payload.acc * self.i.payload.mult),
                     shift.eq(self.i.payload.shift), valid1.eq(self.i.valid)]

        half = Signal(unsigned(MAX_SHIFT))           # 2**(shift-1), shift >= 1
        m.d.comb += half.eq(1 << (shift - 1)[:6])
        rounded = Signal(signed(prod_bits + 1))
        m.d.comb += rounded.eq(prod + half)
        shifted = Signal(signed(prod_bits + 1))
        m.d.comb += shifted.eq(rounded >> shift)
        lo = 0 if self.relu else ACT_MIN
        with m.If(shifted > ACT_MAX):
            m.d.sync += self.o.payload.eq(ACT_MAX)
        with m.Elif(shifted < lo):
            m.d.sync += self.o.payload.eq(lo)
        with m.Else():
            m.d.sync += self.o.payload.eq(shifted[:ACT_BITS])
        m.d.sync += self.o.valid.eq(valid1)
        return m
