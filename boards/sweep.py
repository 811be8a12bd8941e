"""Design-space sweeps: scheme x array x board x scheme options, each point through the real stages.

A **point** is one configuration (model, scheme, options, array, board, stages, simulator). It is run
by :func:`run_point`, a pure function of (configuration, source hash) that compresses the model for the
point's array (``sparsyn compress --array``), optionally checks every layer in RTL (``sim``) and builds
the self-test for the board (``build``, on the array the manifest was packed for), and returns a small
JSON record (:data:`RECORD_FIELDS`). A failing point returns its record with a one-line ``error``; it
never stops the sweep.

:func:`sweep` runs the points on an **executor** — ``local`` (a process pool, one point per worker
process at a time) or ``dask`` (a ``distributed.LocalCluster`` of single-threaded worker processes, or
an existing cluster by scheduler address) — and caches every finished point as
``OUT/points/<key>.json``, ``key`` = SHA-256 of the configuration and the source hash of the sparsyn
package, so a re-run (or a run after an interruption) only computes the missing points. Failed points
are not cached: a re-run tries them again. Outputs: ``OUT/sweep.jsonl`` (one record per line, in
cross-product order), ``OUT/sweep.json`` (sweep settings + records) and the Pareto plots
(:func:`write_plots`).

Per worker process: a work folder ``OUT/workers/w<k>/`` (a slot held with a file lock for the
process' life, so re-runs reuse it) holding the points' manifests, simulator runs and builds, and its
own ``YOWASP_CACHE_DIR``.
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import socket
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.report import format_table, write_json

STAGES = ("compress", "sim", "build")
EXECUTORS = ("local", "dask")
#: File that marks a folder as a sweep output (``--out`` may be reused only when it holds one).
MARKER = ".sparsyn-sweep"
#: Bumped when the record layout or the point recipe changes (part of every point key).
RECORD_VERSION = 1
#: The fields of a point record (``None`` when the stage did not run or failed before it).
RECORD_FIELDS = ("key", "config", "accuracy", "accuracy_float", "weight_bits", "index_bits", "other_bits",
                 "stored_bits", "cycles", "cycles_exact", "bit_exact", "lut", "ff", "ebr", "spram", "dsp",
                 "fmax_mhz", "wall_s", "error", "worker", "cached")
#: Record fields that depend only on the configuration and the source (not on timing or the worker).
DETERMINISTIC_FIELDS = ("key", "config", "accuracy", "accuracy_float", "weight_bits", "index_bits", "other_bits",
                        "stored_bits", "cycles", "cycles_exact", "bit_exact", "lut", "ff", "ebr", "spram", "dsp",
                        "fmax_mhz", "error")
DASK_MISSING = ("--executor dask needs the optional Dask extra (dask + distributed); install it with: "
                "pip install sparsyn[dask]")


# ---- configuration ---------------------------------------------------------------------------

def source_hash() -> str:
    """SHA-256 over every ``.py`` file of the sparsyn packages (path + content): a point's result is a
    function of its configuration and this hash."""
    import sparsyn.boards
    import sparsyn.hw
    import sparsyn.sim
    import sparsyn.sw
    h = hashlib.sha256()
    for pkg in (sparsyn.sw, sparsyn.hw, sparsyn.sim, sparsyn.boards):
        root = Path(list(pkg.__path__)[0])
        for path in sorted(root.rglob("*.py")):
            h.update(f"{pkg.__name__}/{path.relative_to(root).as_posix()}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def point_key(config: dict, src_hash: str) -> str:
    """The cache key of a point: SHA-256 of its canonical configuration, the source hash and the record version."""
    text = json.dumps({"config": config, "source": src_hash, "version": RECORD_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_axis(text: str, what: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (duplicates dropped); an empty axis is a one-line error."""
    values = list(dict.fromkeys(v.strip() for v in str(text).split(",") if v.strip()))
    if not values:
        raise SparsynError(f"{what} is empty; give at least one value")
    return values


