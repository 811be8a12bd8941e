"""``sparsyn bench --scheme tight`` (and ``--scheme packcnn``): Tight Compression vs the PackCNN baseline,
every operating point stated.

Every figure is measured in the run (:func:`run_tight_bench`). Rates are **slot rates**: dense slots /
packed slots (N*K / packed entries of the grouped form); the bits the chip stores come from the array's
memory images (:func:`sparsyn.sw.compress.stored_bits`, the manifests' ``stored_bits``). "Pruned" is always
the fraction of the pruned matrix's nonzeros that conflict pruning removes.

* **operating points** (:func:`rate_tables`): each float matrix is magnitude-pruned to each density and
  quantized; that same integer matrix is packed by

  - ``tight`` at every alpha the array allows (2, 4, ... up to its C columns = the rows of a row
    section; 4 on the default 4x4 array) with its default conflict penalty (``tight a=4`` ...), and lossless
    (an effectively infinite penalty) at the largest alpha;
  - ``packcnn`` (the original's sequential best-fit, :func:`..packing.column_combine`) at gamma = 0
    (lossless) / 0.05 / 0.25 / 0.5, each at **its own best alpha** of 2 / 4 / 8 / 16 (the one with the
    highest rate; alphas above the matrix's rows are left out, no PE holds them). The whole alpha x gamma
    sweep is kept (:func:`packcnn_sweep`: rate and pruned fraction of every point).

  Per point: slot rate, pruned fraction, the 1/density bound (N*K / nonzeros before conflict pruning) and
  the fraction of it reached, the grouped form's bit rate (``grouped_bit_rate``: select index, lane table,
  subword flags counted) and, for matrices up to :data:`CHIP_MAX_WEIGHTS`, the bits the chip stores for
  the matrix as one linear layer (``stored_bits`` = weights + index + other, ``rate_vs_int8``).
  Matrices: the default digits CNN's layers (trained weights, magnitude-pruned, no fine-tuning) and
  synthetic VGG-16-shaped ones (Gaussian weights: magnitude pruning leaves uniformly random positions).
* **headline** (:func:`goal_rows`), per matrix and density: tight at the alpha that maximises its rate,
  against PackCNN's rate **at tight's pruned fraction** (linear in the pruned fraction between PackCNN's
  gamma points, :func:`packcnn_at`) -- the ratio at equal conflict loss; the lossless pair (both prune
  nothing; PackCNN at its best lossless alpha); tight's fraction of the 1/density bound. Goals: ratio >= 2
  and >= 90 % of the bound.
* **speed**: :func:`..packing.column_combine` wall time on 512 x 4608 at alpha = 16 per density (target
  10 s) and tight's annealing of a 512 x 4608 matrix (target 60 s).
* **accuracy at equal stored bits** (:func:`accuracy_rows`, :func:`equal_bits_rows`): the digits CNN
  compressed by each scheme over a grid of densities / alphas / gammas (each scheme's own training flow and
  defaults); the model's ``stored_bits`` (every bit of every layer, as the manifest counts them) against
  the integer accuracy; PackCNN's accuracy at each tight point's stored bits, interpolated on PackCNN's
  accuracy-vs-bits frontier.
* **cycles**: LayerEngine cycles per layer (Amaranth simulation of the generated RTL, bit-exact check, and
  the plan's exact cycle model, which the RTL must equal) vs the dense int8 array of the same R x C PEs
  (:func:`sparsyn.sw.bench_ternary.cycle_table`), with PE utilization.

Independent pieces run on ``jobs`` worker processes (default 2): :func:`run_tasks`.

Paper anchors (quoted, not measured): PackCNN 5.88x -> Tight DAC'20 10.28x / TCAD'22 14.13x matrix
compression (about 2.4x over PackCNN); throughput x2.12 (DAC) / x2.75 (TCAD).
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .report import format_table, write_json
from .schedule import ArrayConfig

#: Quoted from the papers (../shared/papers.md section 1) -- printed next to the measured figures.
PAPER = {"packcnn_rate": 5.88, "dac_rate": 10.28, "tcad_rate": 14.13, "tcad_throughput": 2.75,
         "dac_throughput": 2.12}
PAPER["tcad_over_packcnn"] = PAPER["tcad_rate"] / PAPER["packcnn_rate"]
PAPER["dac_over_packcnn"] = PAPER["dac_rate"] / PAPER["packcnn_rate"]

DENSITIES = (0.5, 0.25, 0.1, 0.05)
QUICK_DENSITIES = (0.5, 0.1)
#: PackCNN's group sizes and conflict budgets (gamma: weights one group may lose, as a fraction of N).
PACKCNN_ALPHAS = (2, 4, 8, 16)
PACKCNN_GAMMAS = (0.0, 0.05, 0.25, 0.5)
#: Goal thresholds of issue 5.
GOAL_OVER_PACKCNN = 2.0
GOAL_OF_BOUND = 0.9
#: Wall-time targets (issue 17: column_combine on 512 x 4608 at alpha 16; issue 5: annealing 512 x 4608).
COMBINE_TARGET_S = 10.0
ANNEAL_TARGET_S = 60.0
SPEED_SHAPE = (512, 4608)
#: The array the bench packs for (a row section = its C columns).
ARRAY = ArrayConfig(4, 4)
#: Accuracy grid (digits CNN): densities; tight at every alpha of the array; PackCNN alphas x gammas.
ACC_DENSITIES = (0.5, 0.35, 0.25, 0.15)
ACC_PACKCNN_ALPHAS = (2, 4, 8)
ACC_PACKCNN_GAMMAS = (0.0, 0.25, 0.5)
#: The compressed models whose LayerEngine cycles are measured (labels of the accuracy grid).
CYCLE_DENSITY = 0.25
#: A PackCNN point at the largest alpha tried whose groups are at least this full (mean columns / alpha) is
#: flagged ``alpha_capped``: a larger alpha could raise its rate.
CAPPED_FILL = 0.9


def _array(array) -> ArrayConfig:
    return array if isinstance(array, ArrayConfig) else ArrayConfig.parse(str(array))


def tight_alphas(cols: int) -> tuple[int, ...]:
    """Tight's group sizes on an array of ``cols`` columns: powers of two from 2 up to ``cols`` (a group
    spans one row section of ``cols`` rows, so a conflict-free group holds at most ``cols`` columns)."""
    out = tuple(a for a in (2, 4, 8, 16, 32, 64, 128) if a <= cols)
    return out or (max(2, cols),)


def packcnn_alphas(n: int, alphas=PACKCNN_ALPHAS) -> tuple[int, ...]:
    """PackCNN's group sizes for an N-row matrix: those of ``alphas`` up to N (a PackCNN group spans all N
    rows; the PE for a wider group is refused, see ``ColumnCombineScheme.check_layer``)."""
    return tuple(a for a in alphas if a <= n) or (min(alphas),)


def pruned_int_matrix(w_float: np.ndarray, density: float, subword: bool = False,
                      subword_threshold: int = 2) -> np.ndarray:
    """Magnitude-prune a float N x K matrix to ``density`` and quantize it per channel (int8, or the
    subword quantizer with low subwords pruned) -- the integer matrix both schemes then pack."""
    from .prune import magnitude_mask
    from .schemes.base import quantize_int8_per_channel
    from .subword import quantize_subword
    import torch
    w = np.asarray(w_float, dtype=np.float64)
    mask = magnitude_mask(torch.as_tensor(w), density).numpy()
    w = w * mask
    return quantize_subword(w, subword_threshold)[0] if subword else quantize_int8_per_channel(w)[0]


def synthetic_matrix(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Gaussian N x K weights (a VGG-like layer matrix before pruning: magnitude pruning of i.i.d.
    Gaussian weights gives unstructured, uniformly random positions)."""
    return rng.standard_normal((n, k))


