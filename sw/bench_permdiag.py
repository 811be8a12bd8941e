"""``sparsyn bench --scheme permdiag``: PermDNN permuted-diagonal FC layers (papers.md §4) — size, accuracy,
RTL cycles vs input density, LUT/FF/DSP per PE and the anchor figure, all measured in the run.

Tables (:func:`run_permdiag_bench`; each printed as soon as it is measured, with progress lines):

* **size** for p = 2, 4, 8, 16: every FC layer of the digits CNN (64->10; p = 16 does not fit its 10 outputs
  and is refused, as the scheme refuses it), of a wider MLP 64->256->256->10 and of a synthetic 640->128
  layer (the MLPerf Tiny anomaly-detection autoencoder's first layer; random weights projected, no training):
  weight / offset (index) / constant bits of the ROMs, ``structure_rate_vs_int8`` = N*K*8 / (weights +
  offsets) — p up to the offset bits and any padding / idle lanes — and the rates of every stored bit vs int8
  and fp32;
* **accuracy vs p** (digits, integer top-1 of the compress report): the digits CNN's FC and the wider MLP (all
  three FC layers; the last, 256->10, at min(p, 8)), ``init=project`` (project the trained matrix, fine-tune)
  and ``init=scratch`` (random offsets, train from scratch), against the float and dense int8 models;
* **cycles vs input density** (0.1 .. 1.0) on the 640->128 layer at p = 8: RTL cycles of the permdiag engine
  (cocotb, Verilator when available, else Icarus; required to equal the exact per-image model) with 4 PEs and
  with 16 PEs (as many multipliers as the 4x4 array), the PE utilization (MACs with a nonzero weight and a
  nonzero input / (lanes x cycles)), against the dense int8 4x4 array running the same layer (data-independent;
  its exact cycle model, and in the full run also its RTL) — plotted;
* **anchor** (the figure that replaces EIE): cycles per nonzero input and index bits of an unstructured-sparse
  engine with an index at the same density (:func:`unstructured_model`: EIE-like, stated there) vs permdiag,
  and the compression of ``tight`` at the same density (density = 1/p) on the wider MLP;
* **LUT/FF/DSP per PE**: yosys (classic ABC mapping, :func:`sparsyn.sw.bench_ternary.synth_cells`) of the
  permdiag PE (p = 8, M = 1 and 2, its accumulator memory included) and the int8 MAC PE of the shared array,
  iCE40 and ECP5 (quick: iCE40 only), DSPs allowed and forbidden; and the whole 640->128 engine per PE.

Hardware is reached through :mod:`sparsyn.hw.engines`; figures go to work/bench/permdiag.json (+ .png).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .bench_common import BenchLog, one_torch_thread, show_table
from .report import write_json
from .schedule import ArrayConfig

#: The array the dense layers (and the dense comparison) are packed for.
ARRAY = ArrayConfig(4, 4)
PS, QUICK_PS = (2, 4, 8, 16), (4, 8)
MLP_WIDTHS = (64, 256, 256, 10)
#: The wide FC layer of the cycles table (N, K) and its p.
WIDE, WIDE_P = (128, 640), 8
DENSITIES, QUICK_DENSITIES = tuple(round(0.1 * i, 1) for i in range(1, 11)), (0.1, 0.5, 1.0)
#: PE counts of the cycles table: 4, and 16 (the multipliers of the 4x4 array).
WIDE_PES = (4, 16)
#: Relative row index width of the EIE-like unstructured engine (EIE: 4 bits).
EIE_INDEX_BITS = 4


def _quiet(*a, **k):
    pass


def mlp(widths=MLP_WIDTHS):
    """Flatten -> fc1 ReLU -> fc2 ReLU -> fc3 (the wider MLP; digits 8x8 = 64 inputs)."""
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.fc1, self.fc2, self.fc3 = (nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

        def forward(self, x):
            x = torch.relu(self.fc1(self.flatten(x)))
            return self.fc3(torch.relu(self.fc2(x)))

    import torch
    return MLP()


def trained_mlp(data, epochs: int, seed: int = 0, progress: bool = False):
    import torch

    from .train import train
    torch.manual_seed(seed)
    model = mlp()
    train(model, data, epochs=epochs, lr=3e-3, seed=seed, desc="train MLP 64-256-256-10", progress=progress)
    model.eval()
    return model


def _compress(module, data, scheme_name, opts, array: ArrayConfig = ARRAY):
    from .bench_ternary import _compress as compress
    return compress(module, data, scheme_name, opts, array)


# ---- size ------------------------------------------------------------------------------------------------
SIZE_COLS = ["model", "layer", "p", "n", "k", "pes", "lanes", "slots", "idle_lanes", "pad_rows", "pad_cols",
             "weight_bits", "offset_bits", "constant_bits", "stored_bits", "structure_rate_vs_int8",
             "rate_vs_int8", "rate_vs_fp32"]


def size_row(model: str, layer, packed) -> dict:
    """The stored bits of one permdiag layer, by ROM kind, and its rates."""
    kinds = packed.bits_by_kind()
    m, st = packed.meta, packed.meta["stats"]
    dense = layer.n * layer.k
    return {"model": model, "layer": layer.name, "p": m["p"], "n": layer.n, "k": layer.k, "pes": m["pes"],
            "lanes": m["lanes"], "slots": m["slots"], "idle_lanes": st["idle_lanes"], "pad_rows": st["pad_rows"],
            "pad_cols": st["pad_cols"], "weight_bits": kinds["weights"], "offset_bits": kinds["index"],
            "constant_bits": kinds["constants"], "stored_bits": packed.rom_bits,
            "structure_rate_vs_int8": 8 * dense / (kinds["weights"] + kinds["index"]),
            "rate_vs_int8": 8 * dense / packed.rom_bits, "rate_vs_fp32": 32 * dense / packed.rom_bits}


def wide_layer(p: int, seed: int = 0, n: int = WIDE[0], k: int = WIDE[1]):
    """The synthetic wide FC layer: Gaussian weights projected onto p x p permuted diagonals, int8 per channel,
    requantization fitted (no training)."""
    from .perm_diag import project
    from .schemes.base import quantize_int8_per_channel
    from .testing import fit_requant, random_quant_layer
    rng = np.random.default_rng(seed)
    layer = random_quant_layer(rng, "linear", k, 1, 1, n, name=f"fc{k}x{n}", scheme="permdiag")
    w, _ = project(rng.normal(size=(n, k)), p)
    layer.weight = quantize_int8_per_channel(w)[0]
    return fit_requant(rng, layer)


# ---- accuracy --------------------------------------------------------------------------------------------
ACC_COLS = ["model", "p", "init", "epochs", "layer_p", "fc_nonzero_pct", "structured_acc", "trained_acc", "int_acc",
            "float_acc", "int8_acc", "loss_vs_int8", "stored_bits", "rate_vs_int8", "rate_vs_fp32"]


def _fc_nonzero_pct(report) -> float:
    rows = [r for r in report["layers"] if r["scheme"] == "permdiag"]
    return 100.0 * sum(r["nonzero"] for r in rows) / sum(r["n"] * r["k"] for r in rows)


# ---- cycles vs density -----------------------------------------------------------------------------------
CYCLE_COLS = ["engine", "multipliers", "density", "nonzero_inputs", "cycles_rtl", "cycles_model", "cycles_exact",
              "bit_exact", "cycles_per_nonzero", "utilization", "dense_cycles", "speedup_vs_dense"]


def density_images(rng, layer, densities) -> np.ndarray:
    """One int8 input per density: each element nonzero with that probability (nonzero values uniform)."""
    out = []
    for d in densities:
        x = rng.integers(-128, 128, size=layer.in_shape)
        x[x == 0] = 1
        x[rng.random(size=layer.in_shape) >= d] = 0
        out.append(x)
    return np.stack(out).astype(np.int64)


def cycle_rows(layer, images, densities, simulator: str, pes_list=WIDE_PES, measure_dense: bool = False,
               test_dir: Path | None = None, log=_quiet) -> tuple[list[dict], dict]:
    """RTL cycles of the permdiag engine per image (one build and one simulation per PE count), and the dense
    int8 array on the same layer (exact model; RTL too with ``measure_dense``)."""
    from sparsyn.hw.engines import build_engine, plan_layer
    from sparsyn.hw.plan import EngineLimits
    from sparsyn.sim.check import run_engine
    from .schemes import get_scheme
    limits = EngineLimits(weight_depth=1 << 16, act_elements=1 << 14, out_elements=1 << 14)
    dense = get_scheme("dense")(array=ARRAY).pack(layer)
    dplan = plan_layer(layer, dense, ARRAY, limits)
    dense_info = {"array": f"{ARRAY.rows}x{ARRAY.cols}", "multipliers": ARRAY.rows * ARRAY.cols,
                  "cycles_model": dplan.cycles(), "passes": dplan.model["passes"],
                  "utilization": layer.n * layer.k / (ARRAY.rows * ARRAY.cols * dplan.cycles())}
    if measure_dense:
        t = time.time()
        res = run_engine(layer, dense, ARRAY, simulator, images[:1], engine=build_engine(dplan),
                         test_dir=(test_dir / "dense") if test_dir else None)
        dense_info.update(cycles_rtl=res["cycles_measured"], cycles_exact=res["cycles_exact"],
                          bit_exact=res["bit_exact"])
        log(f"dense int8 {ARRAY.rows}x{ARRAY.cols} array on {layer.n}x{layer.k}: {res['cycles_measured']} cycles in "
            f"RTL ({time.time() - t:.0f} s)")
    rows = []
    for pes in pes_list:
        t = time.time()
        packed = get_scheme("permdiag")(p=WIDE_P, pes=pes).pack(layer)
        plan = plan_layer(layer, packed, None, limits)
        res = run_engine(layer, packed, None, simulator, images, engine=build_engine(plan),
                         test_dir=(test_dir / f"pes{pes}") if test_dir else None)
        lanes = packed.meta["lanes"]
        for d, x, cyc, model in zip(densities, images, res["cycles_all"], res["cycles_model_all"]):
            z = int(np.count_nonzero(x))
            rows.append({"engine": f"permdiag p={WIDE_P} P={pes}", "multipliers": lanes, "density": d,
                         "nonzero_inputs": z, "cycles_rtl": cyc, "cycles_model": model, "cycles_exact": cyc == model,
                         "bit_exact": res["bit_exact"], "cycles_per_nonzero": (cyc - plan.model["fixed"]) / z if z else None,
                         "utilization": plan.useful_macs(x) / (lanes * cyc),
                         "dense_cycles": dense_info.get("cycles_rtl", dense_info["cycles_model"]),
                         "speedup_vs_dense": dense_info.get("cycles_rtl", dense_info["cycles_model"]) / cyc})
        log(f"permdiag P={pes} on {layer.n}x{layer.k}: {len(images)} images in RTL ({simulator}, "
            f"{time.time() - t:.0f} s), cycles {res['cycles_all'][0]} .. {res['cycles_all'][-1]}")
    return rows, dense_info


def plot_cycles(rows: list[dict], dense: dict, unstructured: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for eng in dict.fromkeys(r["engine"] for r in rows):
        sel = [r for r in rows if r["engine"] == eng]
        ax.plot([r["density"] for r in sel], [r["cycles_rtl"] for r in sel], "o-", label=f"{eng} (RTL)")
    for u in unstructured:
        ax.plot([r["density"] for r in u["rows"]], [r["cycles"] for r in u["rows"]], "x--",
                label=f"unstructured + index, {u['lanes']} lanes (model, same drain)")
    ax.axhline(dense.get("cycles_rtl", dense["cycles_model"]), color="k", ls=":",
               label=f"dense int8 {dense['array']} array")
    ax.set_xlabel("input density (fraction of nonzero inputs)")
    ax.set_ylabel("cycles per image")
    ax.set_yscale("log")
    ax.set_title(f"{WIDE[1]}->{WIDE[0]} FC layer, p={WIDE_P}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- anchor: an unstructured-sparse engine with an index -----------------------------------------------------
def unstructured_model(w: np.ndarray, lanes: int, index_bits: int = EIE_INDEX_BITS) -> dict:
    """The EIE-like unstructured-sparse FC engine this bench compares with, as a model (not built):

    * rows interleaved over ``lanes`` PEs (row r -> PE r mod U), each PE storing its nonzeros column by column
      (CSC) as (int8 weight, ``index_bits`` relative row index); a gap of 2**index_bits rows or more within a
      column costs a padding (zero) entry, as in EIE;
    * per column and PE a pointer to its first entry, ceil(log2(entries + 1)) bits (EIE: 16);
    * for each nonzero input x_j every PE processes its entries of column j, one per cycle, and the next input
      starts when the slowest PE is done (no activation FIFOs: EIE's FIFOs recover part of this imbalance, so
      this is an upper bound on its cycles) -> cycles(x) = sum over nonzero x_j of max over PEs of entries(j).

    Returns the per-column cycle counts (``column_cycles``), the index and weight bits, entries and padding."""
    n, k = w.shape
    step = 1 << index_bits
    column_cycles = np.zeros(k, dtype=np.int64)
    entries, padding = 0, 0
    per_pe = np.zeros(lanes, dtype=np.int64)
    for j in range(k):
        worst = 0
        for q in range(lanes):
            rows = np.flatnonzero(w[q::lanes, j])        # this PE's local rows with a nonzero in column j
            e, last = 0, -1
            for r in rows:
                gap = r - last - 1
                pad = gap // step
                e += 1 + pad
                padding += pad
                last = r
            per_pe[q] += e
            entries += e
            worst = max(worst, e)
        column_cycles[j] = worst
    ptr_bits = int(max(1, int(per_pe.max() + 1).bit_length()))
    return {"column_cycles": column_cycles, "entries": int(entries), "padding": int(padding),
            "weight_bits": 8 * int(entries), "index_bits": index_bits * int(entries) + (k + 1) * lanes * ptr_bits,
            "nonzero": int(np.count_nonzero(w))}


ANCHOR_COLS = ["engine", "lanes", "density", "nonzero", "stored_entries", "weight_bits", "index_bits",
               "index_bits_per_weight", "cycles_per_nonzero_input", "balance", "rate_vs_int8", "note"]


def anchor_rows(layer, lanes_list=WIDE_PES, p: int = WIDE_P, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """permdiag vs the unstructured model at the same density 1/p on the wide layer's shape: cycles per nonzero
    input (permdiag: exactly its slots T, every PE busy; unstructured: the mean over inputs of the slowest PE),
    index bits per stored weight and the rate vs int8 of weights + index. Also returns the unstructured model's
    cycles per image of the cycles table's densities (for the plot)."""
    from .prune import keep_largest
    from .schemes import get_scheme
    import torch
    rng = np.random.default_rng(seed)
    n, k = layer.n, layer.k
    w_float = rng.normal(size=(n, k))
    mask = keep_largest(torch.as_tensor(w_float), int(np.count_nonzero(layer.weight))).numpy().astype(bool)
    w_uns = np.where(mask, rng.integers(1, 128, size=(n, k)), 0)
    rows, curves = [], []
    for lanes in lanes_list:
        packed = get_scheme("permdiag")(p=p, pes=lanes).pack(layer)
        kinds = packed.bits_by_kind()
        t = packed.meta["slots"]
        rows.append({"engine": f"permdiag p={p}", "lanes": lanes, "density": 1 / p,
                     "nonzero": int(np.count_nonzero(layer.weight)), "stored_entries": kinds["weights"] // 8,
                     "weight_bits": kinds["weights"], "index_bits": kinds["index"],
                     "index_bits_per_weight": kinds["index"] / (kinds["weights"] / 8),
                     "cycles_per_nonzero_input": float(t), "balance": (n / p) / (lanes * t),
                     "rate_vs_int8": 8 * n * k / (kinds["weights"] + kinds["index"]),
                     "note": "exact (RTL-checked): T = ceil(BR/U) slots per nonzero input, no index memory"})
        um = unstructured_model(w_uns, lanes)
        cpn = float(um["column_cycles"].mean())
        rows.append({"engine": "unstructured + index (EIE-like model)", "lanes": lanes,
                     "density": um["nonzero"] / (n * k), "nonzero": um["nonzero"], "stored_entries": um["entries"],
                     "weight_bits": um["weight_bits"], "index_bits": um["index_bits"],
                     "index_bits_per_weight": um["index_bits"] / um["entries"], "cycles_per_nonzero_input": cpn,
                     "balance": (um["nonzero"] / k) / (lanes * cpn),
                     "rate_vs_int8": 8 * n * k / (um["weight_bits"] + um["index_bits"]),
                     "note": f"model: CSC per PE, {EIE_INDEX_BITS}-bit relative index ({um['padding']} padding "
                             "entries), per-column sync (upper bound)"})
        curves.append({"lanes": lanes, "column_cycles": um["column_cycles"]})
    return rows, curves


