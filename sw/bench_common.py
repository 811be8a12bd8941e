"""Pieces every per-scheme benchmark shares: a progress line with the seconds since start, a table printed as
soon as it is measured, and one torch thread for the small models (it is as fast and leaves the other core free)."""
from __future__ import annotations

import time
from contextlib import contextmanager

from .report import format_table


class BenchLog:
    """``log(msg)`` prints ``[<name> bench  12.3 s] msg`` (seconds since ``t0``)."""

    def __init__(self, name: str, t0: float | None = None):
        self.name, self.t0 = name, time.time() if t0 is None else t0

    def __call__(self, msg: str) -> None:
        print(f"[{self.name} bench {time.time() - self.t0:7.1f} s] {msg}", flush=True)


def show_table(log, name: str, rows: list[dict], cols: list[str], title: str) -> None:
    """Log that table ``name`` is done and print it."""
    log(f"table {name}: {len(rows)} rows")
    print(format_table(rows, cols, title=title))
    print(flush=True)


@contextmanager
def one_torch_thread():
    """Run the block with one torch thread (restored after)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
