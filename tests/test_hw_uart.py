"""The 8N1 UART: Tx -> Rx loopback (every byte, back to back, exact latency), Rx against the bit-level model
(framing error, glitch, overrun), Tx against the model's decoder, and the baud-rate divisor check."""
import gc
import warnings

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from sparsyn.hw.uart import UARTRx, UARTTx, check_divisor, uart_divisor
from sparsyn.sim.uart_model import UartDecoder, decode_levels, uart_levels
from sparsyn.sw.errors import SparsynError


def loopback(divisor, data, ready_pattern=(1,)):
    """Tx -> Rx; returns (received bytes, cycle each was offered, cycle each start bit began, errors, overruns)."""
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, got_at, starts, flags = [], [], [], {"error": 0, "overrun": 0}

    async def bench(ctx):
        pending = list(data)
        last_tx = 1
        for cycle in range(10 * divisor * (len(data) + 2) + 40):
            ctx.set(tx.i.valid, bool(pending))
            if pending:
                ctx.set(tx.i.payload, pending[0])
            ready = ready_pattern[cycle % len(ready_pattern)]
            ctx.set(rx.o.ready, ready)
            _, _, t_ready, line, valid, byte, err, ovr = await ctx.tick().sample(
                tx.i.ready, tx.tx, rx.o.valid, rx.o.payload, rx.error, rx.overrun)
            if pending and t_ready:
                pending.pop(0)
            if last_tx and not line and (not starts or cycle >= starts[-1] + 10 * divisor):
                starts.append(cycle)          # a start bit: the first falling edge after a whole character
            last_tx = line
            if valid and ready:
                got.append(byte)
                got_at.append(cycle)
            flags["error"] += err
            flags["overrun"] += ovr

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return bytes(got), got_at, starts, flags, rx


@pytest.mark.parametrize("divisor", [4, 5, 104])
def test_loopback_every_byte_back_to_back(divisor):
    data = bytes([0x00, 0xFF, 0x55, 0xAA, 0xA5, 0x01, 0x80]) if divisor == 104 else bytes(range(256))[::7] + b"\xff"
    got, got_at, starts, flags, rx = loopback(divisor, data)
    assert got == data
    assert flags == {"error": 0, "overrun": 0}
    # back to back: one start bit every 10*divisor cycles, and the receiver's stated latency
    assert [b - a for a, b in zip(starts, starts[1:])] == [10 * divisor] * (len(data) - 1)
    assert [g - s for s, g in zip(starts, got_at)] == [rx.latency] * len(data)


def test_loopback_slow_consumer_overruns():
    """A consumer that never takes a byte: the first is held, the next ones are dropped with overrun pulses."""
    got, _, _, flags, _ = loopback(4, b"\x11\x22\x33", ready_pattern=(0,))
    assert got == b""
    assert flags["overrun"] == 2 and flags["error"] == 0


def run_rx(divisor, levels, extra=40):
    rx = UARTRx(divisor)
    out, flags = [], {"error": 0, "overrun": 0}

    async def bench(ctx):
        ctx.set(rx.o.ready, 1)
        for cycle in range(len(levels) + extra):
            ctx.set(rx.rx, levels[cycle] if cycle < len(levels) else 1)
            _, _, valid, byte, err, ovr = await ctx.tick().sample(rx.o.valid, rx.o.payload, rx.error, rx.overrun)
            if valid:
                out.append(byte)
            flags["error"] += err
            flags["overrun"] += ovr

    sim = Simulator(rx)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return bytes(out), flags


@pytest.mark.parametrize("divisor", [4, 7])
def test_rx_framing_error_drops_the_byte_and_recovers(divisor):
    levels = uart_levels(b"\x12\x34\x56", divisor, bad_stop=frozenset({1}), gap_cycles=divisor)
    got, flags = run_rx(divisor, levels)
    assert got == b"\x12\x56"
    assert flags["error"] == 1


def test_rx_break_gives_one_error_not_a_stream_of_bytes():
    levels = [1] * 8 + [0] * 200 + [1] * 20 + uart_levels(b"\x7e", 4)
    got, flags = run_rx(4, levels)
    assert got == b"\x7e" and flags["error"] == 1


def test_rx_ignores_a_glitch():
    levels = [1] * 8 + [0] + [1] * 30 + uart_levels(b"\x42", 4)
    got, flags = run_rx(4, levels)
    assert got == b"\x42" and flags["error"] == 0


def test_rx_tolerates_a_3_percent_fast_sender():
    # the sender's bit is 100 cycles, the receiver expects 103 (3 % off): sampled near the middle still
    levels = []
    for b in b"\x00\xff\x5a\xa5":
        for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
            levels += [bit] * 100
    got, flags = run_rx(103, levels, extra=400)
    assert got == b"\x00\xff\x5a\xa5" and flags["error"] == 0


def test_tx_waveform_matches_the_model():
    tx = UARTTx(5)
    levels = []

    async def bench(ctx):
        data = list(b"\xa5\x00\x7f")
        for _ in range(10 * 5 * 3 + 30):
            ctx.set(tx.i.valid, bool(data))
            if data:
                ctx.set(tx.i.payload, data[0])
            _, _, ready, line = await ctx.tick().sample(tx.i.ready, tx.tx)
            if data and ready:
                data.pop(0)
            levels.append(line)

    sim = Simulator(tx)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    start = levels.index(0)
    assert levels[start:start + 150] == uart_levels(b"\xa5\x00\x7f", 5)
    assert all(levels[start + 150:])
    assert decode_levels(levels, 5) == b"\xa5\x00\x7f"


def test_model_decoder_counts_framing_errors():
    dec = UartDecoder(6)
    for lv in uart_levels(b"\x01\x02", 6, bad_stop=frozenset({0}), gap_cycles=12):
        dec.step(lv)
    assert bytes(dec.data) == b"\x02" and dec.framing_errors == 1


@pytest.mark.parametrize("bad", [3, 0, -5, 2.5])
def test_divisor_below_4_or_not_an_int_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        check_divisor(bad)
    for cls in (UARTTx, UARTRx):
        with warnings.catch_warnings():       # the half-built component is never elaborated
            warnings.simplefilter("ignore")
            with pytest.raises((ValueError, TypeError)):
                cls(bad)
            gc.collect()


def test_uart_divisor():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(25e6, 115200) == 217
    assert uart_divisor(48e6, 3_000_000) == 16
    assert uart_divisor(12e6, 3_000_000) == 4
    with pytest.raises(SparsynError) as err:          # 12 MHz / 4 Mbaud = divisor 3
        uart_divisor(12e6, 4_000_000)
    msg = str(err.value)
    assert "\n" not in msg and "below 4" in msg and "2000000, 3000000" in msg
    assert uart_divisor(12e6, 921600) == 13           # 923077 baud, 0.2 % off
    with pytest.raises(SparsynError) as err:          # 1.3 Mbaud -> divisor 9 -> 1.333 Mbaud, 2.6 % off
        uart_divisor(12e6, 1_300_000)
    msg = str(err.value)
    assert "2.6%" in msg and "1000000" in msg and "1500000" in msg
    with pytest.raises(SparsynError):
        uart_divisor(12e6, 0)
