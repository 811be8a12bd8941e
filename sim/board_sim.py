"""A simulated board for the host link: the inference top's RTL in a simulator, the UART at bit level.

:class:`AmaranthBoard` is a :class:`~sparsyn.sw.link_client.Transport`: ``write`` queues the bytes as line levels
on the design's ``rx`` pin, ``read`` advances the simulation — one clock at a time, decoding ``tx`` — until the
bytes arrived or the (simulated) timeout passed. Simulated time only runs while the host waits, so the host code
(:class:`~sparsyn.sw.link_client.LinkClient`, ``sparsyn infer``) is exactly the code that talks to a real board.
"""
from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

from .uart_model import UartDecoder, uart_levels


class AmaranthBoard:
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
        avail = bytes(self.decoder.data[self._received:self._received + n])
        self._received += len(avail)
        return avail

    def monotonic(self) -> float:
        """Simulated seconds: the host's timeouts count board time (the client reads its clock here)."""
        return self.cycles / self.clk_hz

    def close(self) -> None:
        pass
