"""``sparsyn bench --scheme tight`` (and ``--scheme packcnn``): Tight Compression vs the PackCNN baseline.

Every figure is measured in the run (:func:`run_tight_bench`):

* **matrix rates** (:func:`rate_rows`): the same pruned integer matrix is packed by ``tight`` and by
  ``packcnn``; per scheme the matrix rate (N*K dense slots / packed slots), the grouped form's bit-level
  rate (``grouped_bit_rate`` = 8*N*K / bits of the grouped form: entries with their select index + lane
  table, subword shift flags included), the bits the chip stores for the matrix as one linear layer on
  the R x C array (``stored_bits`` = weights + index + other, the compressor's memory images, and
  ``rate_vs_int8`` from that total; ``weights_rate_vs_int8`` = weight memory only), the 1/density bound
  (N*K / nonzeros of the pruned matrix, before any conflict pruning), the fraction of that bound and the
  fraction of nonzeros lost to conflict pruning. Matrices: the default digits CNN's layers (trained
  weights magnitude-pruned per density, no fine-tuning) and synthetic VGG-16-shaped matrices (Gaussian
  weights, magnitude-pruned = unstructured random positions), densities 50 % ... 5 %. Each scheme runs
  lossless (``tight`` with an effectively infinite conflict penalty, ``packcnn`` with gamma = 0) and with
  its conflict budget (``tight`` default penalty, ``packcnn`` gamma > 0).
* **goals** (:func:`goal_rows`): tight >= 2x PackCNN's matrix rate at equal conflict loss (both
  lossless), tight (budget) vs PackCNN (budget), and tight >= 90 % of the 1/density bound: PASS / BELOW.
* **accuracy** of the digits CNN compressed with each scheme at matched size (``compress_model``).
* **cycles**: LayerEngine cycles per layer (Amaranth simulation of the generated RTL, bit-exact check,
  and the plan's exact cycle model, which the RTL must equal) vs the dense int8 array of the same
  R x C PEs (reuses :func:`sparsyn.sw.bench_ternary.cycle_table`), with PE utilization.

Every scheme object is made for one array (:data:`ARRAY` unless given): ``Scheme(array=..., **options)``.
* **anneal time** for a 512 x 4608 matrix (tqdm bar shown), with the load average.

Paper anchors (quoted, not measured): PackCNN 5.88x -> Tight DAC'20 10.28x / TCAD'22 14.13x matrix
compression (about 2.4x over PackCNN); throughput x2.12 (DAC) / x2.75 (TCAD).
"""
from __future__ import annotations

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
#: Goal thresholds of issue 5.
GOAL_OVER_PACKCNN = 2.0
GOAL_OF_BOUND = 0.9
#: The array the bench packs for (a row section = its C columns).
ARRAY = ArrayConfig(4, 4)


def _array(array) -> ArrayConfig:
    return array if isinstance(array, ArrayConfig) else ArrayConfig.parse(str(array))