def parse_opt_axes(pairs: list[str] | None) -> dict[str, list[str]]:
    """``["tile=4,8", "lr=0.01"]`` -> ``{"tile": ["4", "8"], "lr": ["0.01"]}``."""
    axes = {}
    for pair in pairs or []:
        key, sep, values = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise SparsynError(f"--opt {pair!r} is not of the form NAME=V1,V2; e.g. --opt finetune_epochs=1,5")
        axes[key] = parse_axis(values, f"--opt {key}=")
    return axes


def plan_points(model="default", schemes=("dense",), arrays=("4x4",), boards=(), opts: dict | None = None,
                stages=("compress", "sim"), simulator: str = "icarus") -> list[dict]:
    """The cross product as point configurations, every input checked first (one-line errors).

    ``opts`` maps an option name to its values; each axis applies to the schemes that have the option
    (a scheme without it gets one point per other axis), and an option no selected scheme has is refused.
    Without the ``build`` stage there is no board axis (``board`` is None).
    """
    from sparsyn.sw.schedule import ArrayConfig
    from sparsyn.sw.schemes import get_scheme

    from .platforms import get_board
    stages = list(dict.fromkeys(stages))
    for s in stages:
        if s not in STAGES:
            raise SparsynError(f"unknown stage {s!r}; stages are: {', '.join(STAGES)}")
    if "compress" not in stages:
        raise SparsynError("the stages must include compress (sim and build run on the compressed manifest)")
    stages = [s for s in STAGES if s in stages]
    classes = {s: get_scheme(s) for s in schemes}
    if not schemes:
        raise SparsynError("--schemes is empty; give at least one scheme, e.g. --schemes dense,ternary")
    if not arrays:
        raise SparsynError("--arrays is empty; give at least one array, e.g. --arrays 2x2,4x4")
    arrays = [str(ArrayConfig.parse(a)).split(" ")[0] for a in arrays]
    boards = [get_board(b).name for b in boards]
    if "build" in stages and not boards:
        raise SparsynError("the build stage needs --boards, e.g. --boards icebreaker")
    if "build" not in stages and boards:
        raise SparsynError("--boards is given but the stages do not include build; add --stages compress,sim,build")
    if "sim" in stages:
        from sparsyn.sim.tools import check_simulator
        check_simulator(simulator)
    opts = dict(opts or {})
    for key, values in opts.items():
        if not values:
            raise SparsynError(f"--opt {key}= is empty; give at least one value")
        if not any(key in cls.options for cls in classes.values()):
            raise SparsynError(f"--opt {key}: none of the schemes {', '.join(schemes)} has an option {key!r}; "
                               "'sparsyn schemes' lists them")
    model_cfg = {"model": "default"}
    if str(model) != "default":
        path = Path(model).resolve()
        if not path.is_file():
            raise SparsynError(f"--model {model}: no such file; give 'default' or a file saved with torch.save")
        model_cfg = {"model": str(path), "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    points = []
    for scheme in schemes:
        mine = {k: v for k, v in opts.items() if k in classes[scheme].options}
        for values in itertools.product(*mine.values()):
            options = dict(zip(mine, values))
            for array in arrays:
                for board in (boards if "build" in stages else [None]):
                    points.append({**model_cfg, "scheme": scheme, "options": options, "array": array,
                                   "board": board, "stages": stages,
                                   "simulator": simulator if "sim" in stages else None})
    return points


def point_label(config: dict) -> str:
    opts = ",".join(f"{k}={v}" for k, v in config["options"].items())
    return " ".join(x for x in (config["scheme"], opts, config["array"], config["board"]) if x)


# ---- one point -------------------------------------------------------------------------------

_SLOT = {}          # this process' work-folder slot: {"root": Path, "lock": open file}
_SOURCE = {}        # this process' source hash (computed once)


def worker_dir(work_root) -> Path:
    """This process' work folder under ``work_root``: the first free slot ``w<k>`` (held with a file lock
    while the process lives), with its own ``YOWASP_CACHE_DIR``."""
    root = Path(work_root)
    if _SLOT.get("base") != root:
        root.mkdir(parents=True, exist_ok=True)
        for k in itertools.count():
            fh = open(root / f"w{k}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            _SLOT.update(base=root, root=root / f"w{k}", lock=fh)
            break
    wdir = _SLOT["root"]
    (wdir / "yowasp-cache").mkdir(parents=True, exist_ok=True)
    os.environ["YOWASP_CACHE_DIR"] = str(wdir / "yowasp-cache")
    return wdir


def one_line(err: BaseException) -> str:
    """A one-line description of ``err`` (SparsynError: its message; others: type + first line)."""
    text = " ".join(str(err).strip().splitlines()[:1]) if str(err).strip() else ""
    line = text if isinstance(err, SparsynError) else f"{type(err).__name__}: {text}".rstrip(": ")
    return line if len(line) <= 400 else line[:397] + "..."


def _quiet(*args, **kwargs):
    pass


def run_point(config: dict, src_hash: str, work_root) -> dict:
    """Run one point and return its record (never raises for a failing configuration).

    ``config`` is one entry of :func:`plan_points`; ``src_hash`` the orchestrator's :func:`source_hash`
    (a worker running different code refuses the point); ``work_root`` where worker folders go.
    """
    t0 = time.perf_counter()
    rec = {f: None for f in RECORD_FIELDS}
    rec.update(key=point_key(config, src_hash), config=config, cached=False,
               worker=f"{socket.gethostname()}:{os.getpid()}")
    try:
        import torch
        torch.set_num_threads(1)    # one core per point, and training reproducible across executors
        if "hash" not in _SOURCE:
            _SOURCE["hash"] = source_hash()
        if _SOURCE["hash"] != src_hash:
            raise SparsynError(f"worker {rec['worker']} runs different sparsyn sources ({_SOURCE['hash'][:12]} "
                               f"vs {src_hash[:12]}); install the same version on every worker")
        pdir = worker_dir(work_root) / rec["key"][:16]
        shutil.rmtree(pdir, ignore_errors=True)   # a point interrupted earlier starts afresh
        _run_stages(config, pdir, rec)
    except Exception as err:  # noqa: BLE001 - a failing point is recorded, the sweep goes on
        rec["error"] = one_line(err)
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    return rec


def _run_stages(config: dict, pdir: Path, rec: dict) -> None:
    from sparsyn.hw.descriptor import manifest_descriptor
    from sparsyn.sw.compress import compress
    report = compress(config["model"], config["scheme"], dict(config["options"]), pdir / "manifest",
                      progress=False, log=_quiet, array=config["array"], descriptor=manifest_descriptor)
    rec.update(accuracy=round(report["accuracy"]["int"], 4), accuracy_float=round(report["accuracy"]["float"], 4),
               **{k: int(report[k]) for k in ("weight_bits", "index_bits", "other_bits", "stored_bits")})
    if "sim" in config["stages"]:
        from sparsyn.sim.check import rtl_check
        rows = rtl_check(pdir / "manifest", config["simulator"], out_dir=pdir / "sim", progress=False)
        rec["cycles"] = sum(int(r["cycles_measured"] or 0) for r in rows)
        rec["cycles_exact"] = all(r["cycles_exact"] is True for r in rows)
        rec["bit_exact"] = all(r["bit_exact"] is True and r.get("reference_exact", True) for r in rows)
        bad = [r for r in rows if r.get("mismatch")]
        if bad:
            raise SparsynError(f"RTL check of layer {bad[0]['layer']} failed: {bad[0]['mismatch']}")
    if "build" in config["stages"]:
        from .build import build_board
        rep = build_board(config["board"], manifest=pdir / "manifest", out=pdir / "build", progress=False,
                          log=_quiet)
        res = rep["resources"]
        for field, name in (("lut", "lut"), ("ff", "ff"), ("ebr", "bram"), ("spram", "spram"), ("dsp", "dsp")):
            rec[field] = res[name]["used"] if name in res else None
        fmax = [v["achieved_mhz"] for v in rep["fmax"].values()]
        rec["fmax_mhz"] = min(fmax) if fmax else None


# ---- the sweep -------------------------------------------------------------------------------

def check_sweep_out(out) -> Path:
    """``out`` must be new, empty, or a previous sweep output (it holds :data:`MARKER`), and a place sparsyn may
    write (:func:`sparsyn.sw.outdir.check_out`). A sweep folder is resumable, so it is written in place (each
    point's record atomically), not replaced as a whole."""
    from sparsyn.sw.outdir import check_out
    return check_out(out, MARKER, command="sparsyn sweep")


def load_cached(out: Path, key: str) -> dict | None:
    path = out / "points" / f"{key}.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != key or rec.get("error"):
        return None
    return {**rec, "cached": True}


class _Local:
    """``concurrent.futures`` process pool (spawned workers: no fork of a process holding torch threads)."""

    def __init__(self, workers: int):
        import multiprocessing
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def as_completed(self, futures):
        return as_completed(futures)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    """A ``distributed`` client: on a new ``LocalCluster`` of single-threaded processes, or on ``scheduler``."""

    def __init__(self, workers: int, scheduler: str | None):
        try:
            import dask
            import distributed
        except ImportError:
            raise SparsynError(DASK_MISSING) from None
        self.cluster = None
        # worker processes may start processes of their own (simulators, tools, pools)
        dask.config.set({"distributed.worker.daemon": False})
        if scheduler:
            try:
                self.client = distributed.Client(scheduler, timeout="20s")
            except OSError as err:
                raise SparsynError(f"cannot reach the Dask scheduler at {scheduler} ({one_line(err)}); start one "
                                   "with 'dask scheduler' and workers with 'dask worker ADDR'") from None
            self.workers = len(self.client.scheduler_info().get("workers", {}))
        else:
            self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                    dashboard_address=None, silence_logs=40)
            self.client = distributed.Client(self.cluster)
            self.workers = workers
        self._as_completed = distributed.as_completed

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def as_completed(self, futures):
        return self._as_completed(futures)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(executor: str = "local", workers: int | None = None, scheduler: str | None = None):
    if executor not in EXECUTORS:
        raise SparsynError(f"unknown executor {executor!r}; choose {' or '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise SparsynError(f"--workers {workers} must be 1 or more")
    if scheduler and executor != "dask":
        raise SparsynError("--scheduler is for --executor dask")
    workers = workers or os.cpu_count() or 1
    return _Dask(workers, scheduler) if executor == "dask" else _Local(workers)


def sweep(points: list[dict], out, *, executor: str = "local", workers: int | None = None,
          scheduler: str | None = None, progress: bool = True, log=print) -> dict:
    """Run (or take from the cache) every point of ``points`` (from :func:`plan_points`); returns
    ``{"records": [...] in points order, "computed": n, "cached": n, "failed": n, "wall_s", ...}`` and
    writes ``OUT/sweep.jsonl``, ``OUT/sweep.json`` and the plots. A second sweep into the same ``out`` while
    this one runs is refused in one line (a lock next to the folder)."""
    from sparsyn.sw.outdir import output_lock
    out = check_sweep_out(out)
    with output_lock(out):
        return _sweep(points, check_sweep_out(out), executor=executor, workers=workers, scheduler=scheduler,
                      progress=progress, log=log)


def _sweep(points: list[dict], out: Path, *, executor: str, workers, scheduler, progress: bool, log) -> dict:
    if executor not in EXECUTORS:
        raise SparsynError(f"unknown executor {executor!r}; choose {' or '.join(EXECUTORS)}")
    if executor == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise SparsynError(DASK_MISSING) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"format": "sparsyn-sweep", "version": RECORD_VERSION}) + "\n")
    t0 = time.perf_counter()
    src = source_hash()
    keys = [point_key(p, src) for p in points]
    records = [load_cached(out, k) for k in keys]
    todo = [i for i, r in enumerate(records) if r is None]
    log(f"sweep: {len(points)} points, {len(points) - len(todo)} cached, {len(todo)} to run "
        f"on the {executor} executor")
    if todo:
        if any(p["model"] == "default" for p in points):
            from sparsyn.sw.model_zoo import default_model
            default_model(progress=False)   # train (or load) once here, so workers share the cached model
        ex = make_executor(executor, workers, scheduler)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(points), initial=len(points) - len(todo), unit="point", desc="sweep",
                       dynamic_ncols=True)
        try:
            futures = {ex.submit(run_point, points[i], src, str(out / "workers")): i for i in todo}
            for fut in ex.as_completed(list(futures)):
                i = futures[fut]
                rec = fut.result()
                records[i] = rec
                if not rec["error"]:
                    write_json(out / "points" / f"{rec['key']}.json", rec)
                if bar is not None:
                    bar.set_postfix_str(point_label(points[i])[:40] + (" FAILED" if rec["error"] else ""))
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            ex.close()
    wall = round(time.perf_counter() - t0, 2)
    result = {"format": "sparsyn-sweep", "version": RECORD_VERSION, "source_hash": src, "executor": executor,
              "workers": workers, "scheduler": scheduler, "wall_s": wall, "points": len(points),
              "computed": len(todo), "cached": len(points) - len(todo),
              "failed": sum(1 for r in records if r["error"]), "records": records}
    with open(out / ".sweep.jsonl.tmp", "w") as fh:
        for r in records:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
    (out / ".sweep.jsonl.tmp").replace(out / "sweep.jsonl")
    write_json(out / "sweep.json", result)
    result["plots"] = write_plots(records, out, log=log)
    return result