TIGHT_COLS = ["scheme", "density", "options", "fc_nonzero_pct", "int_acc", "fc_weight_bits", "fc_index_bits",
              "fc_other_bits", "fc_stored_bits", "fc_rate_vs_int8", "fc_rate_vs_fp32"]


def _fc_bits(report) -> dict:
    rows = report["layers"]
    dense = sum(r["n"] * r["k"] for r in rows)
    out = {"fc_weight_bits": sum(r["weight_bits"] for r in rows), "fc_index_bits": sum(r["index_bits"] for r in rows),
           "fc_other_bits": sum(r["other_bits"] for r in rows), "fc_stored_bits": sum(r["stored_bits"] for r in rows)}
    out.update(fc_rate_vs_int8=8 * dense / out["fc_stored_bits"], fc_rate_vs_fp32=32 * dense / out["fc_stored_bits"])
    return out


# ---- LUT / FF / DSP per PE ---------------------------------------------------------------------------------
LUT_COLS = ["family", "dsp_allowed", "unit", "multipliers", "luts", "lut_equiv", "ffs", "carries", "dsps", "brams",
            "per_multiplier_lut_equiv", "vs_int8_mac_pe"]


def pe_components(p: int = WIDE_P, depth: int = 4 * WIDE_P) -> dict:
    """``name -> (factory, multipliers)``: the permdiag PE (M = 1, 2; accumulator memory of ``depth`` words) and
    the shared array's int8 MAC PE."""
    from amaranth.hdl import signed
    from amaranth.lib import data

    from sparsyn.hw.pe import ProcessingElement
    from sparsyn.hw.permdiag_pe import PermDiagPE
    from sparsyn.hw.schemes.dense import DenseProduct
    from .schemes.permdiag import offset_bits
    return {
        f"permdiag PE p={p} M=1 (acc {depth} words)": (lambda: PermDiagPE(p, 1, depth, offset_bits(p)), 1),
        f"permdiag PE p={p} M=2 (acc {depth} words)": (lambda: PermDiagPE(p, 2, depth, offset_bits(p)), 2),
        "int8 MAC PE (shared array, 1 lane)": (
            lambda: ProcessingElement(DenseProduct(data.StructLayout({"weight": signed(8)}), 1, 16)), 1),
    }