def config_for(density: float, cols: int = 4) -> dict:
    """Group size per density for an array of ``cols`` columns (= the rows of a section): the smallest
    power of two alpha (at most ``cols``: a conflict-free group holds at most one nonzero column per
    row) for which the column-count limit (nonzero columns of a section / alpha) is below the row limit
    (density * K nonzeros per row). A section of h rows at density d has only 1-(1-d)^h of its columns
    nonzero, so with 4-row sections (the default 4x4 array) alpha = 2 at 50 % and alpha = 4 from 25 %
    down to 5 % suffice. Returns the scheme options (``{"alpha": ...}``; the array is given separately)."""
    h = cols
    nz_cols = 1 - (1 - density) ** h
    alpha = 2
    while alpha < h and nz_cols / alpha > density:
        alpha *= 2
    return {"alpha": min(alpha, h)}


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
    """Pack one matrix with one scheme setting; the row of the rate table. ``keep[(matrix, density, label)]``
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
           "gamma": opts.get("gamma"), "nonzero": nnz, "entries": entries,
           "packed_slots": st["packed_slots"], "matrix_rate": st["matrix_rate"],
           "grouped_bits": st["rom_bits"], "grouped_index_bits": st["index_bits"], "flag_bits": st["flag_bits"],
           "grouped_bit_rate": st["bit_rate"],
           "bound": bound, "of_bound": st["matrix_rate"] / bound,
           "conflict_pruned": info["pruned"] / max(1, entries), "seconds": round(info["seconds"], 2)}
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


def scheme_settings(density: float, cols: int, gammas, subword: bool = False):
    """(scheme, options, lossless, label) of the settings compared on every matrix (array of ``cols`` columns)."""
    cfg = config_for(density, cols)
    base = {**cfg, "subword": subword}
    tag = "+sub" if subword else ""
    out = [("tight", base, False, f"tight{tag}"), ("tight", base, True, f"tight{tag} lossless")]
    for g in gammas:
        # lossless PackCNN gets tight's alpha (conflicts, not alpha, limit it); with a conflict budget it
        # gets its own alpha ~ 1/density as in the PackCNN paper, so alpha does not cap its rate
        opts = {**base, "gamma": g} if g == 0 else {**base, "gamma": g, "alpha": packcnn_alpha(density)}
        out.append(("packcnn", opts, g == 0, f"packcnn{tag} g={g:g}"))
    return out


def packcnn_alpha(density: float, cap: int = 16) -> int:
    """PackCNN's group size with a conflict budget: the power of two >= 1/density (at most ``cap``) --
    combining about 1/density columns fills a packed column, as in the PackCNN paper (alpha = 8 at ~1/8)."""
    alpha = 2
    while alpha < cap and alpha * density < 1 - 1e-9:
        alpha *= 2
    return alpha


def rate_rows(matrices: dict[str, np.ndarray], densities, array=ARRAY, gammas=(0.0, 0.05),
              subword_points=(), keep: dict | None = None, log=print) -> list[dict]:
    """The rate table: every float matrix pruned to every density, packed by every setting for ``array``.

    ``subword_points``: (matrix name, density) pairs also run with subword-level pruning.
    """
    array = _array(array)
    section_height = array.cols
    rows = []
    for name, wf in matrices.items():
        for d in densities:
            plain = pruned_int_matrix(wf, d)
            for scheme, opts, lossless, label in scheme_settings(d, section_height, gammas):
                rows.append(rate_row(name, d, plain, scheme, opts, lossless, label, keep, array))
                log(_progress_line(rows[-1]))
            if (name, d) in subword_points:
                sw = pruned_int_matrix(wf, d, subword=True)
                for scheme, opts, lossless, label in scheme_settings(d, section_height, gammas[:1], True):
                    rows.append(rate_row(name, d, sw, scheme, opts, lossless, label, keep, array))
                    log(_progress_line(rows[-1]))
    return rows


def _progress_line(r: dict) -> str:
    return (f"  {r['matrix']} d={r['density']:g} {r['scheme']}: rate {r['matrix_rate']:.2f}x "
            f"({100 * r['of_bound']:.0f} % of bound), conflict-pruned {100 * r['conflict_pruned']:.2f} %, "
            f"{r['seconds']} s")


def goal_rows(rows: list[dict]) -> list[dict]:
    """Goal check per (matrix, density): tight lossless / packcnn lossless (equal conflict loss: none),
    tight / packcnn with their conflict budgets, and tight's fraction of the 1/density bound."""
    out = []
    by = {}
    for r in rows:
        by.setdefault((r["matrix"], r["density"]), {})[r["scheme"]] = r
    for (matrix, d), s in by.items():
        t, tl, pl = s.get("tight"), s.get("tight lossless"), s.get("packcnn g=0")
        budget = [r for lab, r in s.items() if lab.startswith("packcnn g=") and lab != "packcnn g=0"]
        if t is None or tl is None or pl is None:
            continue
        row = {"matrix": matrix, "density": d, "alpha": t["alpha"], "h": t["h"],
               "bound": t["bound"], "tight": t["matrix_rate"], "tight_lossless": tl["matrix_rate"],
               "packcnn_lossless": pl["matrix_rate"],
               "lossless_ratio": tl["matrix_rate"] / pl["matrix_rate"]}
        row["goal_2x_lossless"] = "PASS" if row["lossless_ratio"] >= GOAL_OVER_PACKCNN else "BELOW"
        if budget:
            b = max(budget, key=lambda r: r["gamma"])
            row.update(packcnn_budget=b["matrix_rate"], packcnn_gamma=b["gamma"], packcnn_alpha=b["alpha"],
                       packcnn_pruned=b["conflict_pruned"], tight_pruned=t["conflict_pruned"],
                       budget_ratio=t["matrix_rate"] / b["matrix_rate"])
            row["goal_2x_budget"] = "PASS" if row["budget_ratio"] >= GOAL_OVER_PACKCNN else "BELOW"
        row["tight_of_bound"] = t["of_bound"]
        row["goal_90_bound"] = "PASS" if t["of_bound"] >= GOAL_OF_BOUND else "BELOW"
        row["lossless_of_bound"] = tl["of_bound"]
        row["goal_90_lossless"] = "PASS" if tl["of_bound"] >= GOAL_OF_BOUND else "BELOW"
        out.append(row)
    return out


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
# accuracy at matched size, RTL cycles
# ---------------------------------------------------------------------------------------------
def _compress(module, data, scheme_name: str, opts: dict, array=ARRAY):
    from .compress import compress_model
    from .schemes import get_scheme
    scheme = get_scheme(scheme_name)(array=_array(array), **opts)
    scheme.progress = False
    return compress_model(module, scheme, data, progress=False, log=lambda *a, **k: None)