# ---- outputs ---------------------------------------------------------------------------------

TABLE_COLUMNS = ["scheme", "options", "array", "board", "accuracy", "stored_bits", "weight_bits", "index_bits",
                 "other_bits", "cycles", "lut", "ff", "ebr", "dsp", "fmax_mhz", "wall_s", "cached", "error"]


def format_records(records: list[dict]) -> str:
    rows = []
    for r in records:
        c = r["config"]
        rows.append({**r, "scheme": c["scheme"], "array": c["array"], "board": c["board"] or "-",
                     "options": ",".join(f"{k}={v}" for k, v in c["options"].items()) or "-",
                     "cached": "yes" if r["cached"] else "no",
                     "error": (r["error"] or "")[:70] + ("..." if len(r["error"] or "") > 70 else "")})
    return format_table(rows, TABLE_COLUMNS)


def pareto(points: list[tuple[float, float]], maximize_y: bool) -> list[tuple[float, float]]:
    """The Pareto front of (x, y) pairs, x minimised and y maximised (``maximize_y``) or minimised; sorted by x."""
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if maximize_y else p[1])):
        if best is None or (y > best if maximize_y else y < best):
            front.append((x, y))
            best = y
    return front


def _plot(path: Path, records: list[dict], xf: str, yf: str, xlabel: str, ylabel: str, title: str,
          maximize_y: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for scheme in dict.fromkeys(r["config"]["scheme"] for r in records):
        mine = [r for r in records if r["config"]["scheme"] == scheme]
        ax.scatter([r[xf] for r in mine], [r[yf] for r in mine], label=scheme, alpha=0.8)
        for r in mine:
            ax.annotate(r["config"]["array"], (r[xf], r[yf]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto([(r[xf], r[yf]) for r in records], maximize_y)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k", lw=1, label="Pareto front")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(records: list[dict], out, log=print) -> list[str]:
    """PNG Pareto plots into ``out``: accuracy vs stored bits (``pareto-accuracy-bits.png``) and, per
    board, cycles vs LUTs (``pareto-cycles-luts-<board>.png``); a plot without data is skipped with a note."""
    out = Path(out)
    written = []
    ok = [r for r in records if not r["error"]]
    acc = [r for r in ok if r["accuracy"] is not None and r["stored_bits"] is not None]
    if acc:
        path = out / "pareto-accuracy-bits.png"
        _plot(path, acc, "stored_bits", "accuracy", "bits the chip stores", "integer accuracy (%)",
              "accuracy vs stored bits", maximize_y=True)
        written.append(str(path))
    else:
        log("note: no accuracy vs stored bits plot (no successful compress point)")
    built = [r for r in ok if r["lut"] is not None and r["cycles"] is not None]
    boards = list(dict.fromkeys(r["config"]["board"] for r in built))
    for board in boards:
        path = out / f"pareto-cycles-luts-{board}.png"
        _plot(path, [r for r in built if r["config"]["board"] == board], "lut", "cycles", "LUTs (logic cells)",
              "RTL cycles (all layers, image 0)", f"cycles vs LUTs on {board}", maximize_y=False)
        written.append(str(path))
    if not boards:
        log("note: no cycles vs LUTs plot (needs points with both the sim and the build stage)")
    return written
