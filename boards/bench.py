"""``sparsyn bench --fpga``: sweep array sizes through synthesis and place & route; LUTs per PE and Fmax.

Every figure comes from the builds run by the sweep (nextpnr's ``--report`` and yosys' ``stat``).
The design is the board self-test around the LayerEngine of the default model's largest conv layer
(dense int8), so it includes the engine's control, buffers, requantizer and the self-test ROMs.
The array is part of the compressed artefact, so every array size of the sweep gets its own manifest:
the default model compressed for that array (:func:`sparsyn.boards.build.default_manifest`, cached in
the work folder per array). A manifest given by the caller is packed for one array: the sweep points
with another array are recorded as failed, with the one-line reason (re-run compress for them).

``luts`` is the placer's logic count — iCE40 ``ICESTORM_LC`` (logic cells: LUT4 and/or FF and
carry), ECP5 ``TRELLIS_COMB`` (LUT4 slots, including carry and LUT-RAM halves) — the figure vendor
tools report as "LUTs"; ``lut4`` is yosys' mapped LUT4 cell count. Two per-PE figures are printed:

* ``LUT/PE`` = ``luts`` of the whole design / PEs — what the build costs per PE, overhead included;
* ``marginal LUT/PE`` = least-squares slope of ``luts`` over PEs across one board's sweep points
  that map multipliers the same way — the cost of one more PE with the fixed overhead (control,
  requant, self-test) taken out.

Place & route is constrained at ``target_mhz`` (default 45 MHz on iCE40, 100 MHz on ECP5) so that
nextpnr works towards a realistic clock; the board itself runs from its oscillator (no PLL).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.report import format_table, write_json
from sparsyn.sw.schedule import ArrayConfig

from .platforms import get_board

#: Sweeps (run by hand). ``default``: the issue's range, 2x2...8x8 on the UP5K (points that do not fit
#: are recorded as such) and up to 16x16 on the ECP5-85F; ``quick``: one point per family; ``full``:
#: adds 12x12 on the ECP5.
SWEEPS = {
    "default": {"icebreaker": ["2x2", "2x3", "2x4", "4x4", "8x8"], "ulx3s-85f": ["2x2", "4x4", "8x8", "16x16"]},
    "quick": {"icebreaker": ["2x2"], "ulx3s-85f": ["4x4"]},
    "full": {"icebreaker": ["2x2", "2x3", "2x4", "4x4", "8x8"],
             "ulx3s-85f": ["2x2", "4x4", "8x8", "12x12", "16x16"]},
}
TARGET_MHZ = {"ice40": 45.0, "ecp5": 100.0}


def marginal_luts_per_pe(points: list[tuple[int, int]]) -> float | None:
    """Least-squares slope of LUTs over PEs for (pes, luts) points with at least two distinct PE counts."""
    if len({p for p, _ in points}) < 2:
        return None
    pes, luts = np.array(points, dtype=float).T
    return float(np.polyfit(pes, luts, 1)[0])


def run_fpga_bench(boards: dict | list | None = None, arrays: list[str] | None = None, out=None, *,
                   quick: bool = False, full: bool = False, manifest=None, layer: str | None = None,
                   target_mhz: dict | None = None,
                   progress: bool = True, log=print) -> dict:
    """Build every (board, array) of the sweep and tabulate LUTs, LUTs per PE and Fmax.

    ``boards``: {board: [arrays]} or a list of board names (then ``arrays`` for each, or the default
    sweep's); default :data:`SWEEPS` ``["default"]`` (``quick`` / ``full`` pick the other sweeps).
    ``out``: folder for the builds and ``fpga-bench.json`` (default ``work/bench/fpga``). A point that
    does not fit is recorded with its reason and the sweep goes on. ``layer``: the layer the self-test
    runs (default: the largest conv layer; ``"all"``: the whole model, if a ModelEngine exists).
    Returns the JSON-able results.
    """
    sweep_name = "full" if full else "quick" if quick else "default"
    if boards is None:
        plan = dict(SWEEPS[sweep_name])
    elif isinstance(boards, dict):
        plan = {b: list(a) for b, a in boards.items()}
    else:
        plan = {b: list(arrays or SWEEPS["full"].get(b, ["2x2", "4x4"])) for b in boards}
    for b, arrs in plan.items():
        get_board(b)
        for a in arrs:
            ArrayConfig.parse(a)
    targets = {**TARGET_MHZ, **(target_mhz or {})}
    if out is None:
        from sparsyn.sw.paths import work_dir
        out = work_dir() / "bench" / "fpga"
    out = Path(out)

    from .build import build_core, default_manifest, make_selftest, pick_layer
    from .toolchain import check_toolchain
    from sparsyn.sw.manifest import load_manifest, resolve_array
    for b in plan:
        check_toolchain(get_board(b).family)
    loaded: dict[str, tuple] = {}

    def manifest_for(arr: ArrayConfig):
        """(path, model, packed, self-test layer name) of the manifest packed for ``arr`` (loaded once)."""
        key = f"{arr.rows}x{arr.cols}"
        if key not in loaded:
            path = Path(manifest) if manifest else default_manifest(arr, log)
            model, packed, doc = load_manifest(path)
            resolve_array(doc, arr)   # a given manifest packed for another array: one-line refusal
            loaded[key] = (path, model, packed, None if layer == "all" else pick_layer(model, layer).name)
        return loaded[key]

    rows = []
    t_all = time.time()
    for bname, arrs in plan.items():
        board = get_board(bname)
        target = targets[board.family]
        for a in arrs:
            arr = ArrayConfig.parse(a)
            pes = arr.rows * arr.cols
            row = {"board": bname, "device": board.device, "array": a, "pes": pes}
            log(f"== {bname} {a} ==")
            t0 = time.time()
            try:
                mpath, model, packed, layer_name = manifest_for(arr)
                row["manifest"] = str(mpath)
                core, config = make_selftest(mpath, model, packed, None, layer_name, log=log)
                rep = build_core(board, core, out / f"{bname}-{a}", config=config, progress=progress,
                                 fmax_target_mhz=target, log=lambda *_: None)
            except SparsynError as err:
                row.update(status="does not fit" if "fit" in str(err) or "Unable to place" in str(err)
                           else "failed", reason=str(err), build_s=round(time.time() - t0, 1))
                log(f"   {row['status']}: {err}")
                rows.append(row)
                continue
            res = rep["resources"]
            clock = next(iter(rep["fmax"].values()), {})
            luts = res["lut"]["used"]
            row.update(status="ok", layer=config["layer"],
                       luts=luts, luts_available=res["lut"]["available"], lut4=res["lut4"]["used"],
                       ffs=res["ff"]["used"], bram=res["bram"]["used"], dsp=res.get("dsp", {}).get("used", 0),
                       dsp_mode="DSP" if rep["dsp"]["use"] else "LUT",
                       lut_per_pe=round(luts / pes, 1), fmax_mhz=clock.get("achieved_mhz"),
                       # paths through combinational DSPs, which nextpnr does not time (see report.py)
                       dsp_untimed_mhz=clock.get("comb_dsp", {}).get("bound_mhz"),
                       target_mhz=target, board_mhz=rep["board_clock_mhz"],
                       engine_cycles=config.get("engine_cycles"),
                       build_s=round(time.time() - t0, 1))
            log(f"   {luts} LUTs, {row['lut_per_pe']} LUT/PE, Fmax {row['fmax_mhz']} MHz "
                f"({row['dsp_mode']} multipliers), {row['build_s']} s")
            rows.append(row)

    marginal = {}
    for bname in plan:
        for mode in ("LUT", "DSP"):
            pts = [(r["pes"], r["luts"]) for r in rows if r["board"] == bname and r["status"] == "ok"
                   and r["dsp_mode"] == mode]
            slope = marginal_luts_per_pe(pts)
            if slope is not None:
                marginal[f"{bname} ({mode} multipliers)"] = round(slope, 1)
    built = sorted({r["layer"] for r in rows if r.get("layer")})
    what = ", ".join("whole model" if name == "all" else name for name in built) or layer or "largest conv layer"
    doc = {"sweep": sweep_name, "design": f"self-test + engine ({what})",
           "manifest": str(manifest) if manifest else "default digits model, dense, compressed per array size",
           "rows": rows, "marginal_lut_per_pe": marginal,
           "seconds": round(time.time() - t_all, 1)}
    cols = ["board", "array", "pes", "status", "luts", "lut4", "ffs", "bram", "dsp", "dsp_mode", "lut_per_pe",
            "fmax_mhz", "dsp_untimed_mhz", "target_mhz", "board_mhz", "build_s"]
    log(format_table(rows, cols, title="FPGA sweep (luts = placed LUTs: iCE40 logic cells, ECP5 TRELLIS_COMB; LUT/PE = luts / PEs)"))
    for what, slope in marginal.items():
        log(f"{what}: marginal LUTs per PE (least-squares slope over the sweep): {slope}")
    if any(r.get("dsp_untimed_mhz") for r in rows):
        log("dsp_untimed_mhz: nextpnr does not time paths through combinational DSP multipliers (iCE40 "
            "SB_MAC16 in the PEs); this is 1000 / the logic around them in ns, the multiply itself excluded")
    write_json(out / "fpga-bench.json", doc)
    return doc