def accuracy_rows(module, data, settings: list[tuple[str, str, dict]], results: dict | None = None,
                  array=ARRAY) -> list[dict]:
    """Compress the digits CNN with each (label, scheme, options) for ``array``; integer accuracy, and for
    the compressed layers the packed slots (matrix rate) and the bits the chip stores (rate vs int8 from
    every stored bit; ``weights_rate_vs_int8`` from the weight memory alone), plus the whole model's
    stored bits and rates."""
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
                     "subword": bool(opts.get("subword", False)),
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


def anneal_timing(n: int = 512, k: int = 4608, density: float = 0.1, array=ARRAY, seed: int = 0) -> dict:
    """Wall time of tight's annealing of an n x k matrix for ``array`` (tqdm bar shown) and the load around it."""
    from .packing import conflict_prune
    from .schemes import get_scheme
    array = _array(array)
    section_height = array.cols
    rng = np.random.default_rng(seed)
    w = pruned_int_matrix(synthetic_matrix(rng, n, k), density)
    cfg = config_for(density, section_height)
    scheme = get_scheme("tight")(array=array, **cfg)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    grouping = scheme.choose_groups(np.abs(w).astype(np.float64), f"{n}x{k}", progress=True)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    _, info = conflict_prune(w, grouping)
    st = scheme.anneal_stats[f"{n}x{k}"]
    return {"n": n, "k": k, "density": density, **cfg, "section_height": section_height, "sweeps": st["sweeps"],
            "sections": st["sections"],
            "seconds": round(seconds, 2), "target_s": 60, "goal": "PASS" if seconds < 60 else "BELOW",
            "initial_width": st["initial_width"], "final_width": st["final_width"],
            "matrix_rate": n * k / (sum(grouping.widths) * section_height),
            "conflict_pruned": info["pruned"] / max(1, int(np.count_nonzero(w))),
            "load_1min_before": round(load_before[0], 2), "load_1min_after": round(load_after[0], 2),
            "cpus": os.cpu_count()}


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
RATE_COLS = ["matrix", "density", "scheme", "alpha", "h", "gamma", "nonzero", "entries", "packed_slots",
             "matrix_rate", "grouped_bit_rate", "weight_bits", "index_bits", "other_bits", "stored_bits",
             "rate_vs_int8", "weights_rate_vs_int8", "bound", "of_bound", "conflict_pruned", "seconds"]
GOAL_COLS = ["matrix", "density", "alpha", "h", "bound", "tight_lossless", "packcnn_lossless", "lossless_ratio",
             "goal_2x_lossless", "tight", "tight_pruned", "packcnn_budget", "packcnn_alpha", "packcnn_gamma",
             "packcnn_pruned",
             "budget_ratio", "goal_2x_budget", "tight_of_bound", "goal_90_bound", "lossless_of_bound",
             "goal_90_lossless"]
