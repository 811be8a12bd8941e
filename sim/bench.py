"""Simulator benchmark: Verilator vs Icarus on the largest bench layer, RTL cycles vs the analytic model.

Every figure is measured in the same run and ratios are computed from those measurements:

* **simulators** — the largest layer of the bench set (the default digits model's layers and the
  regression's random layers, by modelled cycles) is built from scratch for each simulator in a fresh
  build folder (``build_s``, the compile alone) and then run on a batch of images (``run_s``: the
  simulator process incl. start-up; ``test_s``: the cocotb test alone). Simulated cycles/s =
  simulated clock cycles / ``test_s``. Ratios: Verilator over Icarus speed-up of run and test time,
  of cycles/s, and the build-time ratio.
* **cycle model** — every layer of the default model (dense) on one simulator: measured RTL cycles,
  :func:`sparsyn.hw.cycles.layer_cycles`, which must be equal (:func:`run_engine` fails otherwise), and
  PE utilization.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from sparsyn.sw.schedule import ArrayConfig

from .check import model_inputs, run_engine
from .tools import SIMULATORS, have_simulator

#: The regression's random layers that the benchmark also considers for "largest layer":
#: (name, kind, cin, h, w, cout, kernel, stride, padding, relu), as in tests/test_sim_engine.py.
BENCH_LAYERS = [
    ("odd3x3p1", "conv", 3, 7, 7, 5, 3, 1, 1, True),
    ("k5x5p1s2", "conv", 2, 9, 9, 6, 5, 2, 1, False),
    ("linear37x11", "linear", 37, 1, 1, 11, 1, 1, 0, False),
]


def _default_dense(array: ArrayConfig):
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    from sparsyn.sw.schemes import get_scheme
    qmodel, packed, _ = compress_model(default_model(progress=False), get_scheme("dense")(array=array), digits(),
                                       progress=False, log=lambda *a, **k: None)
    return qmodel, packed


def _candidates(qmodel, packed, images: int, array: ArrayConfig):
    """(layer, packed, inputs, modelled cycles) of every bench layer (planned only: no engine is built)."""
    from sparsyn.hw.engines import plan_layer
    from sparsyn.sw.testing import pack_layer, random_input, random_quant_layer
    x, outs = model_inputs(qmodel, images)
    out = []
    for i, layer in enumerate(qmodel.layers):
        if layer.kind in ("conv", "linear"):
            out.append((layer, packed[layer.name], x if i == 0 else outs[i - 1]))
    for name, kind, cin, h, w, cout, k, s, p, relu in BENCH_LAYERS:
        rng = np.random.default_rng(sum(map(ord, name)))
        layer = random_quant_layer(rng, kind, cin, h, w, cout, kernel=k, stride=s, padding=p, relu=relu, name=name)
        out.append((layer, pack_layer(layer, array=array), random_input(rng, layer, batch=images)))
    return [(layer, p, xin, plan_layer(layer, p, array).model["total"]) for layer, p, xin in out]


def run_sim_bench(array: ArrayConfig = ArrayConfig(4, 4), out=None, quick: bool = False,
                  images: int | None = None, progress: bool = True) -> dict:
    """Measure and print the simulator table and the cycle-model table; returns them as a JSON-able dict.

    ``images``: batch size of the simulator comparison (default 32, ``quick``: 8). ``out``: also write
    the dict as JSON there.
    """
    from sparsyn.sw.paths import work_dir
    from sparsyn.sw.report import format_table, write_json
    if not isinstance(array, ArrayConfig):
        array = ArrayConfig.parse(str(array))
    images = images or (8 if quick else 32)
    say = print if progress else (lambda *a, **k: None)
    sims = [s for s in SIMULATORS if have_simulator(s) is None]
    missing = {s: have_simulator(s) for s in SIMULATORS if have_simulator(s)}
    doc = {"array": str(array), "images": images, "simulators": {}, "missing": missing}
    if not sims:
        from sparsyn.sw.errors import SparsynError
        raise SparsynError("no RTL simulator available; " + "; ".join(missing.values()))

    say("== preparing the default model (dense) and the bench layers")
    qmodel, packed = _default_dense(array)
    cands = _candidates(qmodel, packed, images, array)
    layer, p, xin, model_total = max(cands, key=lambda c: c[3])
    doc["largest_layer"] = {"name": layer.name, "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
                            "cycles_model": model_total}
    root = work_dir() / "bench-sim" / f"builds-{time.strftime('%Y%m%d-%H%M%S')}"
    sim_rows = []
    try:
        for sim in sims:
            say(f"== {sim}: fresh build + {images} images of layer {layer.name} ({model_total} cycles each)")
            r = run_engine(layer, p, array, sim, xin, build_root=root / sim,
                           test_dir=root / sim / "run")
            row = {"simulator": sim, "layer": layer.name, "images": images, "build_s": r["build_s"],
                   "run_s": r["wall_s"], "test_s": r["test_s"], "sim_cycles": r["sim_cycles"],
                   "cycles_per_s": r["sim_cycles"] / r["test_s"] if r["test_s"] else None,
                   "bit_exact": r["bit_exact"]}
            doc["simulators"][sim] = row
            sim_rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if "icarus" in doc["simulators"] and "verilator" in doc["simulators"]:
        ic, vl = doc["simulators"]["icarus"], doc["simulators"]["verilator"]
        doc["ratios"] = {
            "verilator_speedup_run": ic["run_s"] / vl["run_s"],
            "verilator_speedup_test": ic["test_s"] / vl["test_s"] if vl["test_s"] else None,
            "cycles_per_s_verilator_over_icarus": (vl["cycles_per_s"] / ic["cycles_per_s"]
                                                   if ic["cycles_per_s"] else None),
            "build_time_verilator_over_icarus": vl["build_s"] / ic["build_s"] if ic["build_s"] else None,
        }

    sim = "verilator" if "verilator" in sims else sims[0]
    say(f"== cycle model: every default-model layer on {sim}")
    x, outs = model_inputs(qmodel, 1)
    cyc_rows = []
    for i, lay in enumerate(qmodel.layers):
        if lay.kind not in ("conv", "linear"):
            continue
        r = run_engine(lay, packed[lay.name], array, sim, x if i == 0 else outs[i - 1])
        cyc_rows.append({"layer": lay.name, "cycles_measured": r["cycles_measured"], "cycles_model": r["cycles_model"],
                         "cycles_exact": r["cycles_exact"],
                         "utilization": r["utilization"], "bit_exact": r["bit_exact"]})
    doc["cycle_model"] = {"simulator": sim, "layers": cyc_rows}

    say("")
    say(format_table(sim_rows, ["simulator", "layer", "images", "build_s", "run_s", "test_s", "sim_cycles",
                                "cycles_per_s", "bit_exact"],
                     title=f"simulators — largest bench layer {layer.name}, array {array}"))
    if "ratios" in doc:
        say("")
        say(format_table([{k: v for k, v in doc["ratios"].items()}], title="ratios (same run)"))
    for s, why in missing.items():
        say(f"({s} not measured: {why})")
    say("")
    say(format_table(cyc_rows, title=f"RTL cycles vs analytic model ({sim}, array {array}, 1 image)"))
    if out:
        write_json(Path(out), doc)
    return doc
