"""Build reports: resources and Fmax from nextpnr's own JSON report (``--report``) and yosys' ``stat -json``.

``report.json`` in the build folder holds, per build::

    {"board", "device", "family", "board_clock_mhz", "config": {design configuration},
     "resources": {"lut"|"ff"|"bram"|"spram"|"dsp"|"lutram"|"io": {"used", "available", "cell"}},
     "fmax": {clock: {"achieved_mhz", "constraint_mhz", "board_mhz", "meets_board_clock",
                      ["comb_dsp": {"into_ns", "out_of_ns", "around_ns", "bound_mhz", "note"}],
                      ["target_mhz", "meets_target"]}},
     "fit_estimate": {...}, "dsp": {...}, "times_s": {tool: seconds}, "bitstream", "build_dir"}
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.report import format_table

#: nextpnr utilisation cell type per headline resource (None: not a placer cell of that family).
NEXTPNR_CELLS = {
    "ice40": {"lut": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP", "pll": "ICESTORM_PLL", "io": "SB_IO"},
    "ecp5": {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D",
             "lutram": "TRELLIS_RAMW", "pll": "EHXPLLL", "io": "TRELLIS_IO"},
}


def parse_nextpnr_report(path: Path, family: str) -> dict:
    """Utilisation and Fmax from a nextpnr ``--report`` JSON file.

    Returns ``{"resources": {name: {"used", "available", "cell"}}, "fmax": {clock: {"achieved_mhz",
    "constraint_mhz"}}, "utilization": {raw cell type: {...}}}``. Clock names lose nextpnr's
    ``$glbnet$`` prefix; nextpnr's ``$PACKER_GND_NET`` pseudo clock is dropped.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SparsynError(f"cannot read the nextpnr report {path} ({err}); re-run the build") from None
    util = doc.get("utilization", {})
    resources = {}
    for name, cell in NEXTPNR_CELLS[family].items():
        if cell in util:
            resources[name] = {"used": int(util[cell]["used"]), "available": int(util[cell]["available"]),
                               "cell": cell}
    fmax = {}
    for clock, v in doc.get("fmax", {}).items():
        if clock.startswith("$PACKER_"):  # nextpnr's constant-net pseudo clock (e.g. DSP clock pins tied low)
            continue
        name = clock.replace("$glbnet$", "")
        fmax[name] = {"achieved_mhz": round(float(v["achieved"]), 2),
                      "constraint_mhz": round(float(v["constraint"]), 2)}
    for path in doc.get("critical_paths", []):
        clock = path.get("from", "").split(" ", 1)[-1].replace("$glbnet$", "")
        steps = path.get("path", [])
        if clock in fmax and steps and "critical_path" not in fmax[clock] \
                and path.get("to", "").endswith(clock):
            fmax[clock]["critical_path"] = {
                "from": _hier(steps[0]["from"]["cell"]), "to": _hier(steps[-1]["to"]["cell"]),
                "delay_ns": round(sum(float(s["delay"]) for s in steps), 2),
                "logic_levels": sum(1 for s in steps if s.get("type") == "logic")}
    # Paths through combinational DSP blocks (iCE40 SB_MAC16 without registers): nextpnr gives their
    # clock pin (tied low) the pseudo clock ``$PACKER_GND_NET`` and splits every such path at the DSP,
    # timing the two halves as unconstrained cross-domain paths, without the multiplier's own delay.
    comb_dsp = {}
    for path in doc.get("critical_paths", []):
        src, dst = path.get("from", ""), path.get("to", "")
        steps = path.get("path", [])
        if not steps or ("$PACKER_" in src) == ("$PACKER_" in dst):
            continue
        delay = round(sum(float(s["delay"]) for s in steps), 2)
        if "$PACKER_" in dst:
            comb_dsp["into_ns"] = max(delay, comb_dsp.get("into_ns", 0.0))
        else:
            comb_dsp["out_of_ns"] = max(delay, comb_dsp.get("out_of_ns", 0.0))
    return {"resources": resources, "fmax": fmax, "utilization": util, "comb_dsp": comb_dsp}


