"""8N1 UART receiver and transmitter (the host link's physical layer), and the baud-rate divisor check."""
from __future__ import annotations

import operator

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from sparsyn.sw.errors import SparsynError

#: Smallest divisor (clock cycles per bit): the receiver samples mid-bit after a 2-FF synchronizer.
MIN_DIVISOR = 4
#: Largest clock / baud rate mismatch accepted by :func:`uart_divisor` (the receiver tolerates about 4 %).
MAX_RATE_ERROR = 0.02
#: Baud rates :func:`uart_divisor` proposes instead of one that does not work.
STANDARD_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 1500000, 2000000,
                  3000000)


def check_divisor(divisor) -> int:
    """``divisor`` as an int >= :data:`MIN_DIVISOR` (ValueError / TypeError otherwise)."""
    divisor = operator.index(divisor)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor {divisor} is below {MIN_DIVISOR} clock cycles per bit")
    return divisor


def uart_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``: the rounded ratio.

    Refuses (:class:`~sparsyn.sw.errors.SparsynError`, one line naming the nearest working baud rates) a rate
    whose divisor is below :data:`MIN_DIVISOR` or whose actual rate ``clk_hz / divisor`` is more than
    :data:`MAX_RATE_ERROR` off ``baud``.
    """
    clk_hz, baud = float(clk_hz), int(baud)
    if clk_hz <= 0 or baud <= 0:
        raise SparsynError(f"baud {baud} at a {clk_hz:g} Hz clock: both must be positive")

    def fit(rate):
        div = round(clk_hz / rate)
        return div if div >= MIN_DIVISOR and abs(clk_hz / div - rate) <= MAX_RATE_ERROR * rate else None

    divisor = fit(baud)
    if divisor is not None:
        return divisor
    working = [b for b in STANDARD_BAUDS if fit(b) is not None]
    below = [b for b in working if b < baud][-2:]
    above = [b for b in working if b > baud][:2]
    div = round(clk_hz / baud)
    why = (f"divisor {div} is below {MIN_DIVISOR} clock cycles per bit" if div < MIN_DIVISOR else
           f"divisor {div} gives {clk_hz / div:.0f} baud, {abs(clk_hz / div - baud) / baud:.1%} off "
           f"(at most {MAX_RATE_ERROR:.0%})")
    near = ", ".join(str(b) for b in below + above) or "none of the standard rates"
    raise SparsynError(f"baud {baud} does not work with a {clk_hz / 1e6:g} MHz clock ({why}); use one of: {near}")


class UARTTx(wiring.Component):
    """8N1 UART transmitter: start bit (0), 8 data bits LSB first, stop bit (1); ``divisor`` cycles per bit.

    Latency: a byte accepted on ``i`` at cycle t drives the start bit on ``tx`` from cycle t+1 (``tx`` is a
    register: no glitches); data bit k from t+1+(k+1)*divisor, the stop bit from t+1+9*divisor. Throughput: one
    byte per ``10*divisor`` cycles — ``i.ready`` is also high in the last cycle of the stop bit, so back-to-back
    bytes have no gap.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4), e.g. :func:`uart_divisor` (12 MHz / 115200 -> 104).

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The line (idle high).
    busy : Out(1)
        A byte is being shifted out.
    """

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)})

    #: Cycles from a byte accepted on ``i`` to its start bit on ``tx``.
    latency = 1

    @property
    def byte_cycles(self) -> int:
        return 10 * self.divisor

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        bits = Signal(range(11))          # bits still on the line, the current one included
        rest = Signal(9, init=0x1FF)      # the bits after the current one (ones shift in: the line idles high)
        m.d.comb += [self.busy.eq(bits != 0),
                     self.i.ready.eq((bits == 0) | ((bits == 1) & (timer == 0)))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), rest.eq(Cat(self.i.payload, 1)), bits.eq(10), timer.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(rest[0]), rest.eq(Cat(rest[1:], 1)), bits.eq(bits - 1),
                             timer.eq(div - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTRx(wiring.Component):
    """8N1 UART receiver: 2-FF synchronizer on ``rx``, start-bit detection (a low level; rejected if not still
    low half a bit later), every bit sampled once in its middle, stop bit checked.

    A byte whose stop bit is low (framing error, e.g. a wrong baud rate or a break) is dropped with an ``error``
    pulse, and the receiver waits for the line to go high before hunting again. A byte is offered on ``o``
    and held until taken; a byte completed while the previous one is still offered is dropped with an
    ``overrun`` pulse (the consumer has ``10*divisor`` cycles per byte).

    Latency: ``o.valid`` rises :meth:`latency` = ``2 + divisor//2 + 9*divisor + 1`` cycles after the first cycle
    the start bit is low on ``rx`` (the 2-FF synchronizer, half a bit, 9 bits to the middle of the stop bit, the
    output register). Throughput: one byte per ``10*divisor`` cycles (and back-to-back bytes from a transmitter
    up to about 4 % faster).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    rx : In(1)
        The line (idle high; the synchronizer starts high).
    o : Out(stream.Signature(8))
        Received bytes.
    error : Out(1)
        Pulse: framing error (stop bit low), byte dropped.
    overrun : Out(1)
        Pulse: a byte arrived while ``o`` still held the previous one; the new byte was dropped.
    """

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)), "error": Out(1),
                          "overrun": Out(1)})

    @property
    def latency(self) -> int:
        """Cycles from the first low cycle of the start bit on ``rx`` to ``o.valid``."""
        return 2 + self.divisor // 2 + 9 * self.divisor + 1

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(div))
        nbit = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):              # to the middle of the start bit
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):               # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), nbit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):               # the middle of each data bit, LSB first
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), nbit.eq(nbit + 1), timer.eq(div - 1)]
                    with m.If(nbit == 7):
                        m.next = "STOP"
            with m.State("STOP"):               # the middle of the stop bit; then hunt for the next start bit
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~line):
                    m.d.comb += self.error.eq(1)
                    m.next = "BREAK"
                with m.Else():
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(shreg)]
                    m.next = "IDLE"
            with m.State("BREAK"):              # after a framing error: wait for the line to idle high
                with m.If(line):
                    m.next = "IDLE"
        return m
