"""Yosys-only synthesis of any Amaranth component: cell counts without place and route.

The one yosys synthesis driver of the project: the board build counts a design's multipliers with
:func:`coarse_census` (so the DSP blocks are only used when they suffice), and the benchmarks compare
PE datapaths with :func:`synthesize_component` (LUTs per PE, whether any multiplier survives; the
ternary bench, ``sparsyn.sw.bench_ternary``, uses ``mapper="abc"``).
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
#: Every DSP primitive yosys maps to (ECP5: the 18x18 and 9x9 multipliers and the 54-bit ALU).
DSP_CELLS = {"ice40": ("SB_MAC16",), "ecp5": ("MULT18X18D", "ALU54B", "MULT9X9D")}
BRAM_CELLS = {"ice40": ("SB_RAM40_4K",), "ecp5": ("DP16KD", "PDPW16KD")}
#: LUT4 slots one carry cell occupies beyond the LUT cells: an ECP5 CCU2C (2-bit carry) fills both
#: LUT4s of a slice; an iCE40 SB_CARRY rides on the logic cell of its SB_LUT4 (no extra LUT).
CARRY_LUT_SLOTS = {"ice40": {"SB_CARRY": 0}, "ecp5": {"CCU2C": 2}}
#: Multiplier cells counted before technology mapping (yosys' coarse netlist).
MUL_CELLS = ("$mul", "$macc", "$macc_v2")

#: LUT mappers of :func:`synthesize_component`.
MAPPERS = ("abc9", "abc")
# mapper "abc": yosys' synth_<family> script up to LUT mapping (coarse synthesis, DSP, RAM and FF
# mapping), then classic ABC (``abc -lut 4``; the yowasp ABC9 step crashes on some PE designs) and the
# family's remaining cell-mapping steps. {dsp} is the DSP switch of the family.
_ABC_FLOWS = {
    "ice40": "synth_ice40 -top {top} {dsp} -run :map_luts\ntechmap -map +/ice40/latches_map.v\nabc -lut 4\n"
             "ice40_wrapcarry -unwrap\ntechmap -map +/ice40/ff_map.v\nclean\nopt_lut -tech ice40\n"
             "techmap -map +/ice40/cells_map.v\nclean\n",
    "ecp5": "synth_ecp5 -top {top} {dsp} -run :map_luts\ntechmap -map +/lattice/latches_map.v\nabc -lut 4\nclean\n"
            "techmap -map +/lattice/cells_map_trellis.v\nopt_lut_ins -tech lattice\nclean\n",
}


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


def _dsp_switch(device_family: str, dsp: bool) -> str:
    if device_family == "ice40":
        return "-dsp" if dsp else ""
    return "" if dsp else "-nodsp"


def synthesize_component(component, device_family: str, *, name: str = "top", ports=None,
                         dsp: bool = True, mapper: str = "abc9", out: Path | None = None) -> dict:
    """Synthesize ``component`` (an Amaranth ``wiring.Component`` or Elaboratable + ``ports``) with yosys.

    ``device_family`` is ``"ice40"`` (``synth_ice40``, with ``-dsp`` when ``dsp``) or ``"ecp5"``
    (``synth_ecp5``, with ``-nodsp`` when not ``dsp``). ``mapper`` picks the LUT mapping:

    * ``"abc9"`` (default): yosys' complete ``synth_<family>`` script, ABC9 LUT mapping — what a board
      build runs;
    * ``"abc"``: the same script up to LUT mapping (coarse synthesis, DSP / RAM / FF mapping), then
      classic ABC ``abc -lut 4`` and the family's cell mapping (iCE40: carry unwrap, FF and cell maps,
      ``opt_lut``; ECP5: ``cells_map_trellis``, ``opt_lut_ins``). The flow stops there (no
      ``synth_<family>`` ``check`` / output steps). The yowasp ABC9 step crashes on some PE designs, and
      the PE comparisons of ``sparsyn bench --scheme ternary`` were always measured with this flow, so
      their LUT figures stay comparable.

    What is counted (in the mapped netlist unless said otherwise):

    * ``luts``: LUT4 cells (``SB_LUT4`` / ``LUT4``);
    * ``lut_equiv``: LUT4 slots used by logic: ``luts`` + 2 per ECP5 ``CCU2C`` (a 2-bit carry cell
      fills both LUT4s of its slice); on iCE40 ``= luts`` (an ``SB_CARRY`` rides on its LUT's logic cell);
    * ``ffs``: flip-flop cells (``*DFF*``, ``TRELLIS_FF``); ``carries``: ``SB_CARRY`` / ``CCU2C``;
    * ``dsps``: DSP primitives (iCE40 ``SB_MAC16``; ECP5 ``MULT18X18D``, ``ALU54B``, ``MULT9X9D``);
      ``brams``: block RAMs;
    * before technology mapping (yosys ``proc; flatten; opt -fast; wreduce``): ``muls`` (every
      ``$mul`` as [a_width, b_width]) and ``mul_cells`` (``$mul`` + ``$macc`` + ``$macc_v2`` cells);
    * ``cells`` (every mapped cell type -> count), ``mapper``, ``dsp_allowed``, ``seconds``.

    Logs and netlists go to ``out`` (default: a temporary folder).
    """
    t0 = time.time()
    try:  # converted first: a refused request leaves no unused component behind
        il = rtlil.convert(component, name=name, ports=ports) if ports is not None else \
            rtlil.convert(component, name=name)
    except TypeError as err:
        raise SparsynError(f"cannot convert {type(component).__name__} to RTLIL ({err}); "
                           "pass a wiring.Component, or ports=[...] for a plain Elaboratable") from None
    if device_family not in FAMILIES:
        raise SparsynError(f"unknown FPGA family {device_family!r}; choose one of: {', '.join(FAMILIES)}")
    if mapper not in MAPPERS:
        raise SparsynError(f"unknown LUT mapper {mapper!r}; choose one of: {', '.join(MAPPERS)}")
    with tempfile.TemporaryDirectory(prefix="sparsyn-synth-") as tmp:
        cwd = Path(out) if out else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        census = coarse_census(il, top=name, workdir=cwd)
        switch = _dsp_switch(device_family, dsp)
        if mapper == "abc9":
            flow = f"synth_{device_family} {switch} -top {name}\n"
        else:
            flow = _ABC_FLOWS[device_family].format(top=name, dsp=switch)
        _yosys(f"read_rtlil design.il\n{flow}tee -q -o mapped_stat.json stat -json\n", cwd, "synth.log")
        cells = _cells(cwd / "mapped_stat.json", name)
    ffs = sum(v for k, v in cells.items() if "DFF" in k.upper() or k == "TRELLIS_FF")
    luts = sum(cells[c] for c in LUT_CELLS[device_family])
    return {
        "family": device_family,
        "mapper": mapper,
        "dsp_allowed": bool(dsp),
        "luts": luts,
        "lut_equiv": luts + sum(n * cells[c] for c, n in CARRY_LUT_SLOTS[device_family].items()),
        "ffs": ffs,
        "carries": sum(cells[c] for c in CARRY_CELLS[device_family]),
        "dsps": sum(cells[c] for c in DSP_CELLS[device_family]),
        "brams": sum(cells[c] for c in BRAM_CELLS[device_family]),
        "muls": [list(m) for m in census["muls"]],
        "mul_cells": sum(v for k, v in census["cells"].items() if k in MUL_CELLS),
        "cells": dict(sorted(cells.items())),
        "seconds": round(time.time() - t0, 2),
    }