def _hier(cell: str) -> str:
    """A placed cell's design path, without the techmap suffixes (``core.engine.requant.prod_SB_DFF...``)."""
    return re.split(r"_SB_|_TRELLIS|\$|_LC$|_DFFLC$|_LUT4|_CCU2C", cell, maxsplit=1)[0] or cell


def parse_yosys_stat(path: Path) -> dict[str, int]:
    """Cell type -> count of the top module from ``tee -o FILE stat -json`` (after technology mapping)."""
    doc = json.loads(Path(path).read_text())
    mods = doc.get("modules", {})
    top = doc.get("design") or (next(iter(mods.values())) if mods else {})
    return {k.lstrip("\\"): int(v) for k, v in top.get("num_cells_by_type", {}).items()}


def ff_count(cells: dict[str, int], family: str) -> int:
    """Flip-flops among yosys' mapped cells (iCE40 SB_DFF*, ECP5 TRELLIS_FF)."""
    if family == "ice40":
        return sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    return sum(v for k, v in cells.items() if k == "TRELLIS_FF")


def lut_count(cells: dict[str, int], family: str) -> int:
    return cells.get("SB_LUT4" if family == "ice40" else "LUT4", 0)


#: The project's Fmax goal per device (issue 4: the default digits model on the UP5K at >= 45 MHz),
#: reported next to the board clock when no --clock-target is given.
PROJECT_FMAX_TARGET_MHZ = {"iCE40UP5K": 45.0}


def make_report(board, build_dir: Path, name: str, config: dict, fit: dict, dsp: dict,
                times: dict, fmax_target_mhz: float | None = None) -> dict:
    """Assemble ``report.json`` for one finished build in ``build_dir``."""
    build_dir = Path(build_dir)
    family = board.family
    pnr = parse_nextpnr_report(build_dir / f"{name}.report.json", family)
    cells = parse_yosys_stat(build_dir / f"{name}.stat.json")
    resources = dict(pnr["resources"])
    if "ff" not in resources:  # iCE40: a logic cell is LUT4 + FF, nextpnr counts cells; FFs from yosys
        resources["ff"] = {"used": ff_count(cells, family), "available": board.dev.ffs, "cell": "SB_DFF*"}
    resources["lut4"] = {"used": lut_count(cells, family), "available": board.dev.luts,
                         "cell": "SB_LUT4" if family == "ice40" else "LUT4"}
    board_mhz = board.clock_hz / 1e6
    fmax_target_mhz = fmax_target_mhz or PROJECT_FMAX_TARGET_MHZ.get(board.device)
    fmax = {}
    comb = pnr.get("comb_dsp", {})
    untimed = None
    if comb:
        around = round(comb.get("into_ns", 0.0) + comb.get("out_of_ns", 0.0), 2)
        untimed = {**comb, "around_ns": around, "bound_mhz": round(1000.0 / around, 2) if around else None,
                   "note": "paths through combinational DSP multipliers are not timed by nextpnr (it splits them "
                           "at the DSP and leaves out the multiplier's own delay); into_ns / out_of_ns are the "
                           "worst halves (possibly at different DSPs), bound_mhz = 1000 / their sum: the clock "
                           "such a path could reach if the multiply took no time"}
    for clock, v in pnr["fmax"].items():
        fmax[clock] = {**v, "board_mhz": board_mhz, "meets_board_clock": v["achieved_mhz"] >= board_mhz}
        if untimed:
            fmax[clock]["comb_dsp"] = untimed
        if fmax_target_mhz:
            fmax[clock]["target_mhz"] = fmax_target_mhz
            # with untimed DSP paths the target is not demonstrated, whatever nextpnr's figure says
            fmax[clock]["meets_target"] = v["achieved_mhz"] >= fmax_target_mhz and untimed is None
    bitstream = build_dir / (f"{name}.bin" if family == "ice40" else f"{name}.bit")
    return {"board": board.name, "device": board.device, "family": family, "board_clock_mhz": board_mhz,
            "pll": False, "config": config, "resources": resources, "fmax": fmax,
            "fit_estimate": {k: v for k, v in fit.items() if k != "memories"},
            "memories": fit.get("memories", []), "dsp": dsp, "times_s": times,
            "bitstream": str(bitstream) if bitstream.exists() else None, "build_dir": str(build_dir),
            "yosys_cells": cells}