ACC_COLS = ["model", "density", "alpha", "gamma", "subword", "pruned_float_acc", "int_acc", "packed_slots",
            "matrix_rate", "stored_bits", "rate_vs_int8", "weights_rate_vs_int8", "model_stored_bits",
            "model_rate_vs_int8", "model_weights_rate_vs_int8", "seconds"]
CYC_COLS = ["model", "layer", "scheme", "slots", "passes", "cycles_rtl", "cycles_model", "cycles_exact",
            "bit_exact", "dense_int8_cycles", "speedup_vs_dense", "util", "dense_util"]


def anchor_rows(goals: list[dict], cycles: list[dict]) -> list[dict]:
    """Paper anchors next to the measured counterparts (means over the goal rows / cycle rows)."""
    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None
    big = [g for g in goals if g["matrix"].startswith("vgg")]
    tight_sp = [c["speedup_vs_dense"] for c in cycles if c["scheme"] == "tight" and "lossless" not in c["model"]]
    pack_sp = [c["speedup_vs_dense"] for c in cycles if c["scheme"] == "packcnn" and "g=0.25" in c["model"]]
    return [
        {"figure": "PackCNN matrix rate", "paper": PAPER["packcnn_rate"],
         "measured": mean([g.get("packcnn_budget") for g in big]), "note": "VGG-shaped, gamma budget, mean over densities"},
        {"figure": "Tight matrix rate (DAC / TCAD)", "paper": f"{PAPER['dac_rate']} / {PAPER['tcad_rate']}",
         "measured": mean([g["tight"] for g in big]), "note": "VGG-shaped, mean over densities"},
        {"figure": "Tight / PackCNN rate", "paper": round(PAPER["tcad_over_packcnn"], 2),
         "measured": mean([g.get("budget_ratio") for g in big]), "note": "both with conflict budgets"},
        {"figure": "Tight / PackCNN rate, lossless", "paper": None,
         "measured": mean([g["lossless_ratio"] for g in big]), "note": "no conflict pruning in either"},
        {"figure": "throughput vs dense array", "paper": f"x{PAPER['tcad_throughput']} (TCAD)",
         "measured": mean(tight_sp), "note": "tight, default model layers, equal PEs"},
        {"figure": "throughput tight / packcnn", "paper": None,
         "measured": (mean(tight_sp) / mean(pack_sp)) if tight_sp and pack_sp else None,
         "note": "default model layers, tight vs packcnn g=0.25 (both d=0.25)"},
    ]