def pack_with(scheme_name: str, w_int: np.ndarray, opts: dict, lossless: bool = False,
              progress: bool = False, array=ARRAY) -> tuple[object, np.ndarray, dict]:
    """Group ``w_int`` with a scheme made for ``array``, conflict-prune, pack in the grouped form.
    Returns (grouped PackedLayer, packed integer matrix, info: conflict-pruned count, seconds, anneal
    statistics, and ``scheme`` / ``grouping`` for :func:`chip_pack`)."""
    from .packing import conflict_prune, pack_matrix, virtual_magnitude, virtual_matrix, weight_matrix
    from .schemes import get_scheme
    scheme = get_scheme(scheme_name)(array=_array(array), **opts)
    scheme.progress = False
    sub = bool(scheme.opts["subword"])
    v = virtual_matrix(w_int, sub)
    mag = virtual_magnitude(v, sub)
    t0 = time.perf_counter()
    grouping = scheme.choose_groups(mag, "bench", progress=progress, lossless=lossless)
    seconds = time.perf_counter() - t0
    pruned_v, info = conflict_prune(v, grouping, mag)
    w_packed = weight_matrix(pruned_v, sub)
    packed = pack_matrix(scheme_name, w_packed, grouping, 8)
    info = {**info, "seconds": seconds, "anneal": getattr(scheme, "anneal_stats", {}).get("bench"),
            "scheme": scheme, "grouping": grouping}
    return packed, w_packed, info


def matrix_layer(w: np.ndarray, name: str = "bench", scheme: str = "dense"):
    """An N x K integer matrix as a linear QuantLayer (bias 0, requantization x1) — what the chip would
    hold for it as one layer (its bias / requant constants are counted in ``other_bits``)."""
    from .qmodel import QuantLayer
    from .requant import MULT_BITS
    w = np.asarray(w, dtype=np.int64)
    n, k = w.shape
    return QuantLayer(name=name, kind="linear", in_shape=(k, 1, 1), out_shape=(n, 1, 1), kernel=(1, 1), stride=1,
                      padding=0, weight=w, bias=np.zeros(n, np.int64), mult=np.full(n, 1 << (MULT_BITS - 1)),
                      shift=np.full(n, MULT_BITS - 1), relu=False, in_scale=1.0, out_scale=1.0,
                      weight_scale=np.ones(n), weight_bits=8, scheme=scheme)


def chip_pack(scheme, grouping, w_packed: np.ndarray):
    """The memory images the chip holds for ``w_packed`` as one linear layer, packed by ``scheme`` (made
    for the bench's array) with the grouping it was grouped with (:meth:`Scheme.pack`)."""
    layer = matrix_layer(w_packed, "bench", scheme.name)
    scheme.groupings[layer.name] = grouping
    return scheme.pack(layer)


#: Largest matrix (N*K) whose memory images :func:`rate_row` builds: the array format is laid out word by
#: word (a few thousand words per second), so the 512 x 4608 matrices get no ``stored_bits`` figures.
CHIP_MAX_WEIGHTS = 1_000_000


def rate_row(matrix: str, density: float, w_int: np.ndarray, scheme_name: str, opts: dict,
             lossless: bool, label: str, keep: dict | None = None, array=ARRAY,
             chip_max_weights: int = CHIP_MAX_WEIGHTS) -> dict:
    """Pack one matrix with one scheme setting; one operating point. ``keep[(matrix, density, label)]``
    receives (grouped PackedLayer, packed integer matrix, chip PackedLayer or None). The chip figures
    (``stored_bits`` ...) are left out (``chip_note`` says why) for matrices above ``chip_max_weights``
    and for settings the array's PE cannot hold."""
    from .compress import stored_bits
    from .errors import SparsynError
    from .packing import packed_stats
    from .subword import subword_count
    packed, w_packed, info = pack_with(scheme_name, w_int, opts, lossless, array=array)
    st = packed_stats(packed, SimpleNamespace(weight=w_packed))
    n, k = w_int.shape
    nnz = int(np.count_nonzero(w_int))
    sub = bool(opts.get("subword"))
    entries = subword_count(w_int) if sub else nnz
    bound = n * k / max(1, nnz)
    row = {"matrix": matrix, "n": n, "k": k, "density": density, "scheme": label,
           "alpha": packed.meta["alpha"], "h": packed.meta["section_height"], "subword": sub,
           "gamma": opts.get("gamma"), "lossless": bool(lossless), "nonzero": nnz, "entries": entries,
           "packed_slots": st["packed_slots"], "matrix_rate": st["matrix_rate"],
           "grouped_bits": st["rom_bits"], "grouped_index_bits": st["index_bits"], "flag_bits": st["flag_bits"],
           "grouped_bit_rate": st["bit_rate"],
           "bound": bound, "of_bound": st["matrix_rate"] / bound,
           "conflict_pruned": info["pruned"] / max(1, entries), "seconds": round(info["seconds"], 2)}
    if info.get("anneal"):
        row["anneal"] = {k2: info["anneal"][k2] for k2 in ("sweeps", "sections", "initial_width", "final_width")
                         if k2 in info["anneal"]}
    chip = None
    if n * k > chip_max_weights:
        row["chip_note"] = f"memory images not built ({n}x{k} > {chip_max_weights} weights; see CHIP_MAX_WEIGHTS)"
    else:
        try:
            chip = chip_pack(info["scheme"], info["grouping"], w_packed)
        except SparsynError as err:   # e.g. a PackCNN alpha above the matrix's rows: no PE for it
            row["chip_note"] = str(err)
    if chip is not None:
        bits = stored_bits(chip)
        row.update({c: bits[c] for c in ("weight_bits", "index_bits", "other_bits", "stored_bits")},
                   rate_vs_int8=8 * n * k / bits["stored_bits"],
                   weights_rate_vs_int8=8 * n * k / max(1, bits["weight_bits"]))
    if keep is not None:
        keep[(matrix, density, label)] = (packed, w_packed, chip)
    return row