RESOURCE_LABELS = [("lut", "logic cells (LUT4+FF)", "LUTs (TRELLIS_COMB)"), ("lut4", "LUT4", "LUT4"),
                   ("ff", "flip-flops", "flip-flops"), ("bram", "EBR (4 kbit)", "EBR (DP16KD 18 kbit)"),
                   ("spram", "SPRAM (256 kbit)", None), ("dsp", "DSP (SB_MAC16)", "DSP (MULT18X18D)"),
                   ("lutram", None, "LUT RAM (TRELLIS_RAMW)"), ("io", "I/O", "I/O")]


def format_report(report: dict) -> str:
    """The human-readable summary of a build report: configuration, resources, Fmax, tool times."""
    fam = report["family"]
    cfg = report["config"]
    head = (f"{report['board']} ({report['device']}), board clock {report['board_clock_mhz']:g} MHz, no PLL; "
            + ", ".join(f"{k} {v}" for k, v in cfg.items() if k in ("array", "layer", "scheme", "engine")))
    rows = []
    for key, ice, ecp in RESOURCE_LABELS:
        label = ice if fam == "ice40" else ecp
        r = report["resources"].get(key)
        if label and r:
            pct = 100.0 * r["used"] / r["available"] if r["available"] else 0.0
            rows.append({"resource": label, "used": r["used"], "available": r["available"], "use %": round(pct, 1)})
    res = format_table(rows, ["resource", "used", "available", "use %"])
    frows = []
    for clock, v in report["fmax"].items():
        row = {"clock": clock, "Fmax MHz": v["achieved_mhz"], "constraint MHz": v["constraint_mhz"],
               "board MHz": v["board_mhz"], "meets board clock": v["meets_board_clock"]}
        if "target_mhz" in v:
            met = v["meets_target"] or ("not shown (DSP paths untimed)" if v["achieved_mhz"] >= v["target_mhz"]
                                        else False)
            row.update({"target MHz": v["target_mhz"], "meets target": met})
        frows.append(row)
    fm = format_table(frows)
    for clock, v in report["fmax"].items():
        cd = v.get("comb_dsp")
        if cd:
            fm += (f"\nuntimed ({clock}): paths through combinational DSP multipliers — nextpnr times up to "
                   f"{cd.get('into_ns', 0)} ns into and {cd.get('out_of_ns', 0)} ns out of them, not the multiply "
                   f"itself ({cd['bound_mhz']} MHz if the multiply took no time)")
    for clock, v in report["fmax"].items():
        cp = v.get("critical_path")
        if cp:
            fm += (f"\ncritical path ({clock}): {cp['from']} -> {cp['to']}, {cp['delay_ns']} ns, "
                   f"{cp['logic_levels']} logic levels")
    times = ", ".join(f"{k} {v:.1f} s" for k, v in report["times_s"].items())
    est = report.get("fit_estimate", {})
    dsp = report.get("dsp", {})
    lines = [head, res, fm,
             f"fit estimate: {est.get('bram_blocks', '?')} of {est.get('bram_blocks_available', '?')} block RAMs; "
             f"DSP: {dsp.get('note', '-')}",
             f"tool times: {times}",
             f"bitstream: {report['bitstream']}"]
    return "\n".join(lines)
