"""Bit-level 8N1 UART model for test benches: line waveforms from bytes, and a sampling decoder.

Pure functions and a small per-cycle decoder (usable from Amaranth testbenches, cocotb benches or plain Python),
plus async helpers for Amaranth's ``add_testbench`` (:func:`amaranth_send`, :func:`amaranth_exchange`).
One list element / one :meth:`UartDecoder.step` call = one clock cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def uart_bits(byte: int, *, stop_bit: int = 1) -> list[int]:
    """The 10 line levels of one 8N1 character: start (0), data LSB first, stop (``stop_bit``; 0 = a framing
    error)."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop_bit]


def uart_levels(data: bytes, divisor: int, *, gap_cycles: int = 0, idle_before: int = 0,
                bad_stop: frozenset[int] = frozenset()) -> list[int]:
    """Per-cycle line levels sending ``data`` at ``divisor`` cycles per bit: ``idle_before`` idle (high)
    cycles, then the characters with ``gap_cycles`` idle cycles between them; ``bad_stop``: indices of bytes
    sent with a low stop bit."""
    out = [1] * idle_before
    for i, b in enumerate(bytes(data)):
        if i and gap_cycles:
            out += [1] * gap_cycles
        for bit in uart_bits(b, stop_bit=0 if i in bad_stop else 1):
            out += [bit] * divisor
    return out


@dataclass
class UartDecoder:
    """Receives a line sampled once per clock cycle (:meth:`step`): a start bit is a low level, each bit is
    sampled ``divisor // 2`` cycles into it. ``data`` collects the bytes, ``framing_errors`` counts characters
    with a low stop bit (dropped)."""
    divisor: int
    data: bytearray = field(default_factory=bytearray)
    framing_errors: int = 0
    _count: int = -1          # cycles since the start bit's first low sample; -1: idle
    _bits: int = 0
    _wait_high: bool = False

    def step(self, level: int) -> int | None:
        """One cycle; returns the byte completed in this cycle, if any."""
        level = int(level) & 1
        if self._count < 0:
            if self._wait_high:
                self._wait_high = not level
                return None
            if not level:
                self._count, self._bits = 0, 0
            return None
        self._count += 1
        if self._count % self.divisor != self.divisor // 2:
            return None
        k = self._count // self.divisor            # 0 = start, 1..8 data, 9 stop
        if k == 0:
            if level:                              # a glitch
                self._count = -1
            return None
        if k <= 8:
            self._bits |= level << (k - 1)
            return None
        self._count = -1
        if not level:
            self.framing_errors += 1
            self._wait_high = True
            return None
        self.data.append(self._bits)
        return self._bits

    @property
    def busy(self) -> bool:
        return self._count >= 0


def decode_levels(levels, divisor: int) -> bytes:
    """Every byte in a per-cycle waveform."""
    dec = UartDecoder(divisor)
    for lv in levels:
        dec.step(lv)
    return bytes(dec.data)


# ---- Amaranth testbench helpers (``async def bench(ctx)``) -------------------------------------------------------
async def amaranth_send(ctx, pin, data: bytes, divisor: int, **kw) -> None:
    """Drive ``pin`` with ``data`` (see :func:`uart_levels` for ``kw``), one level per clock; ends idle high."""
    for lv in uart_levels(data, divisor, **kw):
        ctx.set(pin, lv)
        await ctx.tick()
    ctx.set(pin, 1)


async def amaranth_exchange(ctx, rx_pin, tx_pin, levels, divisor: int, *, until=None, idle_cycles: int | None = None,
                            max_cycles: int = 100_000, watch=None) -> bytes:
    """Drive ``rx_pin`` with ``levels`` (then idle high) while decoding ``tx_pin``, cycle by cycle.

    Stops, once the waveform is sent, when ``until(received_bytes)`` becomes true (checked at each received byte),
    or — without ``until`` — when ``tx`` has been idle for ``idle_cycles`` (default 400 bit times, longer than the
    link's default inter-byte timeout); raises TimeoutError after ``max_cycles``. ``watch(ctx)``, if given, is
    called every cycle (e.g. to assert that a write enable stays low). Returns the received bytes.
    """
    dec = UartDecoder(divisor)
    idle_cycles = 400 * divisor if idle_cycles is None else idle_cycles
    quiet = 0
    for cycle in range(max_cycles):
        ctx.set(rx_pin, levels[cycle] if cycle < len(levels) else 1)
        if watch is not None:
            watch(ctx)
        _, _, tx = await ctx.tick().sample(tx_pin)
        got = dec.step(tx)
        if cycle < len(levels):
            continue
        quiet = 0 if (dec.busy or not tx) else quiet + 1
        if until is not None:
            if (got is not None or cycle == len(levels)) and until(bytes(dec.data)):
                return bytes(dec.data)
        elif quiet >= idle_cycles:
            return bytes(dec.data)
    raise TimeoutError(f"UART exchange: no end after {max_cycles} cycles; received {bytes(dec.data).hex()}")