# ---------------------------------------------------------------------------------------------
# PackCNN: the alpha x gamma sweep, best alpha per gamma, the rate at a given pruned fraction
# ---------------------------------------------------------------------------------------------
def packcnn_point(w_int: np.ndarray, alpha: int, gamma: float, window: int = 0) -> dict:
    """PackCNN grouping of an integer N x K matrix straight from :func:`..packing.column_combine` (one
    grouping over all N rows): slot rate = K / groups (N*K dense slots / N*groups packed slots, as
    :func:`rate_row` counts the grouped form), the pruned fraction (conflict pruning), ``fill`` = mean
    columns per group / alpha (1: alpha, not conflicts, limits the rate), and the grouping's wall time."""
    from .packing import Grouping, column_combine, conflict_prune
    w = np.asarray(w_int)
    n, k = w.shape
    sup = w != 0
    t0 = time.perf_counter()
    groups = column_combine(sup, alpha, gamma, window)
    seconds = time.perf_counter() - t0
    _, info = conflict_prune(w, Grouping(max(1, min(n, 4)), alpha, False, [groups], shared=True))
    nnz = int(sup.sum())
    cols = sum(len(g) for g in groups)
    return {"alpha": alpha, "gamma": gamma, "groups": len(groups), "matrix_rate": k / max(1, len(groups)),
            "conflict_pruned": info["pruned"] / max(1, nnz), "fill": cols / max(1, len(groups) * alpha),
            "seconds": round(seconds, 3)}


def packcnn_sweep(matrix: str, density: float, w_int: np.ndarray, alphas=PACKCNN_ALPHAS,
                  gammas=PACKCNN_GAMMAS) -> list[dict]:
    """Every (alpha, gamma) point of PackCNN on one matrix (:func:`packcnn_point`); alphas above the
    matrix's rows are left out (:func:`packcnn_alphas`)."""
    n, k = np.shape(w_int)
    return [{"matrix": matrix, "n": n, "k": k, "density": density, **packcnn_point(w_int, a, g)}
            for g in gammas for a in packcnn_alphas(n, alphas)]


def best_alpha_points(sweep: list[dict]) -> dict[float, dict]:
    """gamma -> the sweep point of highest rate at that gamma (ties: the smaller alpha, fewer select bits)."""
    best = {}
    for p in sweep:
        b = best.get(p["gamma"])
        if b is None or p["matrix_rate"] > b["matrix_rate"] + 1e-12:
            best[p["gamma"]] = p
    return best


def packcnn_frontier(points: list[dict]) -> list[dict]:
    """PackCNN's points (``conflict_pruned``, ``matrix_rate``) without the dominated ones (a point with
    no more pruning and at least the rate exists), ordered by pruned fraction: rate rises along it."""
    out = []
    for p in sorted(points, key=lambda p: (p["conflict_pruned"], -p["matrix_rate"])):
        if out and p["matrix_rate"] <= out[-1]["matrix_rate"]:
            continue
        out.append(p)
    return out


def packcnn_at(points: list[dict], pruned: float) -> dict:
    """PackCNN's rate at the pruned fraction ``pruned``: linear in the pruned fraction between the two
    points of :func:`packcnn_frontier` around it. Beyond its most-pruning point PackCNN's rate is taken as
    that point's (no extrapolation: more pruning than PackCNN was run with is credited with its best rate).
    Returns ``{"rate", "lo", "hi"}`` (the bracketing points; equal when one point matches)."""
    front = packcnn_frontier(points)
    if not front:
        return {"rate": None, "lo": None, "hi": None}
    if pruned <= front[0]["conflict_pruned"]:
        return {"rate": front[0]["matrix_rate"] if pruned >= front[0]["conflict_pruned"] - 1e-12 else None,
                "lo": front[0], "hi": front[0]}
    for lo, hi in zip(front, front[1:]):
        if lo["conflict_pruned"] <= pruned <= hi["conflict_pruned"]:
            t = (pruned - lo["conflict_pruned"]) / (hi["conflict_pruned"] - lo["conflict_pruned"])
            return {"rate": lo["matrix_rate"] + t * (hi["matrix_rate"] - lo["matrix_rate"]), "lo": lo, "hi": hi}
    return {"rate": front[-1]["matrix_rate"], "lo": front[-1], "hi": front[-1]}


def _point_label(p: dict | None) -> str | None:
    if p is None:
        return None
    return f"g={p['gamma']:g} a={p['alpha']} ({100 * p['conflict_pruned']:.2f} %, {p['matrix_rate']:.2f}x)"


# ---------------------------------------------------------------------------------------------
# tasks (one operating point or one PackCNN sweep each) and the process pool that runs them
# ---------------------------------------------------------------------------------------------
def tight_task(matrix: str, density: float, w_int: np.ndarray, alpha: int, lossless: bool, array=ARRAY,
               subword: bool = False, keep: dict | None = None) -> dict:
    """One tight operating point: ``tight a=ALPHA`` (default penalty) or ``tight lossless a=ALPHA``."""
    tag = "+sub" if subword else ""
    label = f"tight{tag} lossless a={alpha}" if lossless else f"tight{tag} a={alpha}"
    opts = {"alpha": alpha, "subword": subword}
    return {"rows": [rate_row(matrix, density, w_int, "tight", opts, lossless, label, keep, array)]}


def packcnn_task(matrix: str, density: float, w_int: np.ndarray, array=ARRAY, alphas=PACKCNN_ALPHAS,
                 gammas=PACKCNN_GAMMAS, keep: dict | None = None) -> dict:
    """PackCNN on one matrix: the alpha x gamma sweep, then one operating point (``packcnn g=GAMMA``,
    :func:`rate_row` through the scheme) per gamma at that gamma's best alpha."""
    sweep = packcnn_sweep(matrix, density, w_int, alphas, gammas)
    rows = []
    for g, p in sorted(best_alpha_points(sweep).items()):
        row = rate_row(matrix, density, w_int, "packcnn", {"alpha": p["alpha"], "gamma": g}, g == 0,
                       f"packcnn g={g:g}", keep, array)
        tried = packcnn_alphas(w_int.shape[0], alphas)
        # alpha, not conflicts, limits this point: the largest alpha tried, groups (nearly) full
        row.update(alphas_tried=list(tried), fill=p["fill"],
                   alpha_capped="yes" if p["alpha"] == max(tried) and p["fill"] >= CAPPED_FILL else "no")
        rows.append(row)
    return {"rows": rows, "sweep": sweep}


def rate_tasks(matrices: dict[str, np.ndarray], densities, array=ARRAY, alphas=PACKCNN_ALPHAS,
               gammas=PACKCNN_GAMMAS, subword_points=(), keep: dict | None = None) -> list[tuple]:
    """(key, cost, function, args) of every operating point of :func:`rate_tables`; cost ~ seconds."""
    array = _array(array)
    t_alphas = tight_alphas(array.cols)
    tasks = []
    for name, wf in matrices.items():
        for d in densities:
            w = pruned_int_matrix(wf, d)
            n, k = w.shape
            cells = n * k
            for a in t_alphas:
                tasks.append(((name, d, "tight", a, False), 4e-5 * cells * d + 0.05, tight_task,
                              (name, d, w, a, False, array, False, keep)))
            tasks.append(((name, d, "tight", t_alphas[-1], True), 4e-5 * cells * d + 0.05, tight_task,
                          (name, d, w, t_alphas[-1], True, array, False, keep)))
            tasks.append(((name, d, "packcnn"), 8e-6 * cells * (1 + 2 * d) + 0.05, packcnn_task,
                          (name, d, w, array, alphas, gammas, keep)))
            if (name, d) in subword_points:
                ws = pruned_int_matrix(wf, d, subword=True)
                for lossless in (False, True):
                    tasks.append(((name, d, "tight+sub", t_alphas[-1], lossless), 8e-5 * cells * d + 0.05,
                                  tight_task, (name, d, ws, t_alphas[-1], lossless, array, True, keep)))
    return tasks