def lut_rows(families=("ice40", "ecp5"), engine_layer=None, log=_quiet) -> list[dict]:
    """Cells of each :func:`pe_components` entry per family, DSPs allowed and forbidden; with ``engine_layer``
    also the whole permdiag engine of that layer (4 PEs; ``unit`` says per PE = total / 4)."""
    from .bench_ternary import synth_cells
    rows = []
    comps = pe_components()
    for fam in families:
        for dsp in (True, False):
            for name, (make, mults) in comps.items():
                r = synth_cells(make(), fam, dsp)
                rows.append({"family": fam, "dsp_allowed": dsp, "unit": name, "multipliers": mults,
                             "luts": r["luts"], "lut_equiv": r["lut_equiv"], "ffs": r["ffs"], "carries": r["carries"],
                             "dsps": r["dsps"], "brams": r.get("brams", 0),
                             "per_multiplier_lut_equiv": r["lut_equiv"] / mults})
            sel = [r for r in rows if r["family"] == fam and r["dsp_allowed"] == dsp]
            ref = sel[-1]["lut_equiv"]
            for r in sel:
                r["vs_int8_mac_pe"] = r["lut_equiv"] / ref if ref else None
            log(f"synthesized {len(comps)} PEs for {fam}, DSPs {'allowed' if dsp else 'forbidden'}")
        if engine_layer is not None:
            from sparsyn.hw.engines import layer_engine
            from .schemes import get_scheme
            packed = get_scheme("permdiag")(p=WIDE_P, pes=4).pack(engine_layer)
            r = synth_cells(layer_engine(engine_layer, packed), fam, True)
            pes = packed.meta["pes"]
            rows.append({"family": fam, "dsp_allowed": True, "unit": f"whole engine {engine_layer.k}->{engine_layer.n} "
                         f"p={WIDE_P}, {pes} PEs: per PE (total / {pes})", "multipliers": 1,
                         "luts": r["luts"] / pes, "lut_equiv": r["lut_equiv"] / pes, "ffs": r["ffs"] / pes,
                         "carries": r["carries"] / pes, "dsps": r["dsps"] / pes, "brams": r.get("brams", 0) / pes,
                         "per_multiplier_lut_equiv": r["lut_equiv"] / pes})
            log(f"synthesized the whole {engine_layer.k}->{engine_layer.n} engine for {fam}")
    return rows


