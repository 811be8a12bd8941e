"""The dev boards sparsyn builds for: name -> amaranth-boards platform, device, clock and status LEDs."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from sparsyn.sw.errors import SparsynError

from .devices import Device, get_device


@dataclass(frozen=True)
class Board:
    """One supported board.

    Attributes
    ----------
    name : the ``--board`` name.
    module, platform : amaranth-boards module and platform class name.
    device : FPGA part (key of :data:`sparsyn.boards.devices.DEVICES`).
    clock_hz : the board oscillator that drives the ``sync`` domain (no PLL: the design runs on it).
    leds : how the self-test shows its state — ``(resource, number, subsignal or None)`` for the
        ``pass`` LED (blinks while running, steady when the self-test passed) and the ``fail`` LED.
    """
    name: str
    module: str
    platform: str
    device: str
    clock_hz: float
    pass_led: tuple
    fail_led: tuple
    description: str

    @property
    def dev(self) -> Device:
        return get_device(self.device)

    @property
    def family(self) -> str:
        return self.dev.family

    def make_platform(self):
        """A fresh amaranth-boards platform object (platforms are single-use: build() consumes them)."""
        mod = importlib.import_module(self.module)
        return getattr(mod, self.platform)()


def _ulx3s(size: str) -> Board:
    return Board(f"ulx3s-{size}", "amaranth_boards.ulx3s", f"ULX3S_{size.upper()}_Platform",
                 f"LFE5U-{size.upper()}", 25e6, ("led", 0, None), ("led", 1, None),
                 f"Radiona ULX3S, ECP5 LFE5U-{size.upper()}, 25 MHz; LED D0 = pass, D1 = fail")


def _orangecrab(size: str) -> Board:
    return Board(f"orangecrab-{size}", "amaranth_boards.orangecrab_r0_2",
                 f"OrangeCrabR0_2_{size.upper()}Platform", f"LFE5U-{size.upper()}", 48e6,
                 ("rgb_led", 0, "g"), ("rgb_led", 0, "r"),
                 f"OrangeCrab r0.2, ECP5 LFE5U-{size.upper()}, 48 MHz; RGB LED green = pass, red = fail")


BOARDS: dict[str, Board] = {b.name: b for b in [
    Board("icebreaker", "amaranth_boards.icebreaker", "ICEBreakerPlatform", "iCE40UP5K", 12e6,
          ("led_g", 0, None), ("led_r", 0, None),
          "1BitSquared iCEBreaker, iCE40UP5K, 12 MHz; green LED = pass, red LED = fail"),
    *(_ulx3s(s) for s in ("12f", "25f", "45f", "85f")),
    *(_orangecrab(s) for s in ("25f", "85f")),
]}


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    """The board called ``name``; an unknown name is a one-line error listing the known ones."""
    key = str(name).strip().lower()
    if key not in BOARDS:
        raise SparsynError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[key]
