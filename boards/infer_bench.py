"""``sparsyn bench --boards``: the whole model on a board, per scheme — resources, timed Fmax, cycles, images/s,
array utilization and link time — every figure from builds and cycle models of this run.

For each manifest (the digits model compressed with each scheme, for an array that fits the board) the inference
top is built (``sparsyn build``, :func:`sparsyn.boards.build.build_board`); the row has the placer's LC/LUT, FF, EBR,
SPRAM and DSP counts, nextpnr's Fmax (every path timed: a build with a path through a combinational DSP is marked),
the sequenced engine's exact cycles per image (the cycle model the RTL checks equal), images/s at the timed Fmax,
the utilization of the array over the whole network (useful MACs / (PEs x lanes x cycles); 1.0 = the physical
limit) and the UART bytes / time per image at the build's baud rate. A manifest that does not fit is a row with
its one-line reason.
"""
from __future__ import annotations

from pathlib import Path

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.report import format_table, write_json

#: Manifests the benchmark compresses when none are given: scheme -> (array, options), the largest arrays measured
#: to fit the iCE40UP5K (2x2 ternary needs 16 im2col copies of the activations; permdiag 2x1 and pattern 2x2 need
#: more multipliers than its 8 DSPs, and their LUT multipliers overflow the 5280 LCs).
DEFAULT_CONFIGS = {
    "dense": ("2x2", {}), "packcnn": ("2x2", {}), "tight": ("1x2", {"alpha": 2}), "ternary": ("1x1", {}),
    "permdiag": ("1x1", {}), "pattern": ("1x2", {"mults": 1}),
}


def inference_row(manifest, board: str, report: dict, design) -> dict:
    """One benchmark row from a finished inference build's report and its design."""
    from .infer import _link_bytes
    res, clock = report["resources"], next(iter(report["fmax"].values()))
    plan = design.plan
    cycles = int(plan.cycle_model["total"])
    mhz = clock["achieved_mhz"]
    timed = "comb_dsp" not in clock
    return {"manifest": str(manifest), "scheme": report["config"].get("scheme"), "board": board,
            "array": report["config"].get("array"), "engine": design.engine_kind, "weights": design.weights_in,
            "lc": res.get("lut", {}).get("used"), "ff": res.get("ff", {}).get("used"),
            "ebr": res.get("bram", {}).get("used"), "spram": res.get("spram", {}).get("used"),
            "dsp": res.get("dsp", {}).get("used"), "fmax_mhz": mhz, "all_paths_timed": timed,
            "cycles": cycles, "images_per_s": round(mhz * 1e6 / cycles, 1) if timed else None,
            "utilization": round(plan.cycle_model.get("utilization", 0.0), 4),
            "link_bytes": _link_bytes(design), "link_ms": round(_link_bytes(design) * 10 / design.baud * 1e3, 3),
            "baud": design.baud}


def run_board_bench(manifests: dict | None = None, board: str = "icebreaker", out=None, *, quick: bool = False,
                    progress: bool = True, log=print) -> dict:
    """Build the inference top of each manifest (``{label: path}``; default: the digits model compressed with
    every scheme in :data:`DEFAULT_CONFIGS`, cached under ``work/bench/boards``) for ``board``; returns the rows."""
    from sparsyn.sw.compress import compress
    from sparsyn.sw.paths import work_dir

    from .build import build_board
    from .infer import inference_design
    root = Path(out) if out else work_dir() / "bench" / "boards"
    if manifests is None:
        manifests = {}
        for scheme, (array, opts) in DEFAULT_CONFIGS.items():
            if quick and scheme != "dense":
                continue
            path = root / "manifests" / f"{scheme}-{array}"
            if not (path / "manifest.json").exists():
                log(f"compressing the digits model with {scheme} for {array}")
                compress(scheme=scheme, options=dict(opts), array=array, out=path,
                         progress=progress)
            manifests[scheme] = path
    rows = []
    for label, path in manifests.items():
        log(f"building the inference top of {label} for {board}")
        try:
            design = inference_design(path, board, log=lambda *a: None)
            report = build_board(board, manifest=path, top="inference", out=root / "builds" / label,
                                 progress=progress, log=lambda *a: None)
            rows.append({"label": label, **inference_row(path, board, report, design)})
        except SparsynError as err:
            rows.append({"label": label, "board": board, "error": str(err)})
    cols = ["label", "array", "weights", "lc", "ff", "ebr", "spram", "dsp", "fmax_mhz", "all_paths_timed", "cycles",
            "images_per_s", "utilization", "link_ms"]
    ok = [r for r in rows if "error" not in r]
    log(format_table(ok, cols) if ok else "no build finished")
    for r in rows:
        if "error" in r:
            log(f"{r['label']}: {r['error']}")
    doc = {"board": board, "rows": rows}
    write_json(root / "board-bench.json", doc)
    return doc
