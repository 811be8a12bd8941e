"""CRC-16/CCITT-FALSE, one byte per cycle: the host link's frame check (:mod:`sparsyn.sw.link_protocol`)."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.link_protocol import CRC16_INIT, CRC16_POLY


def crc16_next(crc, byte):
    """The CRC-16/CCITT-FALSE state after ``byte`` (an Amaranth expression; combinational).

    The bit-serial definition (most significant bit first: feedback = state[15] ^ bit, shift left, xor the
    polynomial on feedback) unrolled over the 8 bits: each of the 16 next-state bits is an XOR of state and data
    bits (a few LUT levels, no carry chain).
    """
    state = [crc[i] for i in range(16)]
    for i in reversed(range(8)):
        feedback = state[15] ^ byte[i]
        shifted = [0] + state[:15]
        state = [(shifted[j] ^ feedback) if (CRC16_POLY >> j) & 1 else shifted[j] for j in range(16)]
    return Cat(*state)


class CRC16(wiring.Component):
    """Byte-at-a-time CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor).

    ``crc`` holds the CRC of every byte given with ``en`` since the last ``clear`` (``clear`` and ``en`` in the
    same cycle start a new CRC with that byte). ``next`` is the combinational state after ``data`` (what ``crc``
    becomes at the edge if ``en``): a receiver that feeds the whole frame incl. its CRC bytes sees ``next == 0``
    on the last one.

    Latency: ``crc`` is updated 1 cycle after ``en``; ``next`` 0 cycles. Throughput: one byte per cycle.

    Attributes
    ----------
    clear : In(1)
        Restart from ``0xFFFF``.
    en : In(1)
        Add ``data`` to the CRC.
    data : In(8)
        The byte.
    crc : Out(16)
        Registered CRC (``0xFFFF`` after reset).
    next : Out(16)
        CRC after ``data``, from ``crc`` (or ``0xFFFF`` when ``clear``).
    """

    clear: In(1)
    en: In(1)
    data: In(8)
    crc: Out(16, init=CRC16_INIT)
    next: Out(16)

    def elaborate(self, platform):
        m = Module()
        base = Signal(16)
        m.d.comb += base.eq(Mux(self.clear, CRC16_INIT, self.crc))
        m.d.comb += self.next.eq(crc16_next(base, self.data))
        with m.If(self.en):
            m.d.sync += self.crc.eq(self.next)
        with m.Elif(self.clear):
            m.d.sync += self.crc.eq(CRC16_INIT)
        return m