def rate_tables(matrices: dict[str, np.ndarray], densities, array=ARRAY, alphas=PACKCNN_ALPHAS,
                gammas=PACKCNN_GAMMAS, subword_points=(), keep: dict | None = None, log=print,
                jobs: int = 1) -> dict:
    """Every operating point of every float matrix at every density, packed for ``array``:
    ``{"rates": rows (:func:`rate_row`), "sweep": PackCNN alpha x gamma points}``. ``subword_points``:
    (matrix name, density) pairs also run by tight with subword-level pruning. ``keep`` (see
    :func:`rate_row`) needs ``jobs=1``."""
    tasks = rate_tasks(matrices, densities, array, alphas, gammas, subword_points, keep)
    done = run_tasks(tasks, 1 if keep is not None else jobs, log)
    return collect_rates(tasks, done)


def collect_rates(tasks, done: dict) -> dict:
    """Rows and sweep points of finished rate tasks, in task order (matrix, density, scheme)."""
    rates, sweep = [], []
    for key, *_ in tasks:
        res = done.get(key)
        if res is not None:
            rates.extend(res.get("rows", []))
            sweep.extend(res.get("sweep", []))
    return {"rates": rates, "sweep": sweep}


def _progress_line(r: dict) -> str:
    return (f"  {r['matrix']} d={r['density']:g} {r['scheme']} (alpha {r['alpha']}): rate {r['matrix_rate']:.2f}x "
            f"({100 * r['of_bound']:.0f} % of bound), conflict-pruned {100 * r['conflict_pruned']:.2f} %, "
            f"{r['seconds']} s")


def _task_lines(key, res) -> list[str]:
    lines = [_progress_line(r) if "matrix_rate" in r and "of_bound" in r else
             f"  {r.get('model', key)}: int8 accuracy {r.get('int_acc', float('nan')):.2f} %, "
             f"stored bits {r.get('model_stored_bits')} ({r.get('seconds')} s)" for r in res.get("rows", [])]
    if "sweep" in res:
        lines.append(f"  {key[0]} d={key[1]:g} packcnn sweep: {len(res['sweep'])} points, "
                     f"{sum(p['seconds'] for p in res['sweep']):.1f} s grouping")
    if "line" in res:
        lines.append(res["line"])
    return lines


def _worker_init():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:   # pragma: no cover - torch is a dependency
        pass


@contextlib.contextmanager
def _one_thread_per_process():
    """Worker processes inherit one BLAS / OpenMP thread each (2 workers on 2 cores, not 2 x 2 threads)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    old = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def default_jobs() -> int:
    """Worker processes of the bench: 2, or fewer CPUs."""
    return max(1, min(2, os.cpu_count() or 1))


def run_tasks(tasks: list[tuple], jobs: int = 1, log=print) -> dict:
    """Run ``(key, cost, function, args)`` tasks, the costliest first, on ``jobs`` worker processes
    (``jobs <= 1``: here, in order). Each function returns a dict (``rows`` ... : see :func:`_task_lines`,
    which prints its progress lines). Returns ``{key: result}``."""
    order = sorted(tasks, key=lambda t: -t[1])
    out = {}
    if jobs <= 1 or len(tasks) <= 1:
        for key, _, fn, args in order:
            out[key] = fn(*args)
            for line in _task_lines(key, out[key]):
                log(line)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with _one_thread_per_process(), ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(fn, *args): key for key, _, fn, args in order}
        for fut in as_completed(futures):
            key = futures[fut]
            out[key] = fut.result()
            for line in _task_lines(key, out[key]):
                log(line)
    return out


# ---------------------------------------------------------------------------------------------
# headline: rate at equal pruned fraction, the lossless pair, the bound
# ---------------------------------------------------------------------------------------------
def goal_rows(rows: list[dict]) -> list[dict]:
    """Per (matrix, density): tight at its best alpha (default penalty) vs PackCNN's rate at tight's pruned
    fraction (:func:`packcnn_at` over the ``packcnn g=...`` points, each at its best alpha) -- the headline
    ratio; tight lossless vs PackCNN lossless (both prune nothing); tight's fraction of the 1/density bound."""
    by = {}
    for r in rows:
        if not r.get("subword"):
            by.setdefault((r["matrix"], r["density"]), []).append(r)
    out = []
    for (matrix, d), rs in by.items():
        tight = [r for r in rs if r["scheme"].startswith("tight a=")]
        tight_ll = [r for r in rs if r["scheme"].startswith("tight lossless")]
        pack = [r for r in rs if r["scheme"].startswith("packcnn g=")]
        if not tight or not pack:
            continue
        t = max(tight, key=lambda r: (r["matrix_rate"], -r["alpha"]))
        t4 = next((r for r in tight if r["alpha"] == 4), None)
        at = packcnn_at(pack, t["conflict_pruned"])
        row = {"matrix": matrix, "density": d, "bound": t["bound"],
               "tight_alpha": t["alpha"], "tight": t["matrix_rate"], "tight_pruned": t["conflict_pruned"],
               "tight_a4": t4["matrix_rate"] if t4 else None, "tight_a4_pruned": t4["conflict_pruned"] if t4 else None,
               "packcnn_at_tight_pruned": at["rate"], "packcnn_lo": _point_label(at["lo"]),
               "packcnn_hi": _point_label(at["hi"])}
        row["packcnn_alpha_capped"] = "yes" if any(p is not None and p.get("alpha_capped") == "yes"
                                                   for p in (at["lo"], at["hi"])) else "no"
        if at["rate"]:
            row["ratio_equal_pruned"] = t["matrix_rate"] / at["rate"]
            row["goal_2x"] = "PASS" if row["ratio_equal_pruned"] >= GOAL_OVER_PACKCNN else "BELOW"
        pl = next((r for r in pack if r["gamma"] == 0), None)
        if tight_ll and pl is not None:
            tl = max(tight_ll, key=lambda r: r["matrix_rate"])
            row.update(tight_lossless=tl["matrix_rate"], tight_lossless_alpha=tl["alpha"],
                       packcnn_lossless=pl["matrix_rate"], packcnn_lossless_alpha=pl["alpha"],
                       packcnn_lossless_capped=pl.get("alpha_capped", "no"),
                       ratio_lossless=tl["matrix_rate"] / pl["matrix_rate"])
            row["goal_2x_lossless"] = "PASS" if row["ratio_lossless"] >= GOAL_OVER_PACKCNN else "BELOW"
            row["lossless_of_bound"] = tl["of_bound"]
        row["tight_of_bound"] = t["of_bound"]
        row["goal_90_bound"] = "PASS" if t["of_bound"] >= GOAL_OF_BOUND else "BELOW"
        out.append(row)
    return out


