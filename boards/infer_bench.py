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

#: Manifests the benchmark compresses when none are given, per board: scheme -> (array, options). iCEBreaker: the
#: largest arrays measured to fit the iCE40UP5K (2x2 ternary needs 16 im2col copies of the activations; permdiag 2x1
#: and pattern 2x2 need more multipliers than its 8 DSPs, and their LUT multipliers overflow the 5280 LCs). ULX3S-85F:
#: the 8x8 dense array of the ECP5 target and every scheme at 4x4.
BOARD_CONFIGS = {
    "icebreaker": {"dense": ("2x2", {}), "packcnn": ("2x2", {}), "tight": ("1x2", {"alpha": 2}),
                   "ternary": ("1x1", {}), "permdiag": ("1x1", {}), "pattern": ("1x2", {"mults": 1})},
    "ulx3s-85f": {"dense": ("8x8", {}), "dense-4x4": ("4x4", {}), "packcnn": ("4x4", {}),
                  "tight": ("4x4", {"alpha": 2}), "ternary": ("4x4", {}), "permdiag": ("4x4", {}),
                  "pattern": ("4x4", {})},
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
            "scratch": design.scratch,
            "lc": res.get("lut", {}).get("used"), "ff": res.get("ff", {}).get("used"),
            "ebr": res.get("bram", {}).get("used"), "spram": res.get("spram", {}).get("used"),
            "dsp": res.get("dsp", {}).get("used"), "fmax_mhz": mhz, "all_paths_timed": timed,
            "cycles": cycles, "images_per_s": round(mhz * 1e6 / cycles, 1) if timed else None,
            "utilization": round(plan.cycle_model.get("utilization", 0.0), 4),
            "link_bytes": _link_bytes(design), "link_ms": round(_link_bytes(design) * 10 / design.baud * 1e3, 3),
            "baud": design.baud}


def _bench_manifest(root: Path, scheme: str, array: str, opts: dict, progress: bool, log) -> Path:
    """The digits model compressed with ``scheme`` for ``array`` under ``root`` (reused while its format is current:
    a manifest without the descriptor table is compressed again)."""
    from sparsyn.hw.descriptor import manifest_descriptor
    from sparsyn.sw.compress import compress
    from sparsyn.sw.manifest import read_manifest_json
    path = root / "manifests" / f"{scheme}-{array}"
    try:
        fresh = "descriptor" in read_manifest_json(path)
    except SparsynError:
        fresh = False
    if not fresh:
        log(f"compressing the digits model with {scheme} for {array}")
        compress(scheme=scheme, options=dict(opts), array=array, out=path, progress=progress,
                 descriptor=manifest_descriptor)
    return path


def run_board_bench(manifests: dict | None = None, boards=None, out=None, *, quick: bool = False,
                    progress: bool = True, log=print) -> dict:
    """Build the inference top of each manifest (``{label: path}``; default: the digits model compressed with each
    board's :data:`BOARD_CONFIGS`, cached under ``work/bench/boards``) for each of ``boards`` (default: every board
    of :data:`BOARD_CONFIGS`; ``quick``: dense on the iCEBreaker); returns the rows (JSON + table)."""
    from sparsyn.sw.paths import work_dir

    from .build import build_board
    from .infer import inference_design
    root = Path(out) if out else work_dir() / "bench" / "boards"
    boards = [boards] if isinstance(boards, str) else list(boards or (["icebreaker"] if quick else BOARD_CONFIGS))
    for board in boards:
        if board not in BOARD_CONFIGS and manifests is None:
            raise SparsynError(f"the board benchmark has configurations for {', '.join(BOARD_CONFIGS)}, not {board!r}")
    rows = []
    for board in boards:
        todo = manifests
        if todo is None:
            todo = {label: _bench_manifest(root, label.split("-")[0], array, opts, progress, log)
                    for label, (array, opts) in BOARD_CONFIGS[board].items() if not quick or label == "dense"}
        for label, path in todo.items():
            log(f"building the inference top of {label} for {board}")
            try:
                design = inference_design(path, board, log=lambda *a: None)
                report = build_board(board, manifest=path, top="inference", out=root / "builds" / board / label,
                                     progress=progress, log=lambda *a: None)
                rows.append({"label": label, **inference_row(path, board, report, design)})
            except SparsynError as err:
                rows.append({"label": label, "board": board, "error": str(err)})
    cols = ["board", "label", "array", "weights", "scratch", "lc", "ff", "ebr", "spram", "dsp", "fmax_mhz",
            "all_paths_timed", "cycles", "images_per_s", "utilization", "link_ms"]
    ok = [r for r in rows if "error" not in r]
    log(format_table(ok, cols) if ok else "no build finished")
    for r in rows:
        if "error" in r:
            log(f"{r['board']} {r['label']}: {r['error']}")
    doc = {"boards": boards, "rows": rows}
    write_json(root / "board-bench.json", doc)
    return doc
