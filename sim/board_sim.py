"""A simulated board for the host link: the inference top's RTL in a simulator, the UART at bit level.

:class:`AmaranthBoard` is a :class:`~sparsyn.sw.link_client.Transport`: ``write`` queues the bytes as line levels
on the design's ``rx`` pin, ``read`` advances the simulation — one clock at a time, decoding ``tx`` — until the
bytes arrived or the (simulated) timeout passed. Simulated time only runs while the host waits, so the host code
(:class:`~sparsyn.sw.link_client.LinkClient`, ``sparsyn infer``) is exactly the code that talks to a real board.

:class:`CocotbBoard` is the same Transport for the top converted to Verilog in Icarus or Verilator under cocotb
(``--port sim:icarus`` / ``sim:verilator``; the bench is :mod:`sparsyn.sim.benches.bench_board_link`).
"""
from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

from .uart_model import UartDecoder, uart_levels


class _SimulatedBoard:
    """What both simulated boards share: the bytes decoded from ``tx`` handed out in order, and the clock."""

    def _take(self, n: int) -> bytes:
        avail = bytes(self.decoder.data[self._received:self._received + n])
        self._received += len(avail)
        return avail

    def monotonic(self) -> float:
        """Simulated seconds: the host's timeouts count board time (the client reads its clock here)."""
        return self.cycles / self.clk_hz

    def close(self) -> None:
        pass


class AmaranthBoard(_SimulatedBoard):
    """The inference top ``core`` (``rx`` / ``tx`` ports) in Amaranth's simulator, clocked at ``clk_hz``.

    Parameters
    ----------
    core : the design (an :class:`~sparsyn.hw.inference.InferenceCore`).
    divisor : int — clock cycles per UART bit (the core's).
    clk_hz : float — the board clock (converts the host's timeouts to cycles).
    max_wait_cycles : int — the longest a single ``read`` simulates (a hung design fails in bounded time).
    """

    #: Cycles simulated per ``run_until`` call while waiting.
    CHUNK = 2000

    def __init__(self, core, *, divisor: int, clk_hz: float, max_wait_cycles: int = 2_000_000):
        self.core, self.divisor, self.clk_hz = core, int(divisor), float(clk_hz)
        self.max_wait_cycles = int(max_wait_cycles)
        self.levels: deque[int] = deque()
        self.decoder = UartDecoder(self.divisor)
        self.cycles = 0                    # simulated cycles so far
        self.sim = Simulator(core)
        self.sim.add_clock(1 / self.clk_hz)
        self.sim.add_testbench(self._line, background=True)
        self._received = 0

    async def _line(self, ctx):
        core = self.core
        while True:
            ctx.set(core.rx, self.levels.popleft() if self.levels else 1)
            await ctx.tick()
            self.cycles += 1
            self.decoder.step(ctx.get(core.tx))

    def write(self, data: bytes) -> None:
        self.levels.extend(uart_levels(bytes(data), self.divisor))

    def read(self, n: int, timeout_s: float) -> bytes:
        limit = self.cycles + min(int(timeout_s * self.clk_hz), self.max_wait_cycles)
        while len(self.decoder.data) - self._received < n and self.cycles < limit:
            self.sim.run_until((self.cycles + self.CHUNK) / self.clk_hz)
        return self._take(n)