def sweep_rows(sweep: list[dict]) -> list[dict]:
    """The PackCNN sweep as one row per (matrix, density, gamma): ``a=ALPHA`` cells "rate / pruned %"."""
    out = {}
    for p in sweep:
        key = (p["matrix"], p["density"], p["gamma"])
        row = out.setdefault(key, {"matrix": p["matrix"], "density": p["density"], "gamma": p["gamma"]})
        row[f"a={p['alpha']}"] = f"{p['matrix_rate']:.2f}x / {100 * p['conflict_pruned']:.2f} %"
    for key, row in out.items():
        pts = [p for p in sweep if (p["matrix"], p["density"], p["gamma"]) == key]
        row["best_alpha"] = best_alpha_points(pts)[key[2]]["alpha"]
    return list(out.values())


def combine_timing_rows(sweep: list[dict], shape=SPEED_SHAPE, alpha: int = 16) -> list[dict]:
    """column_combine wall time on the ``shape`` matrices at ``alpha``, one row per density (seconds per gamma)."""
    rows = {}
    for p in sweep:
        if (p["n"], p["k"]) != tuple(shape) or p["alpha"] != alpha:
            continue
        row = rows.setdefault(p["density"], {"n": p["n"], "k": p["k"], "alpha": alpha, "density": p["density"]})
        row[f"s g={p['gamma']:g}"] = p["seconds"]
    for row in rows.values():
        row["max_s"] = max(v for c, v in row.items() if c.startswith("s g="))
        row["target_s"] = COMBINE_TARGET_S
        row["goal"] = "PASS" if row["max_s"] <= COMBINE_TARGET_S else "BELOW"
    return [rows[d] for d in sorted(rows, reverse=True)]


def combine_timing_task(density: float, gammas=PACKCNN_GAMMAS, shape=SPEED_SHAPE, alpha: int = 16,
                        seed: int = 0) -> dict:
    """column_combine timing on a synthetic ``shape`` matrix (the quick bench, which has no such matrix)."""
    rng = np.random.default_rng(seed)
    w = pruned_int_matrix(synthetic_matrix(rng, *shape), density)
    sweep = packcnn_sweep(f"speed {shape[0]}x{shape[1]}", density, w, (alpha,), gammas)
    return {"sweep": sweep, "line": f"  column_combine {shape[0]}x{shape[1]} d={density:g} alpha={alpha}: "
                                    + ", ".join(f"g={p['gamma']:g} {p['seconds']:.2f} s" for p in sweep)}


def model_matrices(module) -> dict[str, np.ndarray]:
    """N x K float weight matrices of the model's compute layers (all but a first layer with K < 16,
    which the schemes keep dense: see ``ColumnCombineScheme.applies_to``)."""
    import torch
    out = {}
    for name, mod in module.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            w = mod.weight.detach().reshape(mod.weight.shape[0], -1).double().numpy()
            if w.shape[1] >= 16:
                out[f"model.{name}"] = w
    return out


# ---------------------------------------------------------------------------------------------
# accuracy at equal stored bits, RTL cycles
# ---------------------------------------------------------------------------------------------
def _compress(module, data, scheme_name: str, opts: dict, array=ARRAY):
    from .compress import compress_model
    from .schemes import get_scheme
    scheme = get_scheme(scheme_name)(array=_array(array), **opts)
    scheme.progress = False
    return compress_model(module, scheme, data, progress=False, log=lambda *a, **k: None)


