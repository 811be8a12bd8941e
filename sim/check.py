"""RTL check of a compressed model: every conv/linear layer's LayerEngine against the golden model.

:func:`run_engine` is the one path from a layer to a measured, checked RTL run (used by the pytest
regression, :func:`rtl_check`, ``sparsyn sim`` and the simulator benchmark): it elaborates the
:class:`~sparsyn.hw.engine.LayerEngine`, builds it (cached) for Icarus or Verilator, computes the
golden outputs with :func:`sparsyn.sw.golden.run_layer`, runs :mod:`sparsyn.sim.benches.bench_engine`
and compares the measured cycle count with the analytic model :func:`sparsyn.hw.cycles.layer_cycles`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer

from .runner import BenchFailure, build, run_bench
from .tools import check_simulator

ENGINE_BENCH = "sparsyn.sim.benches.bench_engine"
#: Target agreement between measured RTL cycles and the analytic model (issue 3, item 6).
CYCLE_TOLERANCE = 0.05

COLUMNS = ["layer", "scheme", "cycles_measured", "cycles_model", "model_error_%", "utilization",
           "bit_exact", "wall_s"]


def _as_batch(layer: QuantLayer, images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, dtype=np.int64))
    return x.reshape(-1, *layer.in_shape)


def golden_outputs(layer: QuantLayer, images) -> np.ndarray:
    """The golden model's outputs of ``layer`` for a batch of int8 inputs: (B, N*Ho*Wo) int64."""
    from sparsyn.sw.golden import run_layer
    batch = _as_batch(layer, images)
    return run_layer(layer, batch).reshape(batch.shape[0], -1).numpy()


def _mismatch_text(layer: QuantLayer, expected: np.ndarray, result: dict) -> str | None:
    from sparsyn.sw.golden import first_mismatch
    outputs = result.get("outputs")
    if not outputs:
        return None
    got = np.asarray(outputs, dtype=np.int64)
    if got.size != expected.size:
        return f"layer {layer.name}: {got.size} outputs received, {expected.size} expected"
    m = first_mismatch([layer.name], [expected.reshape(-1, *layer.out_shape)], [got.reshape(-1, *layer.out_shape)])
    return None if m is None else str(m)


def make_engine(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig):
    """The LayerEngine of one layer (raises NotImplementedError if the scheme has no hardware PE)."""
    from sparsyn.hw.engine import LayerEngine
    return LayerEngine(layer, packed, array)


