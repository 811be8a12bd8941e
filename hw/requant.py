"""Requantization unit: the numeric contract of :mod:`sparsyn.sw.requant` in a 6-stage pipeline."""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.requant import ACT_MAX, ACT_MIN, MAX_SHIFT

from .layouts import ACC_BITS, ACT_BITS, MULT_BITS, SHIFT_BITS, RequantInput

#: Cycles from ``i`` to ``o``.
REQUANT_LATENCY = 6
#: The accumulator is multiplied in two halves of this many bits (each product fits one iCE40
#: SB_MAC16 16x16 or one ECP5 MULT18X18D, with the register in front of and behind the multiplier).
_HALF = 16


class RequantUnit(wiring.Component):
    """``y = clamp((acc*mult + 2**(shift-1)) >> shift, lo, hi)``, arithmetic shift, bit-exact.

    ``acc`` signed 32-bit, ``mult`` unsigned 15-bit, ``shift`` 1..47; ``lo, hi = 0, 127`` when
    ``relu`` else ``-128, 127``. Pipelined for the clock of small FPGAs (every stage is one
    multiplier, one carry chain or one short mux/compare tree):

    1. register the inputs (the multipliers' input registers);
    2. ``acc[16:] * mult`` and ``acc[:16] * mult`` (two DSP-sized products, registered), and the
       rounding constant ``2**(shift-1)`` decoded from ``shift``;
    3. the rounding constant added to each half: ``hi + half[16:]``, ``lo + half[:16]``;
    4. the rounded product ``(hi' << 16) + lo'`` (a 34-bit add: the low 16 bits pass through);
    5. the arithmetic right shift;
    6. the clamp to ``[lo, hi]``.

    Latency :data:`REQUANT_LATENCY` = 6 cycles, throughput one value per cycle, no back-pressure
    (``always_ready`` streams).

    Parameters
    ----------
    relu : bool or None
        The clamp of every value; ``None``: chosen per value by the ``relu_in`` input (a unit shared by
        layers with and without ReLU), which travels down the pipeline with its value.

    Attributes
    ----------
    i : In(stream.Signature(RequantInput, always_ready=True))
    relu_in : In(1) (only with ``relu=None``), sampled with ``i``
    o : Out(stream.Signature(signed(8), always_ready=True))
    """

    latency = REQUANT_LATENCY

    def __init__(self, relu: bool | None):
        self.relu = None if relu is None else bool(relu)
        super().__init__({
            "i": In(stream.Signature(RequantInput, always_ready=True)),
            **({"relu_in": In(1)} if relu is None else {}),
            "o": Out(stream.Signature(signed(ACT_BITS), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        prod_bits = ACC_BITS + MULT_BITS + 1
        valid = [Signal(name=f"valid_{s}") for s in range(REQUANT_LATENCY - 1)]
        m.d.sync += valid[0].eq(self.i.valid)
        m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, len(valid))]
        shifts = [Signal(unsigned(SHIFT_BITS), name=f"shift_{s}") for s in range(4)]
        m.d.sync += shifts[0].eq(self.i.payload.shift)
        m.d.sync += [shifts[s].eq(shifts[s - 1]) for s in range(1, len(shifts))]

        # 1: input registers
        # the multipliers' input and output registers are reset-less data registers, so yosys can pack them into
        # the DSP blocks (an iCE40 SB_MAC16 with its registers is timed by nextpnr; a combinational one is not)
        acc = Signal(signed(ACC_BITS), reset_less=True)
        mult = Signal(unsigned(MULT_BITS), reset_less=True)
        m.d.sync += [acc.eq(self.i.payload.acc), mult.eq(self.i.payload.mult)]

        # 2: two half products (registered), rounding constant 2**(shift-1) (shift >= 1)
        p_hi = Signal(signed(ACC_BITS - _HALF + MULT_BITS + 1), reset_less=True)
        p_lo = Signal(unsigned(_HALF + MULT_BITS), reset_less=True)
        half = Signal(unsigned(MAX_SHIFT))
        m.d.sync += [p_hi.eq(acc[_HALF:].as_signed() * mult),
                     p_lo.eq(acc[:_HALF] * mult),
                     half.eq(1 << (shifts[0] - 1)[:SHIFT_BITS])]

        # 3: the rounding constant added to each half: (p_hi + half[16:]) * 2**16 + (p_lo + half[:16])
        s_hi = Signal(signed(ACC_BITS + 2))
        s_lo = Signal(unsigned(_HALF + MULT_BITS + 1))
        m.d.sync += [s_hi.eq(p_hi + half[_HALF:]), s_lo.eq(p_lo + half[:_HALF])]

        # 4: the rounded product; the low 16 bits of s_lo pass through, only the upper part is added
        rounded = Signal(signed(prod_bits + 1))
        m.d.sync += rounded.eq(Cat(s_lo[:_HALF], s_hi + s_lo[_HALF:]))

        # 5: arithmetic shift
        shifted = Signal(signed(prod_bits + 1))
        m.d.sync += shifted.eq(rounded >> shifts[3])

        # 6: clamp, from the bits above the int8 range (OR/AND trees, no wide comparators):
        # shifted > 127 <=> non-negative with any of them set; < -128 <=> negative, not all set
        upper = shifted[ACT_BITS - 1:]                 # sign-extension bits of an in-range value
        negative = shifted[-1]
        over = ~negative & upper.any()
        if self.relu is None:
            # the value's own clamp, delayed with it to the clamp stage
            relu = self.relu_in
            for s in range(REQUANT_LATENCY - 1):
                reg = Signal(name=f"relu_{s}")
                m.d.sync += reg.eq(relu)
                relu = reg
            lo = Mux(relu, 0, ACT_MIN)
            under = negative & (relu | ~upper.all())
        else:
            lo = 0 if self.relu else ACT_MIN
            under = negative if self.relu else negative & ~upper.all()
        with m.If(over):
            m.d.sync += self.o.payload.eq(ACT_MAX)
        with m.Elif(under):
            m.d.sync += self.o.payload.eq(lo)
        with m.Else():
            m.d.sync += self.o.payload.eq(shifted[:ACT_BITS])
        m.d.sync += self.o.valid.eq(valid[-1])
        return m


def clamp_to_int8(m, out, value, relu) -> None:
    """Register ``value`` clamped to the int8 activation range into ``out`` (sync domain): ``[0, 127]`` where
    ``relu`` (a Value or a bool) holds, else ``[-128, 127]`` — the last stage of the add and average-pool units."""
    lo = Mux(relu, 0, ACT_MIN) if isinstance(relu, Value) else (0 if relu else ACT_MIN)
    with m.If(value > ACT_MAX):
        m.d.sync += out.eq(ACT_MAX)
    with m.Elif(value < lo):
        m.d.sync += out.eq(lo)
    with m.Else():
        m.d.sync += out.eq(value)