def accuracy_rows(module, data, settings: list[tuple[str, str, dict]], results: dict | None = None,
                  array=ARRAY) -> list[dict]:
    """Compress the digits CNN with each (label, scheme, options) for ``array``; integer accuracy, the
    whole model's ``stored_bits`` (every bit of every layer, the compress report's / manifest's figure) and
    rates, and for the compressed layers alone the packed slots (slot rate) and stored bits."""
    from .compress import stored_bits
    rows = []
    for label, scheme_name, opts in settings:
        t0 = time.perf_counter()
        q, p, r = _compress(module, data, scheme_name, opts, array)
        if results is not None:
            results[label] = (q, p, r)
        comp = [l for l in r["layers"] if l["scheme"] == scheme_name and scheme_name != "dense"]
        dense_slots = sum(l["n"] * l["k"] for l in comp)
        slots = sum(l.get("packed_slots", 0) for l in comp)
        bits = [stored_bits(p[l["layer"]]) for l in comp]   # from the memory images themselves
        stored = sum(b["stored_bits"] for b in bits)
        weights = sum(b["weight_bits"] for b in bits)
        rows.append({"model": label, "scheme": scheme_name,
                     "density": opts.get("density"), "alpha": opts.get("alpha"), "gamma": opts.get("gamma"),
                     "subword": bool(opts.get("subword", False)), "lossless": opts.get("penalty") == 1e6,
                     "float_acc": r["accuracy"]["float"], "pruned_float_acc": r["accuracy"]["compressed_float"],
                     "int_acc": r["accuracy"]["int"],
                     "packed_slots": slots or None, "matrix_rate": dense_slots / slots if slots else None,
                     "stored_bits": stored or None,
                     "rate_vs_int8": 8 * dense_slots / stored if stored else None,
                     "weights_rate_vs_int8": 8 * dense_slots / weights if weights else None,
                     "model_stored_bits": r["stored_bits"], "model_rate_vs_int8": r["rate_vs_int8"],
                     "model_weights_rate_vs_int8": r["weights_rate_vs_int8"],
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows


@functools.lru_cache(maxsize=1)
def _model_and_data():
    from .data import digits
    from .model_zoo import default_model
    return default_model(progress=False), digits()


def accuracy_task(label: str, scheme_name: str, opts: dict, array=ARRAY, want_results: bool = False) -> dict:
    """One compressed digits CNN (:func:`accuracy_rows`); with ``want_results`` also (QuantModel,
    packed layers, report) for the cycle table."""
    module, data = _model_and_data()
    results = {}
    rows = accuracy_rows(module, data, [(label, scheme_name, opts)], results, array)
    return {"rows": rows, "results": results[label] if want_results else None}


def accuracy_settings(densities=ACC_DENSITIES, tight_alphas_=(4,), packcnn_alphas_=ACC_PACKCNN_ALPHAS,
                      gammas=ACC_PACKCNN_GAMMAS, extra: dict | None = None) -> list[tuple[str, str, dict]]:
    """(label, scheme, options) of the accuracy grid: dense int8; tight at each density and alpha
    (default penalty) and lossless at ``CYCLE_DENSITY``; PackCNN at each density, alpha and gamma.
    ``extra`` options are added to every compressed setting (the quick bench's shorter training)."""
    extra = extra or {}
    out = [("dense int8", "dense", {})]
    for d in densities:
        for a in tight_alphas_:
            out.append((f"tight d={d:g} a={a}", "tight", {"density": d, "alpha": a, **extra}))
    a_max = max(tight_alphas_)
    out.append((f"tight lossless d={CYCLE_DENSITY:g} a={a_max}", "tight",
                {"density": CYCLE_DENSITY, "alpha": a_max, "penalty": 1e6, **extra}))
    for d in densities:
        for a in packcnn_alphas_:
            for g in gammas:
                out.append((f"packcnn d={d:g} a={a} g={g:g}", "packcnn",
                            {"density": d, "alpha": a, "gamma": g, **extra}))
    return out


def accuracy_frontier(rows: list[dict]) -> list[dict]:
    """Rows ordered by the model's stored bits, keeping those more accurate than every row with fewer or
    equal bits: the best accuracy a scheme reaches within a bit budget."""
    out = []
    for r in sorted(rows, key=lambda r: (r["model_stored_bits"], -r["int_acc"])):
        if out and r["int_acc"] <= out[-1]["int_acc"]:
            continue
        out.append(r)
    return out


def equal_bits_rows(acc: list[dict]) -> list[dict]:
    """Per tight model (default penalty): PackCNN's accuracy at the same stored bits, linear in stored bits
    between the two points of PackCNN's :func:`accuracy_frontier` around it (above its largest point:
    that point's accuracy; below its smallest: none -- PackCNN has no model that small), and the closest
    PackCNN model in stored bits as run."""
    tight = [r for r in acc if r["scheme"] == "tight" and not r.get("lossless")]
    pack = [r for r in acc if r["scheme"] == "packcnn"]
    front = accuracy_frontier(pack)
    out = []
    for t in sorted(tight, key=lambda r: r["model_stored_bits"]):
        b = t["model_stored_bits"]
        acc_p, lo, hi = None, None, None
        if front and b >= front[0]["model_stored_bits"]:
            lo = hi = front[-1]
            acc_p = front[-1]["int_acc"]
            for f0, f1 in zip(front, front[1:]):
                if f0["model_stored_bits"] <= b <= f1["model_stored_bits"]:
                    s = (b - f0["model_stored_bits"]) / max(1, f1["model_stored_bits"] - f0["model_stored_bits"])
                    acc_p, lo, hi = f0["int_acc"] + s * (f1["int_acc"] - f0["int_acc"]), f0, f1
                    break
        near = min(pack, key=lambda r: abs(r["model_stored_bits"] - b)) if pack else None
        out.append({"tight": t["model"], "stored_bits": b, "tight_acc": t["int_acc"],
                    "packcnn_acc_at_bits": acc_p,
                    "tight_minus_packcnn": None if acc_p is None else t["int_acc"] - acc_p,
                    "packcnn_between": None if lo is None else
                    (lo["model"] if lo is hi else f"{lo['model']} .. {hi['model']}"),
                    "closest_packcnn": near["model"] if near else None,
                    "closest_bits": near["model_stored_bits"] if near else None,
                    "closest_acc": near["int_acc"] if near else None})
    return out


def cycles_rows(results: dict, labels, dense_label: str, array, measure: bool = True) -> list[dict]:
    """LayerEngine cycles of the compressed models vs the dense int8 array of equal PE count, with
    PE utilization = nonzero-weight MACs / (R*C*cycles) on both arrays."""
    from sparsyn.hw.cycles import useful_macs
    from .bench_ternary import cycle_table
    dq, dp, _ = results[dense_label]
    rows = []
    for label in labels:
        q, p, _ = results[label]
        for row in cycle_table(q, p, dq, dp, array, measure=measure):
            layer = q.layer(row["layer"])
            macs = useful_macs(layer)
            cyc = row.get("cycles_rtl", row["cycles_model"])
            pes = array.rows * array.cols
            rows.append({"model": label, **row, "util": macs / (pes * cyc),
                         "dense_util": macs / (pes * row["dense_int8_cycles"])})
    return rows


def anneal_timing(n: int = 512, k: int = 4608, density: float = 0.1, array=ARRAY, seed: int = 0,
                  progress: bool = True) -> dict:
    """Wall time of tight's annealing of an n x k matrix for ``array`` at the array's largest alpha
    (tqdm bar with ``progress``) and the load around it."""
    from .packing import conflict_prune
    from .schemes import get_scheme
    array = _array(array)
    section_height = array.cols
    rng = np.random.default_rng(seed)
    w = pruned_int_matrix(synthetic_matrix(rng, n, k), density)
    alpha = tight_alphas(section_height)[-1]
    scheme = get_scheme("tight")(array=array, alpha=alpha)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    grouping = scheme.choose_groups(np.abs(w).astype(np.float64), f"{n}x{k}", progress=progress)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    _, info = conflict_prune(w, grouping)
    st = scheme.anneal_stats[f"{n}x{k}"]
    return {"n": n, "k": k, "density": density, "alpha": alpha, "section_height": section_height,
            "sweeps": st["sweeps"], "sections": st["sections"],
            "seconds": round(seconds, 2), "target_s": ANNEAL_TARGET_S,
            "goal": "PASS" if seconds < ANNEAL_TARGET_S else "BELOW",
            "initial_width": st["initial_width"], "final_width": st["final_width"],
            "matrix_rate": n * k / (sum(grouping.widths) * section_height),
            "conflict_pruned": info["pruned"] / max(1, int(np.count_nonzero(w))),
            "load_1min_before": round(load_before[0], 2), "load_1min_after": round(load_after[0], 2),
            "cpus": os.cpu_count()}


def anneal_task(array=ARRAY) -> dict:
    row = anneal_timing(*SPEED_SHAPE, 0.1, array, progress=False)
    return {"anneal": row, "line": f"  annealing {row['n']}x{row['k']} d=0.1: {row['seconds']} s"}


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
RATE_COLS = ["matrix", "density", "scheme", "alpha", "gamma", "matrix_rate", "conflict_pruned", "bound", "of_bound",
             "packed_slots", "nonzero", "grouped_bit_rate", "weight_bits", "index_bits", "other_bits", "stored_bits",
             "rate_vs_int8", "weights_rate_vs_int8", "seconds"]
GOAL_COLS = ["matrix", "density", "bound", "tight_alpha", "tight", "tight_pruned", "tight_a4", "tight_a4_pruned",
             "packcnn_at_tight_pruned", "packcnn_lo", "packcnn_hi", "packcnn_alpha_capped", "ratio_equal_pruned",
             "goal_2x", "tight_lossless", "packcnn_lossless", "packcnn_lossless_alpha", "packcnn_lossless_capped",
             "ratio_lossless", "goal_2x_lossless",
             "tight_of_bound", "goal_90_bound"]
ACC_COLS = ["model", "int_acc", "model_stored_bits", "model_rate_vs_int8", "pruned_float_acc", "matrix_rate",
            "stored_bits", "rate_vs_int8", "weights_rate_vs_int8", "seconds"]
EQUAL_BITS_COLS = ["tight", "stored_bits", "tight_acc", "packcnn_acc_at_bits", "tight_minus_packcnn",
                   "packcnn_between", "closest_packcnn", "closest_bits", "closest_acc"]
CYC_COLS = ["model", "layer", "scheme", "lanes", "slots", "passes", "cycles_rtl", "cycles_model", "cycles_exact",
            "bit_exact", "dense_int8_cycles", "speedup_vs_dense", "util", "dense_util"]
ANNEAL_COLS = ["n", "k", "density", "alpha", "section_height", "sections", "sweeps", "seconds", "target_s", "goal",
               "initial_width", "final_width", "matrix_rate", "conflict_pruned", "load_1min_before",
               "load_1min_after", "cpus"]


def _per_density(goals: list[dict], key: str, fmt: str = "{:.2f}") -> str | None:
    vals = [(g["density"], g.get(key)) for g in goals]
    if not vals or all(v is None for _, v in vals):
        return None
    return " / ".join("-" if v is None else fmt.format(v) for _, v in vals) + \
        " at d = " + " / ".join(f"{d:g}" for d, _ in vals)


def anchor_rows(goals: list[dict], cycles: list[dict], rates: list[dict] | None = None) -> list[dict]:
    """Paper anchors next to the measured counterparts on the largest VGG-shaped matrix (per density)."""
    vgg = sorted({g["matrix"] for g in goals if g["matrix"].startswith("vgg")},
                 key=lambda m: -np.prod([int(x) for x in m.split()[-1].split("x")]))
    big = [g for g in goals if vgg and g["matrix"] == vgg[0]]
    pc5 = {(r["matrix"], r["density"]): r for r in (rates or []) if r["scheme"] == "packcnn g=0.5"}
    pc_rates = [dict(density=g["density"], v=pc5[(g["matrix"], g["density"])]["matrix_rate"],
                     capped=pc5[(g["matrix"], g["density"])].get("alpha_capped") == "yes")
                for g in big if (g["matrix"], g["density"]) in pc5]
    capped = [f"{p['density']:g}" for p in pc_rates if p["capped"]]
    tight_sp = [c["speedup_vs_dense"] for c in cycles if c["scheme"] == "tight" and "lossless" not in c["model"]]
    where = f"{vgg[0]}, " if vgg else ""
    return [
        {"figure": "PackCNN matrix rate", "paper": PAPER["packcnn_rate"],
         "measured": _per_density([{"density": p["density"], "v": p["v"]} for p in pc_rates], "v"),
         "note": f"{where}gamma = 0.5 (the paper's plots) at its best alpha of 2/4/8/16"
                 + (f"; alpha-capped at d = {', '.join(capped)}" if capped else "")},
        {"figure": "Tight matrix rate (DAC / TCAD)", "paper": f"{PAPER['dac_rate']} / {PAPER['tcad_rate']}",
         "measured": _per_density(big, "tight"), "note": f"{where}tight at its best alpha, default penalty"},
        {"figure": "Tight / PackCNN rate", "paper": round(PAPER["tcad_over_packcnn"], 2),
         "measured": _per_density(big, "ratio_equal_pruned"),
         "note": "at equal pruned fraction (PackCNN interpolated at tight's)"},
        {"figure": "Tight / PackCNN rate, lossless", "paper": None,
         "measured": _per_density(big, "ratio_lossless"), "note": "both prune nothing, each at its best alpha"},
        {"figure": "throughput vs dense array", "paper": f"x{PAPER['tcad_throughput']} (TCAD)",
         "measured": sum(tight_sp) / len(tight_sp) if tight_sp else None,
         "note": "tight, default model layers, equal PEs (mean over layers)"},
    ]


def run_tight_bench(quick: bool = False, out=None, array=ARRAY, jobs: int | None = None) -> dict:
    """Run every table (see the module docstring) for ``array`` (default 4x4) on ``jobs`` worker processes
    (default :func:`default_jobs`); prints them, writes JSON (``out`` or work/bench/tight.json), returns the dict."""
    from .data import digits
    from .model_zoo import default_model
    from .paths import work_dir
    from .train import accuracy

    t_start = time.time()
    jobs = default_jobs() if jobs is None else max(1, int(jobs))
    array = _array(array)
    data = digits()
    module = default_model(progress=False)      # trains and caches it once, before the workers load it
    rng = np.random.default_rng(0)
    densities = QUICK_DENSITIES if quick else DENSITIES
    matrices = model_matrices(module)
    matrices["vgg 128x1152"] = synthetic_matrix(rng, 128, 1152)
    if not quick:
        matrices["vgg 512x4608"] = synthetic_matrix(rng, *SPEED_SHAPE)
    doc = {"quick": quick, "paper": PAPER, "array": f"{array.rows}x{array.cols}", "jobs": jobs,
           "float_accuracy": accuracy(module, data.test_x, data.test_y),
           "settings": {"densities": list(densities), "tight_alphas": list(tight_alphas(array.cols)),
                        "packcnn_alphas": list(PACKCNN_ALPHAS), "packcnn_gammas": list(PACKCNN_GAMMAS)}}

    rate_list = rate_tasks(matrices, densities, array,
                           subword_points={("vgg 128x1152", 0.1), ("vgg 128x1152", 0.25)})
    t_alphas = tight_alphas(array.cols)
    if quick:
        acc = accuracy_settings((0.5, 0.25), (t_alphas[-1],), (4,), (0.0, 0.5),
                                {"finetune_epochs": 2, "prune_steps": 2})
    else:
        acc = accuracy_settings(ACC_DENSITIES, t_alphas)
    a_max = t_alphas[-1]
    cyc_labels = [f"tight d={CYCLE_DENSITY:g} a={a_max}", f"tight lossless d={CYCLE_DENSITY:g} a={a_max}",
                  f"packcnn d={CYCLE_DENSITY:g} a=4 g=0.5", f"packcnn d={CYCLE_DENSITY:g} a=4 g=0"]
    acc_list = [(("acc", label), 3.0, accuracy_task, (label, scheme, opts, array, label in cyc_labels
                                                       or label == "dense int8"))
                for label, scheme, opts in acc]
    speed_list = [(("anneal",), 10.0, anneal_task, (array,))]
    if quick:
        speed_list += [(("combine", d), 3.0, combine_timing_task, (d,)) for d in DENSITIES]

    n_tasks = len(rate_list) + len(acc_list) + len(speed_list)
    print(f"operating points, PackCNN sweep, accuracy grid, timings: {n_tasks} "
          f"tasks on {jobs} worker process{'es' if jobs > 1 else ''} ...", flush=True)
    done = run_tasks(rate_list + acc_list + speed_list, jobs, log=lambda s: print(s, flush=True))

    tables = collect_rates(rate_list, done)
    doc["rates"], doc["sweep"] = tables["rates"], tables["sweep"]
    doc["goals"] = goal_rows(doc["rates"])
    doc["packcnn_sweep"] = sweep_rows(doc["sweep"])
    combine_sweep = doc["sweep"] + [p for key, res in done.items() if key[0] == "combine" for p in res["sweep"]]
    doc["combine_timing"] = combine_timing_rows(combine_sweep)
    doc["anneal"] = [done[("anneal",)]["anneal"]]
    doc["accuracy"] = [done[("acc", label)]["rows"][0] for label, _, _ in acc]
    doc["equal_bits"] = equal_bits_rows(doc["accuracy"])
    results = {label: done[("acc", label)]["results"] for label, _, _ in acc if done[("acc", label)]["results"]}

    print("RTL cycles (Amaranth simulation of the generated LayerEngine) ...", flush=True)
    doc["cycles"] = cycles_rows(results, [c for c in cyc_labels if c in results], "dense int8", array, measure=True)
    doc["anchors"] = anchor_rows(doc["goals"], doc["cycles"], doc["rates"])
    doc["seconds"] = round(time.time() - t_start, 1)
    write_report(doc, array, Path(out) if out else work_dir() / "bench" / "tight.json")
    return doc


def write_report(doc: dict, array, path: Path) -> Path:
    """Print every table of ``doc`` and write it as JSON to ``path``."""
    print_tables(doc, array)
    write_json(path, doc)
    print(f"\nfigures: {path}  ({doc.get('seconds')} s on {doc.get('jobs', 1)} worker processes, "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)")
    return path


def print_tables(doc: dict, array) -> None:
    a = f"{array.rows}x{array.cols}"
    print()
    print(format_table(doc["rates"], RATE_COLS,
                       title="operating points. matrix_rate = slot rate = dense slots / packed slots (N*K / packed "
                             "entries); conflict_pruned = fraction of the pruned matrix's nonzeros lost to conflict "
                             "pruning; bound = 1/density = N*K / nonzeros, of_bound = matrix_rate / bound; "
                             "'tight a=A': tight at alpha A, default penalty; 'tight lossless a=A': no conflict "
                             "pruning; 'packcnn g=G': PackCNN at gamma G and its best alpha (column alpha) of "
                             "2/4/8/16 (<= N); grouped_bit_rate = 8*N*K / bits of the grouped form; stored_bits = "
                             f"what the chip holds for the matrix as one layer on {a} (weights + index + other, from "
                             "the array ROM format), rate_vs_int8 from it; '-' = memory images not built (chip_note "
                             "in the JSON says why)"))
    if doc.get("packcnn_sweep"):
        print()
        print(format_table(doc["packcnn_sweep"], ["matrix", "density", "gamma",
                                                  *[f"a={x}" for x in PACKCNN_ALPHAS], "best_alpha"],
                           title="PackCNN alpha x gamma sweep (original sequential best-fit): each cell = slot rate / "
                                 "pruned fraction; gamma caps the weights one group may lose, as a fraction of N; "
                                 "'-' = alpha above the matrix's rows"))
    print()
    print(format_table(doc["goals"], GOAL_COLS,
                       title="HEADLINE: slot rate at equal pruned fraction. tight = tight at its best alpha "
                             "(tight_alpha, default penalty), tight_pruned its pruned fraction; "
                             "packcnn_at_tight_pruned = PackCNN's slot rate interpolated linearly in pruned fraction "
                             "between its gamma points (each at its best alpha; packcnn_lo/hi = the bracketing points: "
                             "gamma, alpha, pruned, rate); ratio_equal_pruned = tight / that; packcnn_*_capped = a "
                             "PackCNN point used sits at the largest alpha tried with groups >= "
                             f"{int(100 * CAPPED_FILL)} % full (a larger alpha could raise it). Lossless pair: both "
                             "prune nothing, each at its best alpha. Goals: ratio >= "
                             f"{GOAL_OVER_PACKCNN}, tight >= {int(100 * GOAL_OF_BOUND)} % of the 1/density bound"))
    if doc.get("combine_timing"):
        print()
        cols = ["n", "k", "alpha", "density", *[f"s g={g:g}" for g in PACKCNN_GAMMAS], "max_s", "target_s", "goal"]
        print(format_table(doc["combine_timing"], cols,
                           title="column_combine (PackCNN grouping) wall time in seconds, per gamma"))
    print()
    print(format_table(doc["anneal"], ANNEAL_COLS, title="tight annealing wall time"))
    print()
    print(format_table(doc["accuracy"], ACC_COLS,
                       title=f"digits CNN (float {doc['float_accuracy']:.2f} %): int_acc = integer accuracy after "
                             "compression; model_stored_bits = every bit the chip stores for the whole model (the "
                             "manifest's stored_bits; the first conv stays dense int8), model_rate_vs_int8 from it; "
                             "matrix_rate / stored_bits / rates over the compressed layers only. Each scheme with "
                             "its own training flow (packcnn: the original's joint prune/combine/retrain schedule)"))
    print()
    print(format_table(doc["equal_bits"], EQUAL_BITS_COLS,
                       title="accuracy at equal stored bits (whole model): per tight model, PackCNN's accuracy at "
                             "the same stored bits, linear in stored bits between the two models of PackCNN's "
                             "frontier (best accuracy within a bit budget) around it; '-' = PackCNN has no model "
                             "that small; closest_* = the PackCNN model nearest in stored bits, as run"))
    print()
    print(format_table(doc["cycles"], CYC_COLS,
                       title=f"LayerEngine cycles per image, {a} PEs, packed (alpha lanes) vs dense int8 array; "
                             "RTL = Amaranth simulation of the generated engine; cycles_exact: RTL == the exact model"))
    print()
    print(format_table(doc["anchors"], ["figure", "paper", "measured", "note"],
                       title="paper anchors (quoted) vs this run (measured)"))
    for line in closing_note(doc):
        print(line)


def closing_note(doc: dict) -> list[str]:
    """The summary printed last: the command, the headline ratio per density on each VGG-shaped matrix,
    the lossless ratio and the accuracy difference at equal stored bits."""
    cmd = "sparsyn bench --scheme tight" + (" --quick" if doc.get("quick") else "") + \
        (f" --array {doc['array']}" if doc.get("array") not in (None, "4x4") else "")
    lines = ["", f"closing note ({cmd}):"]
    for m in sorted({g["matrix"] for g in doc["goals"]}):
        gs = [g for g in doc["goals"] if g["matrix"] == m]
        if not m.startswith("vgg"):
            continue
        lines.append(f"  {m}: tight / PackCNN slot rate at equal pruned fraction "
                     + ", ".join(f"{g['ratio_equal_pruned']:.2f}x at d={g['density']:g} "
                                 f"(tight {g['tight']:.2f}x a={g['tight_alpha']} {100 * g['tight_pruned']:.2f} % pruned"
                                 f" vs PackCNN {g['packcnn_at_tight_pruned']:.2f}x"
                                 f"{', alpha-capped' if g.get('packcnn_alpha_capped') == 'yes' else ''})"
                                 for g in gs if g.get("ratio_equal_pruned")))
        lines.append(f"  {m}: lossless (neither prunes) "
                     + ", ".join(f"{g['ratio_lossless']:.2f}x at d={g['density']:g}"
                                 for g in gs if g.get("ratio_lossless")))
    diffs = [r for r in doc.get("equal_bits", []) if r.get("tight_minus_packcnn") is not None]
    if diffs:
        lines.append("  digits CNN at equal stored bits, tight minus PackCNN accuracy: "
                     + ", ".join(f"{r['tight_minus_packcnn']:+.2f} pt at {r['stored_bits']} bits" for r in diffs))
    return lines