# ---- the bench ---------------------------------------------------------------------------------------------
def run_permdiag_bench(quick: bool = False, out=None, array=ARRAY) -> dict:
    """Run every table; prints them and writes JSON (``out`` or work/bench/permdiag.json) and the cycles plot.
    ``array``: the array the dense layers are packed for (default 4x4)."""
    t0 = time.time()
    array = array if isinstance(array, ArrayConfig) else ArrayConfig.parse(str(array))
    with one_torch_thread():
        return _run(quick, out, t0, array)


def _run(quick, out, t0, array: ArrayConfig):
    from sparsyn.sim.tools import have_simulator
    from .data import digits
    from .errors import SparsynError
    from .model_zoo import default_model
    from .paths import work_dir
    from .train import accuracy

    log = BenchLog("permdiag", t0)
    data = digits()
    ps = QUICK_PS if quick else PS
    epochs, scratch_epochs, mlp_epochs = (4, 15, 20) if quick else (10, 40, 40)
    base = Path(out).with_suffix("") if out else work_dir() / "bench" / "permdiag"
    doc = {"quick": quick, "array": f"{array.rows}x{array.cols}", "ps": list(ps)}

    models = {"digits CNN": default_model(progress=False)}
    t = time.time()
    models["MLP 64-256-256-10"] = trained_mlp(data, mlp_epochs)
    log(f"trained the MLP {MLP_WIDTHS} ({mlp_epochs} epochs, {time.time() - t:.1f} s)")
    baselines = {}
    for name, module in models.items():
        _, _, r = _compress(module, data, "dense", {}, array)
        baselines[name] = {"float_acc": accuracy(module, data.test_x, data.test_y), "int8_acc": r["accuracy"]["int"],
                           "int8_stored_bits": r["stored_bits"]}
        log(f"{name}: float {baselines[name]['float_acc']:.2f} %, dense int8 {r['accuracy']['int']:.2f} %")
    doc["baselines"] = baselines

    # 1 + 2. size and accuracy from the same compress runs
    size, acc, refused = [], [], []
    for name, module in models.items():
        for p in ps:
            opts = {"p": p}
            if name.startswith("MLP") and p > 8:
                opts["layer_p"] = f"fc3={min(p, 8)}"    # the 256->10 layer
            for init, ep in (("project", epochs), ("scratch", scratch_epochs)):
                t = time.time()
                try:
                    q, packed, r = _compress(module, data, "permdiag", {**opts, "init": init, "epochs": ep}, array)
                except SparsynError as err:
                    refused.append({"model": name, "p": p, "init": init, "refused": str(err)})
                    log(f"{name} p={p} {init}: refused ({err})")
                    break
                h = r["history"] or {}
                acc.append({"model": name, "p": p, "init": init, "epochs": ep, "layer_p": h.get("layers"),
                            "fc_nonzero_pct": _fc_nonzero_pct(r), "structured_acc": h.get("accuracy_structured"),
                            "trained_acc": h.get("accuracy_trained"), "int_acc": r["accuracy"]["int"],
                            **baselines[name], "loss_vs_int8": baselines[name]["int8_acc"] - r["accuracy"]["int"],
                            "stored_bits": r["stored_bits"], "rate_vs_int8": r["rate_vs_int8"],
                            "rate_vs_fp32": r["rate_vs_fp32"]})
                if init == "project":
                    size += [size_row(name, q.layer(n), pk) for n, pk in packed.items() if pk.scheme == "permdiag"]
                log(f"{name} p={p} {init}: int acc {r['accuracy']['int']:.2f} % ({time.time() - t:.1f} s)")
    from .schemes import get_scheme
    for p in ps:
        layer = wide_layer(p)
        size.append(size_row(f"synthetic {WIDE[1]}->{WIDE[0]}", layer, get_scheme("permdiag")(p=p, pes=4).pack(layer)))
    doc["size"], doc["accuracy"], doc["refused"] = size, acc, refused
    show_table(log, "size", size, SIZE_COLS,
          "size: bits of every ROM of each permdiag layer (weights = T*U*K int8; offsets = one ceil(log2 p)-bit k_l "
          "per block, the only index; constants = bias + requant); structure_rate_vs_int8 = N*K*8 / (weights + "
          "offsets) = p up to the offset bits, padded rows and idle lanes; rate_* = vs every stored bit"
          + "".join(f"\nrefused: {r['model']} p={r['p']}: {r['refused']}" for r in refused))
    show_table(log, "accuracy", acc, ACC_COLS,
          f"accuracy vs p (digits test set, integer top-1 %): project = projection of the trained matrix + {epochs} "
          f"fine-tune epochs; scratch = random offsets, {scratch_epochs} epochs from a fresh init; structured_acc = "
          "right after projection / at init; the MLP's 256->10 layer at min(p, 8); other layers dense int8")

    # 3. cycles vs density (RTL)
    simulator = "verilator" if have_simulator("verilator") is None else "icarus"
    densities = QUICK_DENSITIES if quick else DENSITIES
    layer = wide_layer(WIDE_P)
    images = density_images(np.random.default_rng(1), layer, densities)
    cyc, dense = cycle_rows(layer, images, densities, simulator, measure_dense=not quick,
                            test_dir=base.parent / "permdiag-rtl", log=log)
    anchor, curves = anchor_rows(layer)
    from sparsyn.hw.permdiag_plan import permdiag_cycles
    fixed = permdiag_cycles(0, 1, layer.n * layer.pixels)      # the same drain / requant / output plumbing
    for c in curves:
        c["rows"] = [{"density": d, "cycles": fixed + int(c["column_cycles"][np.flatnonzero(x.reshape(-1))].sum())}
                     for d, x in zip(densities, images)]
    doc["cycles"], doc["dense"] = cyc, dense
    doc["unstructured_cycles"] = [{"lanes": c["lanes"], "rows": c["rows"], "fixed": fixed} for c in curves]
    show_table(log, "cycles", cyc, CYCLE_COLS,
          f"cycles per image vs input density, {WIDE[1]}->{WIDE[0]} FC at p={WIDE_P} ({simulator} RTL == exact "
          f"model per image); dense = int8 on the {dense['array']} array ({dense['multipliers']} multipliers, "
          f"{'RTL' if 'cycles_rtl' in dense else 'exact model'}: {dense.get('cycles_rtl', dense['cycles_model'])} "
          f"cycles, any input; utilization {dense['utilization']:.3f}: one output pixel per pass leaves the "
          "weight-stationary array mostly loading); cycles_per_nonzero = (cycles - fixed drain) / nonzeros; utilization = MACs with a "
          "nonzero weight and input / (multipliers x cycles)")
    plot = plot_cycles(cyc, dense, curves, base.with_suffix(".png"))
    doc["plot"] = str(plot)
    log(f"plot: {plot}")

    # 4. anchor
    doc["anchor"] = anchor
    show_table(log, "anchor", anchor, ANCHOR_COLS,
          f"anchor (replaces EIE): {WIDE[1]}->{WIDE[0]} at density 1/{WIDE_P}; permdiag vs an unstructured-sparse "
          "engine with an index (EIE-like model, see unstructured_model): cycles per nonzero input, load balance "
          "(useful MACs per nonzero input / (lanes x cycles)), index bits, rate vs int8 of weights + index")
    tight = []
    module = models["MLP 64-256-256-10"]
    for p in ((4,) if quick else (4, 8)):
        for scheme, opts in (("permdiag", {"p": p, "epochs": epochs}),
                             ("tight", {"density": 1 / p, "dense_first": 0, "prune_steps": 2 if quick else 3,
                                        "finetune_epochs": 3 if quick else 8,
                                        "anneal_steps": 50 if quick else 400})):
            t = time.time()
            _, _, r = _compress(module, data, scheme, opts, array)
            tight.append({"scheme": scheme, "density": 1 / p, "options": opts, "fc_nonzero_pct": _fc_nonzero_pct_any(r),
                          "int_acc": r["accuracy"]["int"], **_fc_bits(r)})
            log(f"MLP {scheme} at density 1/{p}: int acc {r['accuracy']['int']:.2f} % ({time.time() - t:.1f} s)")
    doc["vs_tight"] = tight
    show_table(log, "vs tight", tight, TIGHT_COLS,
          f"compression vs tight at the same density on the MLP (all three FC layers; tight on the {array.rows}x"
          f"{array.cols} array, dense_first=0; fc_* = every stored bit of the FC layers)")

    # 5. LUT / FF / DSP per PE
    luts = lut_rows(("ice40",) if quick else ("ice40", "ecp5"), engine_layer=None if quick else layer, log=log)
    doc["luts_per_pe"] = luts
    show_table(log, "LUTs per PE", luts, LUT_COLS,
          "LUT/FF/DSP per PE (yosys via boards.synth, classic ABC; lut_equiv = LUT4 + 2 x CCU2C on ECP5); the permdiag "
          "PE includes its accumulator memory (brams); vs_int8_mac_pe = lut_equiv / the shared array's int8 MAC PE")

    doc["seconds"] = round(time.time() - t0, 1)
    path = Path(out) if out else base.with_suffix(".json")
    write_json(path, doc)
    print(f"figures: {path}  ({doc['seconds']} s)")
    return doc


def _fc_nonzero_pct_any(report) -> float:
    rows = report["layers"]
    return 100.0 * sum(r["nonzero"] for r in rows) / sum(r["n"] * r["k"] for r in rows)