def run_engine(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig, simulator: str, images, *,
               test_dir: Path | None = None, in_pauses=None, out_pauses=None, log=None,
               engine=None, build_root: Path | None = None) -> dict:
    """Run ``images`` (B int8 input tensors of ``layer``) through the layer's RTL in ``simulator``.

    Returns ``{layer, scheme, simulator, cycles_measured (first image), cycles_all, cycles_model,
    model_error_% , utilization (measured), utilization_model, useful_macs, bit_exact: True,
    outputs_checked, sim_cycles, build_s, build_cached, wall_s (simulator process), test_s (the cocotb
    test alone, without start-up)}``. ``build_root`` overrides the build cache folder. Raises
    :class:`~sparsyn.sim.runner.BenchFailure` (message: layer/image/channel/position/expected/actual
    and the waveform path) when any output differs from the golden model.
    """
    from sparsyn.hw.cycles import useful_macs, utilization
    from sparsyn.hw.generate import module_name
    check_simulator(simulator)
    batch = _as_batch(layer, images)
    expected = golden_outputs(layer, batch)
    engine = engine if engine is not None else make_engine(layer, packed, array)
    model = engine.model
    bld = build(engine, simulator, module_name(layer.name), log=log, root=build_root)
    params = {"layer": {"name": layer.name, "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape)},
              "images": batch.reshape(batch.shape[0], -1).tolist(), "expected": expected.tolist(),
              "timeout_cycles": 2 * model["total"] + 1000, "in_pauses": in_pauses, "out_pauses": out_pauses}
    res = run_bench(bld, ENGINE_BENCH, params, test_dir=test_dir,
                    describe=lambda r: _mismatch_text(layer, expected, r))
    measured = res["cycles"][0]
    arr = engine.array
    macs = useful_macs(layer)
    return {"layer": layer.name, "scheme": packed.scheme, "simulator": simulator,
            "array": f"{arr.rows}x{arr.cols}", "cycles_measured": measured, "cycles_all": res["cycles"],
            "cycles_model": model["total"],
            "model_error_%": 100.0 * (measured - model["total"]) / model["total"],
            "utilization": utilization(macs, arr.rows, arr.cols, measured, arr.lanes),
            "utilization_model": model["utilization"], "useful_macs": macs, "bit_exact": True,
            "mismatch": None, "outputs_checked": res["outputs_checked"], "sim_cycles": res["sim_cycles"],
            "build_s": bld.build_s, "build_cached": bld.cached, "wall_s": res["wall_s"],
            "test_s": sum(c["real_s"] for c in res["tests"]),
            "test_dir": res["test_dir"]}


def model_inputs(model, images: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``images`` digits test images quantized with the model's input scale, and every layer's golden output."""
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input, run_golden
    data = digits()
    if not 1 <= images <= len(data.test_x):
        raise SparsynError(f"--images {images} is out of range; choose 1..{len(data.test_x)}")
    x = quantize_input(data.test_x[:images], model.input_scale)
    return x, run_golden(model, x)


def rtl_check(manifest_path, simulator: str = "verilator", array: ArrayConfig = ArrayConfig(4, 4),
              images: int = 1, out_dir=None, progress: bool = True) -> list[dict]:
    """Check every conv/linear layer of a manifest in RTL against the golden model, layer by layer.

    Each layer is fed the golden model's input for that layer (from :func:`sparsyn.sw.golden.run_golden`
    on ``images`` quantized digits test images), so layers are checked independently. Returns one row
    per compute layer: ``layer, scheme, cycles_measured, cycles_model, utilization, bit_exact,
    mismatch (str or None), wall_s`` (+ model error, build time, simulator).
    Raises NotImplementedError when a layer's scheme has no hardware PE.
    """
    from sparsyn.sw.manifest import load_manifest
    from sparsyn.sw.paths import work_dir
    check_simulator(simulator)
    if not isinstance(array, ArrayConfig):
        array = ArrayConfig.parse(str(array))
    model, packed, _doc = load_manifest(Path(manifest_path))
    x, outs = model_inputs(model, images)
    base = Path(out_dir) if out_dir is not None else work_dir() / "sim-check" / f"{simulator}-{array.rows}x{array.cols}"
    rows = []
    log = (lambda msg: print(f"   {msg}", flush=True)) if progress else None
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, QuantLayer):
            continue
        layer_in = x if i == 0 else outs[i - 1]
        if progress:
            print(f"   {layer.name}: {layer.kind} {layer.in_shape} -> {layer.out_shape} on {simulator}", flush=True)
        t0 = time.perf_counter()
        engine = make_engine(layer, packed[layer.name], array)
        try:
            row = run_engine(layer, packed[layer.name], array, simulator, layer_in,
                             test_dir=base / layer.name, log=log, engine=engine)
        except BenchFailure as err:
            model_cycles = engine.model["total"]
            measured = (err.results.get("cycles") or [None])[0]
            row = {"layer": layer.name, "scheme": packed[layer.name].scheme, "simulator": simulator,
                   "cycles_measured": measured, "cycles_model": model_cycles,
                   "model_error_%": (100.0 * (measured - model_cycles) / model_cycles) if measured else None,
                   "utilization": None, "bit_exact": False, "mismatch": str(err)}
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The ``sparsyn sim`` table: layer, cycles measured/modelled, utilization, bit-exact yes/no."""
    from sparsyn.sw.report import format_table as table
    return table(rows, COLUMNS)