def run_tight_bench(quick: bool = False, out=None, array=ARRAY) -> dict:
    """Run every table (see the module docstring) for ``array`` (default 4x4); prints them, writes JSON
    (``out`` or work/bench/tight.json) and returns the dict."""
    from .data import digits
    from .model_zoo import default_model
    from .paths import work_dir
    from .train import accuracy

    t_start = time.time()
    data = digits()
    module = default_model(progress=False)
    rng = np.random.default_rng(0)
    densities = (0.5, 0.1) if quick else DENSITIES
    matrices = model_matrices(module)
    matrices["vgg 128x1152"] = synthetic_matrix(rng, 128, 1152)
    if not quick:
        matrices["vgg 512x4608"] = synthetic_matrix(rng, 512, 4608)
    array = _array(array)
    doc = {"quick": quick, "paper": PAPER, "array": f"{array.rows}x{array.cols}",
           "float_accuracy": accuracy(module, data.test_x, data.test_y)}

    print("packing rates (same pruned matrices for every scheme) ...", flush=True)
    rates = rate_rows(matrices, densities, array, gammas=(0.0, 0.05),
                      subword_points={("vgg 128x1152", 0.1), ("vgg 128x1152", 0.25)})
    doc["rates"] = rates
    doc["goals"] = goal_rows(rates)

    print("accuracy at matched size (digits CNN) ...", flush=True)
    ft = {"finetune_epochs": 2, "prune_steps": 2} if quick else {}
    settings = [("dense int8", "dense", {}),
                ("tight d=0.25", "tight", {"density": 0.25, "alpha": 4, **ft}),
                ("tight lossless d=0.25", "tight", {"density": 0.25, "alpha": 4, "penalty": 1e6, **ft}),
                ("packcnn d=0.25 g=0.25", "packcnn", {"density": 0.25, "alpha": 4, "gamma": 0.25, **ft}),
                ("packcnn d=0.25 g=0", "packcnn", {"density": 0.25, "alpha": 4, "gamma": 0.0, **ft})]
    if not quick:
        settings += [("packcnn d=0.5 g=0.25", "packcnn", {"density": 0.5, "alpha": 4, "gamma": 0.25}),
                     ("tight d=0.1", "tight", {"density": 0.1, "alpha": 4}),
                     ("tight+sub d=0.25", "tight", {"density": 0.25, "alpha": 4, "subword": True})]
    results = {}
    doc["accuracy"] = accuracy_rows(module, data, settings, results, array)

    print("RTL cycles (Amaranth simulation of the generated LayerEngine) ...", flush=True)
    cyc_labels = ["tight d=0.25", "tight lossless d=0.25", "packcnn d=0.25 g=0.25", "packcnn d=0.25 g=0"]
    doc["cycles"] = cycles_rows(results, cyc_labels, "dense int8", array, measure=True)

    print("annealing a 512x4608 matrix ...", flush=True)
    doc["anneal"] = [anneal_timing(512, 4608, 0.1, array)]
    doc["anchors"] = anchor_rows(doc["goals"], doc["cycles"])
    doc["seconds"] = round(time.time() - t_start, 1)
    write_report(doc, array, Path(out) if out else work_dir() / "bench" / "tight.json")
    return doc


def write_report(doc: dict, array, path: Path) -> Path:
    """Print every table of ``doc`` and write it as JSON to ``path``."""
    print_tables(doc, array)
    write_json(path, doc)
    print(f"\nfigures: {path}  ({doc.get('seconds')} s, load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)")
    return path


def print_tables(doc: dict, array) -> None:
    print()
    print(format_table(doc["rates"], RATE_COLS,
                       title="matrix compression: rate = dense slots / packed slots; grouped_bit_rate = 8*N*K / "
                             "bits of the grouped form (sel index, lane table, shift flags included); stored_bits = "
                             f"what the chip holds for the matrix as one layer on {array.rows}x{array.cols} (weights + "
                             "index + other), rate_vs_int8 from it, weights_rate_vs_int8 = weight memory only; "
                             "'-' = memory images not built (chip_note in the JSON says why); "
                             "bound = 1/density; conflict_pruned = fraction of nonzero entries lost to conflict pruning"))
    print()
    print(format_table(doc["goals"], GOAL_COLS,
                       title=f"goals: tight >= {GOAL_OVER_PACKCNN}x PackCNN (lossless vs lossless; budget vs budget) "
                             f"and tight >= {int(100 * GOAL_OF_BOUND)} % of the 1/density bound"))
    print()
    print(format_table(doc["accuracy"], ACC_COLS,
                       title=f"digits CNN (float {doc['float_accuracy']:.2f} %): integer accuracy after compression; "
                             "matrix_rate / stored_bits / rates over the compressed layers (first conv stays dense "
                             "int8; rate_vs_int8 from every stored bit, weights_rate_vs_int8 = weight memory only); "
                             "model_*: the whole model"))
    print()
    print(format_table(doc["cycles"], CYC_COLS,
                       title=f"LayerEngine cycles per image, {array.rows}x{array.cols} PEs, packed (alpha lanes) vs "
                             "dense int8 array; RTL = Amaranth simulation of the generated engine; "
                             "cycles_exact: RTL == the exact model"))
    print()
    print(format_table(doc["anneal"], ["n", "k", "density", "alpha", "section_height", "sections", "sweeps", "seconds",
                                       "target_s", "goal", "initial_width", "final_width", "matrix_rate",
                                       "conflict_pruned", "load_1min_before", "load_1min_after", "cpus"],
                       title="tight annealing wall time"))
    print()
    print(format_table(doc["anchors"], ["figure", "paper", "measured", "note"],
                       title="paper anchors (quoted) vs this run (measured)"))
