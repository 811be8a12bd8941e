"""Yosys-only synthesis of any Amaranth component: cell counts without place and route.

Used to compare PE datapaths (LUTs per PE, whether any multiplier survives) and, before a board
build, to count the design's multipliers so the DSP blocks are only used when they suffice.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from amaranth.back import rtlil

from sparsyn.sw.errors import SparsynError

from .toolchain import TOOLS, WASM_CRASH, resolve_tool

FAMILIES = ("ice40", "ecp5")

#: Cell-type groups summed into the headline figures.
LUT_CELLS = {"ice40": ("SB_LUT4",), "ecp5": ("LUT4",)}
CARRY_CELLS = {"ice40": ("SB_CARRY",), "ecp5": ("CCU2C",)}
DSP_CELLS = {"ice40": ("SB_MAC16",), "ecp5": ("MULT18X18D", "ALU54B")}
BRAM_CELLS = {"ice40": ("SB_RAM40_4K",), "ecp5": ("DP16KD", "PDPW16KD")}


def _yosys(script: str, cwd: Path, log_name: str) -> None:
    yosys = resolve_tool(TOOLS["ice40"][0])
    (cwd / "synth.ys").write_text(script)
    proc = subprocess.run([yosys, "-q", "-l", log_name, "synth.ys"], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        log = cwd / log_name
        text = (log.read_text(errors="replace") if log.exists() else "") + proc.stdout + proc.stderr
        err = next((l for l in text.splitlines() if "ERROR" in l), "")
        if not err and "Wasm" in text:
            err = WASM_CRASH
        raise SparsynError(f"yosys failed: {err.strip() or 'exit status ' + str(proc.returncode)} (log: {log})")


def _cells(stat_json: Path, top: str) -> Counter:
    doc = json.loads(stat_json.read_text())
    mods = doc.get("modules", {})
    mod = mods.get(f"\\{top}") or mods.get(top) or (doc.get("design") if doc.get("design") else None)
    if mod is None and mods:
        mod = next(iter(mods.values()))
    counts = (mod or {}).get("num_cells_by_type", {})
    return Counter({k.lstrip("\\"): int(v) for k, v in counts.items()})


def coarse_census(il_text: str, top: str = "top", workdir: Path | None = None) -> dict:
    """Multipliers and memories of an RTLIL design before technology mapping.

    Returns ``{"muls": [(a_width, b_width), ...], "mems": [(width, depth, read ports, write ports)], "cells": {...}}``.
    """
    with tempfile.TemporaryDirectory(prefix="sparsyn-census-") as tmp:
        cwd = Path(workdir) if workdir else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        (cwd / "design.il").write_text(il_text)
        _yosys(f"read_rtlil design.il\nhierarchy -top {top}\nproc\nflatten\nopt -fast\nwreduce\nopt_clean\n"
               "write_json coarse.json\ntee -q -o coarse_stat.json stat -json\n", cwd, "coarse.log")
        netlist = json.loads((cwd / "coarse.json").read_text())
        muls, mems = [], []
        for mod in netlist["modules"].values():
            for cell in mod["cells"].values():
                p = {k: int(v, 2) if isinstance(v, str) and v and set(v) <= {"0", "1"} else v
                     for k, v in cell.get("parameters", {}).items()}
                if cell["type"] == "$mul":
                    muls.append((p["A_WIDTH"], p["B_WIDTH"]))
                elif cell["type"] in ("$mem_v2", "$mem"):
                    mems.append((p["WIDTH"], p["SIZE"], p["RD_PORTS"], p["WR_PORTS"]))
        return {"muls": muls, "mems": mems, "cells": dict(_cells(cwd / "coarse_stat.json", top))}


def synthesize_component(component, device_family: str, *, name: str = "top", ports=None,
                         dsp: bool = True, out: Path | None = None) -> dict:
    """Synthesize ``component`` (an Amaranth ``wiring.Component`` or Elaboratable + ``ports``) with yosys.

    ``device_family`` is ``"ice40"`` (``synth_ice40``, with ``-dsp`` when ``dsp``) or ``"ecp5"``
    (``synth_ecp5``, with ``-nodsp`` when not ``dsp``). Logs and netlists go to ``out`` (default: a
    temporary folder). Returns a JSON-able dict::

        {"family", "luts", "ffs", "carries", "dsps", "brams", "muls" (the $mul cells before mapping,
         as [a_width, b_width]), "cells" (every mapped cell type -> count), "seconds"}
    """
    if device_family not in FAMILIES:
        component._MustUse__silence = True  # refused, not forgotten
        raise SparsynError(f"unknown FPGA family {device_family!r}; choose one of: {', '.join(FAMILIES)}")
    t0 = time.time()
    try:
        il = rtlil.convert(component, name=name, ports=ports) if ports is not None else \
            rtlil.convert(component, name=name)
    except TypeError as err:
        raise SparsynError(f"cannot convert {type(component).__name__} to RTLIL ({err}); "
                           "pass a wiring.Component, or ports=[...] for a plain Elaboratable") from None
    with tempfile.TemporaryDirectory(prefix="sparsyn-synth-") as tmp:
        cwd = Path(out) if out else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        census = coarse_census(il, top=name, workdir=cwd)
        opts = ("-dsp" if dsp else "") if device_family == "ice40" else ("" if dsp else "-nodsp")
        _yosys(f"read_rtlil design.il\nsynth_{device_family} {opts} -top {name}\n"
               "tee -q -o mapped_stat.json stat -json\n", cwd, "synth.log")
        cells = _cells(cwd / "mapped_stat.json", name)
    ffs = sum(v for k, v in cells.items() if "DFF" in k.upper() or k == "TRELLIS_FF")
    return {
        "family": device_family,
        "luts": sum(cells[c] for c in LUT_CELLS[device_family]),
        "ffs": ffs,
        "carries": sum(cells[c] for c in CARRY_CELLS[device_family]),
        "dsps": sum(cells[c] for c in DSP_CELLS[device_family]),
        "brams": sum(cells[c] for c in BRAM_CELLS[device_family]),
        "muls": [list(m) for m in census["muls"]],
        "cells": dict(sorted(cells.items())),
        "seconds": round(time.time() - t0, 2),
    }