class CocotbBoard(_SimulatedBoard):
    """A design with ``rx`` / ``tx`` ports in a cocotb simulation (Icarus, Verilator): the Transport of
    :class:`AmaranthBoard` — ``write`` queues line levels, ``read`` advances simulated time until the bytes arrived or
    the simulated timeout passed, ``monotonic`` returns simulated seconds (cycles / ``clk_hz``).

    The host code is blocking: it runs in a thread started with ``cocotb.task.bridge``, and each ``read`` resumes the
    simulation through ``cocotb.task.resume``. No Python runs per clock cycle: ``rx`` changes once per run of equal
    levels, ``tx`` is watched by its value changes (plus one wake-up per bit time while a character ends without
    one), and :class:`~sparsyn.sim.uart_model.UartDecoder` is fed the levels of the cycles in between — the same
    per-cycle samples (``tx`` after each rising edge) as in :class:`AmaranthBoard`.

    Parameters
    ----------
    dut : the cocotb handle of the top (``clk``, ``rx``, ``tx``); its clock runs with period ``period_steps``, rising
        edges at whole multiples of it (:meth:`start_clock`).
    divisor : int — clock cycles per UART bit (the design's).
    clk_hz : float — the board clock (converts the host's timeouts to cycles, cycles to seconds).
    max_wait_cycles : int — the longest a single ``read`` simulates (a hung design fails in bounded time).
    """

    def __init__(self, dut, *, divisor: int, clk_hz: float, period_steps: int, max_wait_cycles: int = 2_000_000):
        from cocotb.triggers import Event
        self.dut, self.divisor, self.clk_hz = dut, int(divisor), float(clk_hz)
        self.period = int(period_steps)
        if self.period < 2 or self.period % 2:
            raise ValueError(f"the clock period must be an even number of simulator steps, not {period_steps}")
        self.max_wait_cycles = int(max_wait_cycles)
        self.runs: deque[list[int]] = deque()      # pending rx line levels as [level, cycles]
        self.decoder = UartDecoder(self.divisor)
        self.cycles = 0                             # rising edges whose tx sample the decoder has seen
        self._tx = 1                                # tx after the latest rising edge
        self._received = 0
        self._rx_wake = Event()
        self._rx_task = None

    @staticmethod
    def period_steps(clk_hz: float) -> int:
        """The clock period in simulator steps (even: the host drives ``rx`` half a period after rising edges)."""
        from cocotb.simtime import convert
        return 2 * max(1, convert(0.5 / float(clk_hz), "sec", to="step", round_mode="round"))

    @classmethod
    async def start_clock(cls, dut, clk_hz: float, *, reset_cycles: int = 2) -> int:
        """Idle ``rx`` high, start ``dut.clk`` (in the simulator, not in Python) and hold ``dut.rst`` for
        ``reset_cycles``; returns the period in steps. Call at simulated time 0."""
        from cocotb.clock import Clock
        from cocotb.triggers import Timer
        period = cls.period_steps(clk_hz)
        dut.rx.value = 1
        dut.rst.value = 1
        # high first: the rising edges fall on whole periods (k * period), rx changes on the falling ones
        Clock(dut.clk, period, "step", impl="gpi").start(start_high=True)
        await Timer(reset_cycles * period + period // 2, "step")
        dut.rst.value = 0
        return period

    def start(self) -> None:
        """Start driving ``rx`` (call before the host runs)."""
        import cocotb
        self._rx_task = cocotb.start_soon(self._drive_rx())

    # ---- simulated time ----------------------------------------------------------------------------------------------
    def _now(self) -> tuple[int, bool]:
        """(k, on_edge): now is rising edge k's time step (``on_edge``) or between edges k and k + 1."""
        from cocotb.simtime import get_sim_time
        now = int(get_sim_time("step"))
        return now // self.period, now % self.period == 0

    def _timer_to(self, edge: int):
        """A Timer to half a period after rising edge ``edge`` (a falling edge: no tx change, no race with rx)."""
        from cocotb.simtime import get_sim_time
        from cocotb.triggers import Timer
        return Timer(edge * self.period + self.period // 2 - int(get_sim_time("step")), "step")

    def _catch_up(self, upto: int) -> None:
        """Feed the decoder the tx samples of rising edges ``self.cycles`` + 1 … ``upto`` (tx constant meanwhile)."""
        dec, level = self.decoder, self._tx
        for _ in range(upto - self.cycles):
            dec.step(level)
            if not dec.busy:          # idle (or waiting for a high line): more of the same level changes nothing
                break
        self.cycles = max(self.cycles, upto)

    # ---- the line ----------------------------------------------------------------------------------------------------
    async def _drive_rx(self):
        rx = self.dut.rx
        while True:
            if not self.runs:
                rx.value = 1
                self._rx_wake.clear()
                await self._rx_wake.wait()
                edge, on_edge = self._now()
                if on_edge:                       # woken at a tx change: drive from the next falling edge
                    await self._timer_to(edge)
                continue
            level, count = self.runs.popleft()
            rx.value = level                      # sampled by the next ``count`` rising edges
            await self._timer_to(self._now()[0] + count)

    async def _wait(self, n: int, timeout_s: float) -> None:
        from cocotb.triggers import First
        if self.runs:
            self._rx_wake.set()
        edge, on_edge = self._now()
        self._catch_up(edge - 1 if on_edge else edge)
        limit = self.cycles + min(int(timeout_s * self.clk_hz), self.max_wait_cycles)
        while len(self.decoder.data) - self._received < n and self.cycles < limit:
            target = limit if not self.decoder.busy else min(limit, self.cycles + self.divisor)
            change = self.dut.tx.value_change
            fired = await First(change, self._timer_to(target))
            edge, on_edge = self._now()
            self._catch_up(edge - 1 if on_edge else edge)
            if fired is change:                   # tx is registered: it changes on a rising edge, seen from there on
                self._tx = int(self.dut.tx.value)

    # ---- Transport ---------------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        for level in uart_levels(bytes(data), self.divisor):
            if self.runs and self.runs[-1][0] == level:
                self.runs[-1][1] += 1
            else:
                self.runs.append([level, 1])

    def read(self, n: int, timeout_s: float) -> bytes:
        from cocotb.task import resume
        resume(self._wait)(n, timeout_s)
        return self._take(n)
