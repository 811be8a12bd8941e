"""Verilator lint of generated Verilog (``verilator --lint-only -Wall`` with sparsyn's waiver file)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sparsyn.hw.generate import WAIVER_NAME, waiver_text
from sparsyn.sw.errors import SparsynError

from .tools import verilator_env


def lint(verilog_path, top: str | None = None, waivers: Path | None = None) -> str:
    """``verilator --lint-only -Wall`` on one generated file with the waiver file beside it.

    Returns Verilator's output (empty when clean); raises SparsynError naming the first warning.
    """
    path = Path(verilog_path)
    if not path.exists():
        raise SparsynError(f"Verilog file {path} not found; run 'sparsyn generate' first")
    waivers = Path(waivers) if waivers else path.parent / WAIVER_NAME
    if not waivers.exists():
        waivers.write_text(waiver_text())
    top = top or path.stem
    env = verilator_env(dict(os.environ))
    cmd = ["verilator", "--lint-only", "-Wall", str(waivers), str(path), "--top-module", top]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        first = next((ln for ln in text.splitlines() if ln.startswith("%")), text.strip()[:200])
        raise SparsynError(f"verilator lint of {path.name} failed: {first}")
    return text
