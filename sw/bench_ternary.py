"""``sparsyn bench --scheme ternary``: accuracy, compression, RTL cycles and LUTs per PE, all measured in the run.

Tables (:func:`run_ternary_bench`):

* **accuracy** of the digits CNN: float, int8 (dense scheme), ternary (no pruning) and ternary + PE-wise
  pruning at several tile sparsities, each with WPC (``wpc_mode=target``, the default), with the paper's
  threshold (``wpc_mode=mean``), with WPC after a plain group-lasso warm-up over half the penalty epochs
  (``wpc_warmup=0.5``), with the plain group lasso (``wpc=0``) and without any penalty
  (``lam=0``, magnitude pruning of tiles) — the WPC ablation at equal sparsity (pruning always removes
  round(s*G) tiles per layer; the measured tile sparsity is reported too, since a penalty can zero more).
  Several seeds; mean and spread reported;
* **lambda sweep** (full bench only): WPC vs the plain group lasso at lambda in :data:`LAMBDAS` and each
  sparsity, with the float accuracy after the penalty phase and right after pruning (how much the
  penalty prepared the pruning) — the ablation at each method's best lambda, not only at the default;
* **compression**: every bit the chip stores for the ternary layers and the whole model (first layer
  dense int8), split weights / index (lane descriptors) / other (pass table, bias, requant), and the
  rates vs fp32 and int8 from that total (the compress report's ``stored_bits`` etc.); the weight
  memory alone as a second, labelled rate (``weights_rate_vs_int8``); and, as a *storage figure the
  chip does not hold*, the same ternary weights packed 5 trits per byte (``meta["stats"]["trit5_bits"]``);
* **cycles**: LayerEngine cycles per layer, measured in Amaranth's simulation of the generated RTL and
  required to equal the plan's exact cycle model (:func:`sparsyn.hw.engines.plan_layer`), ternary vs the
  same layer on the dense int8 array (same R x C, packed for it), split into the compute phases
  (LOAD + STREAM, which scale with the stored tiles) and the requant busy time (one output value per
  cycle, independent of the weights), each relative to the unpruned ternary layer;
* **LUTs per PE**: yosys synthesis (iCE40, ECP5; DSPs allowed and forbidden) of a ProcessingElement with the
  ternary datapath (T lanes, and 1 lane) vs an int8 MAC PE (1 lane) vs an int8 PE with T lanes, and of the
  bare datapaths; DSP cells and pre-mapping ``$mul`` cells counted — through the project's one yosys
  driver, :func:`sparsyn.boards.synth.synthesize_component` with ``mapper="abc"`` (see there what is counted).

Every model is packed for one array (:data:`ARRAY`, ``compress --array``); hardware is reached only through
the engine factory :mod:`sparsyn.hw.engines`.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .report import format_table, write_json
from .schedule import ArrayConfig

SPARSITIES = (0.25, 0.5, 0.75)
#: Group-lasso weights of the lambda sweep (full bench): WPC vs the plain group lasso at each lambda.
LAMBDAS = (0.03, 0.1, 0.3, 1.0)
VARIANTS = {  # name -> options on top of the sparsity
    "wpc": {},
    "wpc_mean": {"wpc_mode": "mean"},
    "wpc_warmup": {"wpc_warmup": 0.5},
    "group_lasso": {"wpc": False},
    "no_penalty": {"lam": 0.0},
}

#: The array every model of the bench is packed for (``sparsyn compress --array``).
ARRAY = ArrayConfig(4, 4)


def synth_cells(component, family: str, dsp: bool = True) -> dict:
    """Cell counts of one PE: :func:`sparsyn.boards.synth.synthesize_component` (the project's one yosys
    driver) with the classic-ABC LUT mapping (``mapper="abc"``) every LUT figure of this bench is
    measured with. Keys: ``luts``, ``lut_equiv`` (LUT4 + 2 x CCU2C on ECP5), ``ffs``, ``carries``,
    ``dsps``, ``mul_cells`` ($mul/$macc before mapping), ``cells``, ..."""
    from sparsyn.boards.synth import synthesize_component
    return synthesize_component(component, family, dsp=dsp, mapper="abc")


def pe_components(tile: int = 8) -> dict:
    """The PEs compared, as ``name -> (factory, lanes)``: ternary with T lanes and with 1 lane, the int8 MAC
    PE (1 lane), an int8 PE with T lanes (T multipliers), and the bare datapaths (``ProductUnit`` without the
    PE's registers and partial-sum adder) of the T-lane ternary PE and the int8 MAC."""
    from amaranth.hdl import Module, signed
    from amaranth.lib import data

    from sparsyn.hw.pe import ProcessingElement
    from sparsyn.hw.schemes.base import ProductUnit
    from sparsyn.hw.schemes.dense import DenseProduct
    from sparsyn.hw.schemes.ternary import TernaryProduct
    from sparsyn.sw.schemes import PackedLayer
    from sparsyn.sw.schemes.ternary import TernaryScheme

    class Int8Lanes(ProductUnit):
        """Reference only: sum of T int8 x int8 products (the dense equal-lane PE)."""
        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.product.eq(sum(self.entry[l] * self.x[l] for l in range(self.lanes)))
            return m

    def ternary(t):
        layout = TernaryScheme.entry_layout(PackedLayer("ternary", {"tile": t}, {}))
        return TernaryProduct(layout, t)

    def int8_mac():
        return DenseProduct(data.StructLayout({"weight": signed(8)}), 1, 16)

    return {
        f"ternary T={tile}": (lambda: ProcessingElement(ternary(tile)), tile),
        "ternary T=1": (lambda: ProcessingElement(ternary(1)), 1),
        "int8 MAC (1 lane)": (lambda: ProcessingElement(int8_mac()), 1),
        f"int8 T={tile} lanes": (lambda: ProcessingElement(Int8Lanes(data.ArrayLayout(signed(8), tile), tile,
                                                                     16 + tile.bit_length())), tile),
        f"datapath: ternary T={tile}": (lambda: ternary(tile), tile),
        "datapath: int8 multiplier": (int8_mac, 1),
    }


def lut_table(tile: int = 8, families=("ice40", "ecp5")) -> list[dict]:
    """LUTs (and LUT-equivalents), FFs, carries, DSPs and ``$mul`` cells of each :func:`pe_components` entry,
    with DSPs allowed and forbidden; ternary rows carry their ratios to the int8 counterparts."""
    rows = []
    for fam in families:
        for dsp in (True, False):
            for name, (make, lanes) in pe_components(tile).items():
                r = synth_cells(make(), fam, dsp)
                rows.append({"family": fam, "dsp_allowed": dsp, "pe": name, "lanes": lanes, "luts": r["luts"],
                             "lut_equiv": r["lut_equiv"], "luts_per_lane": r["lut_equiv"] / lanes,
                             "ffs": r["ffs"], "carries": r["carries"],
                             "dsps": r["dsps"], "mul_cells": r["mul_cells"]})
    pairs = {f"ternary T={tile}": ("int8 MAC (1 lane)", f"int8 T={tile} lanes"),
             "ternary T=1": ("int8 MAC (1 lane)", "int8 MAC (1 lane)"),
             f"datapath: ternary T={tile}": ("datapath: int8 multiplier", None)}
    for fam in families:
        for dsp in (True, False):
            sel = {r["pe"]: r for r in rows if r["family"] == fam and r["dsp_allowed"] == dsp}
            for tname, (mac, equal) in pairs.items():
                t, ref = sel[tname], sel[mac]
                t["vs_int8_mac_pe"] = t["lut_equiv"] / max(1, ref["lut_equiv"])
                t["per_lane_vs_int8_mac"] = t["luts_per_lane"] / max(1, ref["luts_per_lane"])
                if equal:
                    t["vs_int8_equal_lanes"] = t["lut_equiv"] / max(1, sel[equal]["lut_equiv"])
    return rows


def _compress(module, data, scheme_name, opts, array: ArrayConfig = ARRAY):
    from .compress import compress_model
    from .schemes import get_scheme
    scheme = get_scheme(scheme_name)(array=array, **opts)
    if hasattr(scheme, "progress"):
        scheme.progress = False
    q, p, r = compress_model(module, scheme, data, progress=False, log=lambda *a, **k: None)
    r["history"] = getattr(scheme, "history", None)  # ternary: per-layer kept groups, WPC threshold, accuracies
    return q, p, r


def _tile_sparsity(report) -> float:
    """Measured fraction of the ternary layers' PE tiles that are not stored (all-zero after ternarization);
    can exceed the target when the penalty zeroed more groups than pruning removes."""
    rows = [r for r in report["layers"] if r["scheme"] == "ternary"]
    return 1 - sum(r["stored_tiles"] for r in rows) / sum(r["groups"] for r in rows)


def _tern_bits(report) -> tuple[int, int]:
    """(bits the chip stores for the ternary layers, their dense weight count N*K)."""
    rows = [r for r in report["layers"] if r["scheme"] == "ternary"]
    return sum(r["stored_bits"] for r in rows), sum(r["n"] * r["k"] for r in rows)


def cycle_table(qmodel, packed, dense_q, dense_packed, array: ArrayConfig | None = None,
                measure: bool = True) -> list[dict]:
    """Per compute layer: LayerEngine cycles vs the same layer on the dense int8 array.

    Both models must be packed for the same array (``array``, when given, must be it: the engines are
    planned through :func:`sparsyn.hw.engines.plan_layer`, which refuses another). ``cycles_model`` is
    the plan's exact cycle count for the layer's input (the first digits test image); with ``measure``
    the engine built from that plan runs in Amaranth's simulator: ``cycles_rtl`` (start to done),
    ``bit_exact`` (vs the golden model) and ``cycles_exact`` (``cycles_rtl == cycles_model``)."""
    from sparsyn.hw.engines import build_engine, plan_layer
    from .array_format import rows_used
    from .data import digits
    from .golden import quantize_input, run_golden

    rows = []
    x0 = quantize_input(digits().test_x[:1], qmodel.input_scale)
    outs = run_golden(qmodel, x0)
    for i, layer in enumerate(qmodel.layers):
        if layer.kind not in ("conv", "linear"):
            continue
        p = packed[layer.name]
        plan = plan_layer(layer, p, array)
        dplan = plan_layer(dense_q.layer(layer.name), dense_packed[layer.name], array)
        xin = (x0 if i == 0 else outs[i - 1])[0].numpy().ravel()
        cyc, dcyc = plan.model, dplan.model
        # compute = LOAD + STREAM phases (scale with the stored tiles); requant = one output value per cycle,
        # independent of the weights (it overlaps the next section; the exposed part is total - compute)
        row = {"layer": layer.name, "scheme": p.scheme, "array": f"{plan.array.rows}x{plan.array.cols}",
               "lanes": plan.array.lanes, "slots": rows_used(p), "passes": cyc["passes"],
               "cycles_model": plan.cycles(xin),
               "compute_cycles": cyc["load"] + cyc["stream"], "requant_cycles": cyc["requant"],
               "utilization_model": cyc["utilization"],
               "dense_int8_passes": dcyc["passes"], "dense_int8_cycles": dplan.cycles(xin),
               "dense_int8_compute": dcyc["load"] + dcyc["stream"]}
        if measure:
            from sparsyn.hw.amaranth_sim import simulate_engine
            y, stats = simulate_engine(build_engine(plan), [xin])
            exact = np.array_equal(np.asarray(y[0]), outs[i][0].numpy().ravel())
            row.update(cycles_rtl=stats[0]["measured"], bit_exact=exact,
                       cycles_exact=stats[0]["measured"] == row["cycles_model"])
        row["speedup_vs_dense"] = row["dense_int8_cycles"] / row.get("cycles_rtl", row["cycles_model"])
        row["compute_speedup_vs_dense"] = row["dense_int8_compute"] / row["compute_cycles"]
        rows.append(row)
    return rows


def run_ternary_bench(quick: bool = False, out=None, array=ARRAY) -> dict:
    """Run every table; prints them and writes JSON (``out`` or work/bench/ternary.json). Returns the dict.
    ``array`` (ArrayConfig or "RxC", default 4x4): the array every model is packed for."""
    import torch
    t0 = time.time()
    array = array if isinstance(array, ArrayConfig) else ArrayConfig.parse(str(array))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small model: one thread is as fast and does not fight the other jobs for cores
    try:
        return _run(quick, out, t0, array)
    finally:
        torch.set_num_threads(threads)


def compression_rows(kept: dict) -> list[dict]:
    """The compression table from the compress reports of ``kept`` ({sparsity: (qmodel, packed, report)}):
    per ternary layer and for the whole model, the bits the chip stores split weights / index / other,
    the rates from that total, the weight memory alone (``weights_rate_vs_int8``), and the trit5 storage
    figure (``trit5_*``: the ternary weights packed 5 trits per byte — NOT what the chip holds; the
    other stored bits unchanged)."""
    rows = []
    for s, (_, _, r) in sorted(kept.items()):
        tern = [lr for lr in r["layers"] if lr["scheme"] == "ternary"]
        for lr in tern:
            dense_w = lr["n"] * lr["k"]
            t5_stored = lr["stored_bits"] - lr["weight_bits"] + lr["trit5_bits"]
            rows.append({"sparsity": s, "layer": lr["layer"], "n": lr["n"], "k": lr["k"],
                         "stored_tiles": lr["stored_tiles"], "groups": lr["groups"],
                         "weight_bits": lr["weight_bits"], "index_bits": lr["index_bits"],
                         "other_bits": lr["other_bits"], "stored_bits": lr["stored_bits"],
                         "index_share": lr["index_bits"] / lr["stored_bits"],
                         "rate_vs_fp32": lr["rate_vs_fp32"], "rate_vs_int8": lr["rate_vs_int8"],
                         "weights_rate_vs_int8": lr["weights_rate_vs_int8"],
                         "trit5_bits": lr["trit5_bits"], "trit5_stored_bits": t5_stored,
                         "trit5_rate_vs_fp32": 32 * dense_w / t5_stored})
        dense_w = sum(lr["n"] * lr["k"] for lr in r["layers"])
        t5_stored = r["stored_bits"] - sum(lr["weight_bits"] - lr["trit5_bits"] for lr in tern)
        rows.append({"sparsity": s, "layer": "MODEL (conv1 int8)", "weight_bits": r["weight_bits"],
                     "index_bits": r["index_bits"], "other_bits": r["other_bits"], "stored_bits": r["stored_bits"],
                     "index_share": r["index_bits"] / r["stored_bits"], "rate_vs_fp32": r["rate_vs_fp32"],
                     "rate_vs_int8": r["rate_vs_int8"], "weights_rate_vs_int8": r["weights_rate_vs_int8"],
                     "trit5_bits": sum(lr["trit5_bits"] for lr in tern), "trit5_stored_bits": t5_stored,
                     "trit5_rate_vs_fp32": 32 * dense_w / t5_stored})
    return rows


COMPRESSION_COLS = ["sparsity", "layer", "stored_tiles", "groups", "weight_bits", "index_bits", "other_bits",
                    "stored_bits", "index_share", "rate_vs_fp32", "rate_vs_int8", "weights_rate_vs_int8",
                    "trit5_bits", "trit5_rate_vs_fp32"]
COMPRESSION_TITLE = ("compression per layer: bits the chip stores = weights + index (lane descriptors) + other "
                     "(pass table, bias, requant); rate_* from that total; weights_rate_vs_int8 = weight memory "
                     "only; trit5_* = storage figure with the ternary weights packed 5 trits/byte "
                     "(the chip does NOT hold this format)")


def _run(quick, out, t0, array: ArrayConfig):
    from .data import digits
    from .model_zoo import default_model
    from .paths import work_dir
    from .train import accuracy

    data = digits()
    module = default_model(progress=False)
    seeds = (0,) if quick else (0, 1, 2)
    sparsities = (0.5,) if quick else SPARSITIES
    doc = {"quick": quick, "seeds": list(seeds), "array": f"{array.rows}x{array.cols}",
           "float_accuracy": accuracy(module, data.test_x, data.test_y)}
    dense_q, dense_p, dense_r = _compress(module, data, "dense", {}, array)
    doc["int8_accuracy"] = dense_r["accuracy"]["int"]

    acc_rows, runs, kept = [], {}, {}
    for seed in seeds:
        q, p, r = _compress(module, data, "ternary", {"sparsity": 0.0, "seed": seed}, array)
        kept.setdefault(0.0, (q, p, r))
        runs.setdefault(("ternary", 0.0), []).append(r)
    for s in sparsities:
        for variant, opts in VARIANTS.items():
            for seed in seeds:
                q, p, r = _compress(module, data, "ternary", {"sparsity": s, "seed": seed, **opts}, array)
                runs.setdefault((variant, s), []).append(r)
                if variant == "wpc":
                    kept.setdefault(s, (q, p, r))  # first seed's default model: compression and cycle tables
    acc_rows.append({"model": "float", "sparsity": None, "int_acc": doc["float_accuracy"]})
    acc_rows.append({"model": "int8 (dense)", "sparsity": 0.0, "int_acc": doc["int8_accuracy"],
                     "rate_vs_fp32": dense_r["rate_vs_fp32"], "rate_vs_int8": dense_r["rate_vs_int8"]})
    for (variant, s), reports in runs.items():
        accs = [r["accuracy"]["int"] for r in reports]
        tb, tw = _tern_bits(reports[0])
        acc_rows.append({
            "model": "ternary" if variant == "ternary" else f"ternary+PE-wise {variant}", "sparsity": s,
            "int_acc": statistics.mean(accs), "acc_min": min(accs), "acc_max": max(accs), "runs": len(accs),
            "tile_sparsity": statistics.mean(_tile_sparsity(r) for r in reports),
            "loss_vs_float": doc["float_accuracy"] - statistics.mean(accs),
            "float_ternary_acc": statistics.mean(r["accuracy"]["compressed_float"] for r in reports),
            "rate_vs_fp32": reports[0]["rate_vs_fp32"], "rate_vs_int8": reports[0]["rate_vs_int8"],
            "tern_layers_rate_vs_fp32": 32 * tw / tb, "tern_layers_rate_vs_int8": 8 * tw / tb})
    doc["accuracy"] = acc_rows
    ablation = []
    for s in sparsities:
        row = {"sparsity": s}
        for variant in VARIANTS:
            accs = [r["accuracy"]["int"] for r in runs[(variant, s)]]
            row[variant] = statistics.mean(accs)
            row[f"{variant}_per_seed"] = accs
            row[f"{variant}_tiles"] = statistics.mean(_tile_sparsity(r) for r in runs[(variant, s)])
        row["wpc_minus_group_lasso"] = row["wpc"] - row["group_lasso"]
        row["wpc_mean_minus_group_lasso"] = row["wpc_mean"] - row["group_lasso"]
        ablation.append(row)
    doc["wpc_ablation"] = ablation
    doc["wpc_history"] = {f"{v}@{s}": [r.get("history") for r in runs[(v, s)]] for v, s in runs}

    # lambda sweep (full bench): is WPC better than the plain group lasso at its best lambda, and how robust?
    from .schemes.ternary import TernaryScheme
    default_lam = TernaryScheme.options["lam"].default
    sweep = []
    for s in () if quick else sparsities:
        for lam in LAMBDAS:
            row = {"sparsity": s, "lam": lam}
            for variant in ("wpc", "wpc_warmup", "group_lasso"):
                if lam == default_lam:
                    reports = runs[(variant, s)]
                else:
                    reports = [_compress(module, data, "ternary", {"sparsity": s, "seed": seed, "lam": lam,
                                                                   **VARIANTS[variant]}, array)[2]
                               for seed in seeds]
                accs = [r["accuracy"]["int"] for r in reports]
                row[variant] = statistics.mean(accs)
                row[f"{variant}_min"], row[f"{variant}_max"] = min(accs), max(accs)
                row[f"{variant}_tiles"] = statistics.mean(_tile_sparsity(r) for r in reports)
                row[f"{variant}_after_penalty"] = statistics.mean(r["history"]["accuracy"]["after_penalty"]
                                                                  for r in reports)
                row[f"{variant}_after_prune"] = statistics.mean(r["history"]["accuracy"]["after_prune"]
                                                                for r in reports)
            row["wpc_minus_group_lasso"] = row["wpc"] - row["group_lasso"]
            row["warmup_minus_group_lasso"] = row["wpc_warmup"] - row["group_lasso"]
            sweep.append(row)
    doc["lambda_sweep"] = sweep

    # compression: the first seed's WPC model at each sparsity (stored bits from its compress report)
    comp_rows = compression_rows(kept)
    doc["compression"] = comp_rows

    # RTL cycles: the same models vs the dense int8 array
    cyc = {s: cycle_table(q, p, dense_q, dense_p, array, measure=True) for s, (q, p, _) in sorted(kept.items())}
    doc["cycles"] = [{"sparsity": s, **row} for s, rows in cyc.items() for row in rows]
    unpruned = {r["layer"]: r for r in cyc[0.0]}
    for r in doc["cycles"]:  # vs the unpruned ternary layer: slots kept, compute and total cycles
        u = unpruned[r["layer"]]
        r["slots_vs_unpruned"] = r["slots"] / u["slots"]
        r["compute_vs_unpruned"] = r["compute_cycles"] / u["compute_cycles"]
        r["total_vs_unpruned"] = r.get("cycles_rtl", r["cycles_model"]) / u.get("cycles_rtl", u["cycles_model"])

    doc["luts_per_pe"] = lut_table(8, ("ice40",) if quick else ("ice40", "ecp5"))
    doc["seconds"] = round(time.time() - t0, 1)

    print(format_table(acc_rows, ["model", "sparsity", "tile_sparsity", "int_acc", "acc_min", "acc_max", "runs",
                                  "loss_vs_float",
                                  "float_ternary_acc", "rate_vs_fp32",
                                  "rate_vs_int8", "tern_layers_rate_vs_fp32", "tern_layers_rate_vs_int8"],
                       title="digits CNN: integer top-1 accuracy (%) and compression (rates from every bit the chip "
                             "stores: weights + index + tables + constants)"))
    print()
    print(format_table(ablation, ["sparsity", *VARIANTS, *(f"{v}_tiles" for v in VARIANTS), "wpc_minus_group_lasso",
                                  "wpc_mean_minus_group_lasso"],
                       title="WPC ablation: integer accuracy (%) at equal tile sparsity, mean over seeds"))
    print()
    if sweep:
        print(format_table(sweep, ["sparsity", "lam", "wpc", "wpc_min", "wpc_max", "wpc_tiles", "wpc_warmup",
                                   "wpc_warmup_min", "wpc_warmup_max", "wpc_warmup_tiles", "group_lasso",
                                   "group_lasso_min", "group_lasso_max", "group_lasso_tiles", "wpc_minus_group_lasso",
                                   "warmup_minus_group_lasso", "wpc_after_prune", "wpc_warmup_after_prune",
                                   "group_lasso_after_penalty", "group_lasso_after_prune"],
                           title="lambda sweep: integer accuracy (%) after fine-tuning, mean/min/max over seeds; "
                                 "float accuracy after the penalty phase and right after pruning"))
        print()
    print(format_table(comp_rows, COMPRESSION_COLS, title=COMPRESSION_TITLE))
    print()
    print(format_table(doc["cycles"], ["sparsity", "layer", "scheme", "slots", "passes", "cycles_rtl", "cycles_model",
                                       "cycles_exact", "bit_exact", "compute_cycles", "requant_cycles", "slots_vs_unpruned",
                                       "compute_vs_unpruned", "total_vs_unpruned", "dense_int8_cycles",
                                       "dense_int8_compute", "speedup_vs_dense", "compute_speedup_vs_dense"],
                       title=f"LayerEngine cycles per image on a {array.rows}x{array.cols} array "
                             "(RTL = Amaranth simulation of the generated engine; cycles_exact: RTL == model)"))
    print()
    print(format_table(doc["luts_per_pe"], ["family", "dsp_allowed", "pe", "lanes", "luts", "lut_equiv",
                                            "luts_per_lane", "ffs", "carries", "dsps", "mul_cells", "vs_int8_mac_pe",
                                            "per_lane_vs_int8_mac", "vs_int8_equal_lanes"],
                       title="LUTs per PE (registers + datapath; yosys via boards.synth, classic ABC LUT mapping; "
                             "lut_equiv = LUT4 + 2 x CCU2C on ECP5)"))
    path = Path(out) if out else work_dir() / "bench" / "ternary.json"
    write_json(path, doc)
    print(f"\nfigures: {path}  ({doc['seconds']} s)")
    return doc
