"""RTL check of a compressed model: every conv/linear layer's engine and every max-pool / average-pool / add
layer's stream unit against the golden model.

:func:`run_engine` is the one path from a layer to a measured, checked RTL run (used by the pytest
regression, :func:`rtl_check`, ``sparsyn sim`` and the simulator benchmark): it plans and builds the
layer's engine through the one factory (:mod:`sparsyn.hw.engines`), builds it (cached) for Icarus or
Verilator, computes the golden outputs with :func:`sparsyn.sw.golden.run_layer`, runs
:mod:`sparsyn.sim.benches.bench_engine` and requires the measured cycle count of **every image** to
equal the engine's exact cycle model (no tolerance). :func:`rtl_check` feeds the reference vectors
stored in the manifest and checks the RTL against them as well as against the golden model.
:func:`run_stream` is the same for a layer without weights: its stream unit (:mod:`sparsyn.hw.stream_units`)
driven by :mod:`sparsyn.sim.benches.bench_stream`, every image's cycles equal to the unit's exact cycle model.
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
STREAM_BENCH = "sparsyn.sim.benches.bench_stream"

COLUMNS = ["layer", "scheme", "cycles_measured", "cycles_model", "cycles_exact", "utilization",
           "bit_exact", "reference_exact", "wall_s"]


class CycleMismatch(AssertionError):
    """Measured RTL cycles differ from the exact cycle model (layer, image, measured, model)."""


def _as_batch(layer: QuantLayer, images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, dtype=np.int64))
    return x.reshape(-1, *layer.in_shape)


def golden_outputs(layer: QuantLayer, images) -> np.ndarray:
    """The golden model's outputs of ``layer`` for a batch of int8 inputs: (B, N*Ho*Wo) int64."""
    from sparsyn.sw.golden import run_layer
    batch = _as_batch(layer, images)
    return run_layer(layer, batch).reshape(batch.shape[0], -1).numpy()


def _mismatch_text(layer, expected: np.ndarray, result: dict) -> str | None:
    from sparsyn.sw.golden import first_mismatch
    outputs = result.get("outputs")
    if not outputs:
        return None
    got = np.asarray(outputs, dtype=np.int64)
    if got.size != expected.size:
        return f"layer {layer.name}: {got.size} outputs received, {expected.size} expected"
    m = first_mismatch([layer.name], [expected.reshape(-1, *layer.out_shape)], [got.reshape(-1, *layer.out_shape)])
    return None if m is None else str(m)


def make_engine(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig | None = None, limits=None):
    """The engine of one layer, through the one factory (``array``, when given, must be the packed one;
    ``limits``: :class:`~sparsyn.hw.plan.EngineLimits`, default the engine's)."""
    from sparsyn.hw.engines import layer_engine
    return layer_engine(layer, packed, array) if limits is None else layer_engine(layer, packed, array, limits)


#: Buffer limits for simulating a layer larger than the default ones (a board build still checks its memories).
SIM_LIMITS = dict(act_elements=1 << 22, acc_words=1 << 20, weight_depth=1 << 22, out_elements=1 << 22)


def sim_engine(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig | None = None, log=None):
    """:func:`make_engine` with the default limits, or — for a layer larger than they allow (e.g. a 640-input
    Linear at 2x2) — with :data:`SIM_LIMITS`, saying so: the RTL check is about the numbers and the cycles; what
    fits a board's memories is ``sparsyn build``'s fit check. Returns ``(engine, note or None)``."""
    from sparsyn.hw.plan import EngineLimits
    try:
        return make_engine(layer, packed, array), None
    except SparsynError as err:
        if "does not fit" not in str(err):
            raise
        note = f"{err} — simulated with larger buffers"
        if log is not None:
            log(note)
        return make_engine(layer, packed, array, EngineLimits(**SIM_LIMITS)), note


def sim_stream_unit(layer, log=None):
    """:func:`sparsyn.hw.stream_units.stream_unit` with the default buffer, or — for a pooling layer whose input
    exceeds it — with :data:`SIM_LIMITS`' activation buffer, saying so (as :func:`sim_engine`).
    Returns ``(unit, note or None)``."""
    from sparsyn.hw.stream_units import stream_unit
    try:
        return stream_unit(layer), None
    except SparsynError as err:
        if "exceeds the buffer" not in str(err):
            raise
        note = f"{err} — simulated with a larger buffer"
        if log is not None:
            log(note)
        return stream_unit(layer, SIM_LIMITS["act_elements"]), note


def check_cycles(layer_name: str, measured: list[int], images, plan) -> list[int]:
    """Every image's measured cycles must equal ``plan.cycles(image)``; returns the model's values."""
    model = [plan.cycles(np.asarray(x).reshape(-1)) for x in images]
    for i, (got, want) in enumerate(zip(measured, model)):
        if got != want:
            raise CycleMismatch(f"layer {layer_name}: image {i} took {got} cycles in RTL but the cycle model "
                                f"says {want} ({got - want:+d}); the model must be exact")
    return model


def run_engine(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig | None, simulator: str, images, *,
               test_dir: Path | None = None, in_pauses=None, out_pauses=None, log=None,
               engine=None, build_root: Path | None = None, expected=None) -> dict:
    """Run ``images`` (B int8 input tensors of ``layer``) through the layer's RTL in ``simulator``.

    Returns ``{layer, scheme, simulator, cycles_measured (first image), cycles_all, cycles_model,
    cycles_model_all, cycles_exact: True, utilization (measured), utilization_model, useful_macs,
    bit_exact: True, outputs_checked, sim_cycles, build_s, build_cached, wall_s (simulator process),
    test_s (the cocotb test alone, without start-up)}``. ``build_root`` overrides the build cache folder;
    ``expected`` (B, N*Ho*Wo) overrides the golden outputs (e.g. stored reference vectors). Raises
    :class:`~sparsyn.sim.runner.BenchFailure` (message: layer/image/channel/position/expected/actual
    and the waveform path) when any output differs, and :class:`CycleMismatch` when any image's cycle
    count differs from the model.
    """
    from sparsyn.hw.cycles import useful_macs, utilization
    from sparsyn.hw.generate import module_name
    check_simulator(simulator)
    batch = _as_batch(layer, images)
    expected = golden_outputs(layer, batch) if expected is None else np.asarray(expected, dtype=np.int64).reshape(
        batch.shape[0], -1)
    engine = engine if engine is not None else make_engine(layer, packed, array)
    model = engine.model
    bld = build(engine, simulator, module_name(layer.name), log=log, root=build_root)
    params = {"layer": {"name": layer.name, "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape)},
              "images": batch.reshape(batch.shape[0], -1).tolist(), "expected": expected.tolist(),
              "timeout_cycles": 2 * max(engine.plan.cycles(np.asarray(x).reshape(-1)) for x in batch) + 1000, "in_pauses": in_pauses, "out_pauses": out_pauses}
    res = run_bench(bld, ENGINE_BENCH, params, test_dir=test_dir,
                    describe=lambda r: _mismatch_text(layer, expected, r))
    flat = batch.reshape(batch.shape[0], -1).numpy()
    model_all = check_cycles(layer.name, res["cycles"], flat, engine.plan)
    measured = res["cycles"][0]
    arr = engine.array
    # an engine that skips zero inputs counts the MACs of this image (nonzero weight x nonzero input)
    per_image = getattr(engine.plan, "useful_macs", None)
    macs = per_image(flat[0]) if per_image is not None else useful_macs(layer)
    return {"layer": layer.name, "scheme": packed.scheme, "simulator": simulator,
            "array": f"{arr.rows}x{arr.cols}", "cycles_measured": measured, "cycles_all": res["cycles"],
            "cycles_model": model_all[0], "cycles_model_all": model_all, "cycles_exact": True,
            "utilization": utilization(macs, arr.rows, arr.cols, measured, model.get("pe_macs", arr.lanes)),
            "utilization_model": model["utilization"], "useful_macs": macs, "bit_exact": True,
            "mismatch": None, "outputs_checked": res["outputs_checked"], "sim_cycles": res["sim_cycles"],
            "build_s": bld.build_s, "build_cached": bld.cached, "wall_s": res["wall_s"],
            "test_s": sum(c["real_s"] for c in res["tests"]),
            "test_dir": res["test_dir"]}


def run_stream(layer, simulator: str, inputs, *, expected=None, test_dir: Path | None = None, in_pauses=None,
               out_pauses=None, settings: dict | None = None, unit=None, log=None,
               build_root: Path | None = None) -> dict:
    """Run a batch through the stream unit of a max-pool / average-pool / add ``layer`` in ``simulator``.

    ``inputs``: the tensors the layer reads, one per input stream (an add: ``a`` then ``b``), each ``(B, C, H, W)``
    (or flat per image); ``expected`` (B, C*Ho*Wo) overrides the golden outputs (e.g. stored reference vectors).
    ``in_pauses`` / ``out_pauses``: valid gaps / back-pressure (see :mod:`sparsyn.sim.benches.bench_stream`);
    ``settings``: constant inputs (``{"layer_index": k}`` of a shared unit, then given as ``unit``, a
    :class:`~sparsyn.hw.stream_units.StreamUnit`; default the layer's own unit).

    Returns a row like :func:`run_engine`'s (``scheme`` is the layer's kind; ``utilization`` None: no PEs):
    ``cycles_measured`` (first image) / ``cycles_all`` from each image's first input handshake to its last output
    handshake, ``cycles_model`` / ``cycles_model_all`` the unit's exact model. With steady streams (no pauses)
    every image's cycles must equal the model (:class:`CycleMismatch` otherwise); with pauses the model does not
    apply and ``cycles_exact`` is None. Raises :class:`~sparsyn.sim.runner.BenchFailure` (layer, image, channel,
    position, expected, actual and the waveform path) when any output differs.
    """
    from sparsyn.hw.generate import module_name
    from sparsyn.hw.stream_units import stream_unit
    from sparsyn.sw.golden import run_layer
    check_simulator(simulator)
    su = unit if unit is not None else stream_unit(layer)
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    if len(inputs) != len(su.inputs):
        raise ValueError(f"layer {layer.name} reads {len(su.inputs)} tensors, {len(inputs)} given")
    batches = [torch.as_tensor(np.asarray(t, dtype=np.int64)).reshape(-1, *layer.in_shape) for t in inputs]
    n_img = batches[0].shape[0]
    if expected is None:
        expected = run_layer(layer, *batches).reshape(n_img, -1).numpy()
    expected = np.asarray(expected, dtype=np.int64).reshape(n_img, -1)
    bld = build(su.unit, simulator, module_name(layer.name), log=log, root=build_root)
    params = {"name": layer.name, "images": n_img, "expected": expected.tolist(),
              "inputs": {port: b.reshape(-1).tolist() for port, b in zip(su.inputs, batches)},
              "set": settings, "in_pauses": in_pauses, "out_pauses": out_pauses,
              "timeout_cycles": 2 * su.cycles + 1000}
    res = run_bench(bld, STREAM_BENCH, params, test_dir=test_dir,
                    describe=lambda r: _mismatch_text(layer, expected, r))
    steady = not in_pauses and not out_pauses
    model_all = [su.cycles] * n_img
    if steady:
        for i, got in enumerate(res["cycles"]):
            if got != su.cycles:
                raise CycleMismatch(f"layer {layer.name}: image {i} took {got} cycles in RTL but the cycle model "
                                    f"says {su.cycles} ({got - su.cycles:+d}); the model must be exact")
    return {"layer": layer.name, "scheme": layer.kind, "simulator": simulator,
            "cycles_measured": res["cycles"][0], "cycles_all": res["cycles"],
            "cycles_model": su.cycles, "cycles_model_all": model_all, "cycles_exact": True if steady else None,
            "utilization": None, "bit_exact": True, "mismatch": None, "outputs_checked": res["outputs_checked"],
            "sim_cycles": res["sim_cycles"], "build_s": bld.build_s, "build_cached": bld.cached,
            "wall_s": res["wall_s"], "test_s": sum(c["real_s"] for c in res["tests"]), "test_dir": res["test_dir"]}


def compressed_default(scheme, images: int = 2):
    """The default digits model compressed with ``scheme`` (a Scheme object; quiet) and ``images`` test images
    through its golden model: ``(qmodel, packed, x, outs)`` for :func:`run_model_layers`."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    if hasattr(scheme, "progress"):
        scheme.progress = False
    qmodel, packed, _ = compress_model(default_model(progress=False), scheme, digits(), progress=False,
                                       log=lambda *a, **k: None)
    x, outs = model_inputs(qmodel, images=images)
    return qmodel, packed, x, outs


def run_model_layers(compressed, array: ArrayConfig, simulator: str, test_dir: Path) -> list[dict]:
    """:func:`run_engine` of every conv/linear layer of ``compressed`` (:func:`compressed_default`), each fed the
    golden output of the layer it reads; the rows, in layer order."""
    from sparsyn.sw.golden import layer_inputs
    qmodel, packed, x, outs = compressed
    rows = []
    for i, layer in enumerate(qmodel.layers):
        if layer.kind in ("conv", "linear"):
            layer_in = layer_inputs(qmodel, i, x, outs)[0]
            rows.append(run_engine(layer, packed[layer.name], array, simulator, layer_in,
                                   test_dir=Path(test_dir) / layer.name))
    return rows


def run_sequenced(model, packed: dict, array: ArrayConfig | None, simulator: str, images, *,
                  test_dir: Path | None = None, log=None, build_root: Path | None = None) -> dict:
    """The whole model on the sequenced engine (one shared datapath) in ``simulator``: every logit of every image
    vs the golden model, every image's cycles vs the exact cycle model. Returns ``{model, simulator, engine,
    cycles_measured (per image), cycles_model, bit_exact, cycles_exact, outputs_checked, build_s, wall_s}``;
    raises :class:`BenchFailure` (image / logit / expected / actual and the waveform path) or
    :class:`CycleMismatch`."""
    from sparsyn.hw.sequenced_engine import SequencedEngine, plan_sequenced
    from sparsyn.sw.golden import run_golden
    check_simulator(simulator)
    plan = plan_sequenced(model, packed, array)
    engine = SequencedEngine(plan)
    batch = torch.as_tensor(np.asarray(images), dtype=torch.int64).reshape(-1, *model.input_shape)
    expected = run_golden(model, batch)[-1].reshape(batch.shape[0], -1).numpy()
    flat = batch.reshape(batch.shape[0], -1).numpy()
    model_all = [int(plan.cycles(x)) for x in flat]
    bld = build(engine, simulator, f"model_{model.name}".replace("-", "_"), log=log, root=build_root)
    out_shape = [int(expected.shape[1]), 1, 1]
    params = {"layer": {"name": model.name, "in_shape": list(model.input_shape), "out_shape": out_shape},
              "images": flat.tolist(), "expected": expected.tolist(), "timeout_cycles": 2 * max(model_all) + 1000}

    def describe(res):
        got = np.asarray(res.get("outputs") or [], dtype=np.int64)
        for i in range(min(len(got), len(expected))):
            bad = np.nonzero(got[i] != expected[i])[0]
            if len(bad):
                j = int(bad[0])
                return (f"model {model.name} ({simulator}): image {i}, output {model.layers[-1].name} element {j}: "
                        f"expected {expected[i][j]}, got {got[i][j]}")
        return None

    res = run_bench(bld, ENGINE_BENCH, params, test_dir=test_dir, describe=describe)
    for i, (measured, want) in enumerate(zip(res["cycles"], model_all)):
        if measured != want:
            raise CycleMismatch(f"model {model.name} ({simulator}): image {i} took {measured} cycles, the cycle model "
                                f"says {want}")
    return {"model": model.name, "simulator": simulator, "engine": "sequenced", "cycles_measured": res["cycles"],
            "cycles_model": model_all, "bit_exact": True, "cycles_exact": True,
            "outputs_checked": res["outputs_checked"], "build_s": bld.build_s, "build_cached": bld.cached,
            "wall_s": res["wall_s"]}


def model_inputs(model, images: int = 1, data=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``images`` test images of ``data`` (default: the digits) quantized with the model's input scale, and every
    layer's golden output."""
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input, run_golden
    data = data if data is not None else digits()
    if not 1 <= images <= len(data.test_x):
        raise SparsynError(f"--images {images} is out of range; choose 1..{len(data.test_x)}")
    x = quantize_input(data.test_x[:images], model.input_scale)
    return x, run_golden(model, x)


def rtl_check(manifest_path, simulator: str = "verilator", array: ArrayConfig | None = None,
              images: int | None = None, out_dir=None, progress: bool = True) -> list[dict]:
    """Check every layer of a manifest that has hardware in RTL, layer by layer, against the golden model
    decoded from its ROM files **and** against the reference vectors stored at compress time.

    The manifest is refused first when its golden model no longer reproduces its reference vectors.
    Each layer is fed the reference tensors it reads (the stored outputs of the layers it names, or of the layer
    before it), so layers are checked independently; with ``images`` more than stored, further test images of the
    data the manifest records (the digits, a zoo model's synthetic data, or the ``--data`` file when unchanged)
    are checked against the golden model only. Returns one row per conv/linear layer and per max-pool /
    average-pool / add layer (see :func:`check_layers`). ``array`` (None: the manifest's) must be the array the
    manifest was packed for.
    """
    from sparsyn.sw.manifest import check_reference, load_manifest, load_reference, resolve_array
    from sparsyn.sw.paths import work_dir
    check_simulator(simulator)
    if images is not None and images < 1:
        raise SparsynError(f"--images {images} is out of range; choose 1 or more (the first ones are the "
                           "manifest's reference images)")
    model, packed, doc = load_manifest(Path(manifest_path))
    array = resolve_array(doc, array)
    check_reference(manifest_path, model, doc)
    x_ref, ref = load_reference(manifest_path, doc)
    n_ref = x_ref.shape[0]
    images = n_ref if images is None else images
    x = torch.as_tensor(x_ref[:images], dtype=torch.int64)
    outs = [torch.as_tensor(ref[l.name][:images], dtype=torch.int64) for l in model.layers]
    if images > n_ref:                          # more test images of the data the manifest records
        from sparsyn.sw.data import recorded_data
        x, outs = model_inputs(model, images, recorded_data(doc.get("data")))
    base = Path(out_dir) if out_dir is not None else work_dir() / "sim-check" / f"{simulator}-{array.rows}x{array.cols}"
    return check_layers(model, packed, array, simulator, x, outs, base, reference_images=min(images, n_ref),
                        progress=progress)


def check_layers(model, packed: dict, array: ArrayConfig | None, simulator: str, x, outs, base: Path, *,
                 reference_images: int | None = None, progress: bool = False) -> list[dict]:
    """The layer-by-layer RTL check of a model: every conv/linear layer on its engine (:func:`run_engine`), every
    max-pool / average-pool / add layer on its stream unit (:func:`run_stream`; flatten layers have no hardware
    and no row), each fed the tensors it reads (:func:`sparsyn.sw.golden.layer_inputs` of ``x`` and ``outs``)
    and checked against ``outs[i]`` (the reference outputs: the golden model's, or a manifest's stored ones).

    Returns one row per checked layer: ``layer, scheme`` (a stream unit's: its kind, e.g. ``"maxpool"``),
    ``cycles_measured, cycles_model, cycles_exact, utilization`` (None for a stream unit), ``bit_exact,
    reference_exact, mismatch`` (None, or the one-line failure: layer, image, channel, position, expected,
    actual), ``wall_s`` (+ build time, simulator); ``reference_exact`` and ``reference_images`` when
    ``reference_images`` is given. Test folders go under ``base/<layer>``.
    """
    from sparsyn.hw.stream_units import has_stream_unit
    from sparsyn.sw.golden import layer_inputs
    rows = []
    log = (lambda msg: print(f"   {msg}", flush=True)) if progress else None
    for i, layer in enumerate(model.layers):
        compute = isinstance(layer, QuantLayer)
        if not (compute or has_stream_unit(layer)):
            continue
        layer_in = layer_inputs(model, i, x, outs)
        expected = outs[i].reshape(outs[i].shape[0], -1)
        if progress:
            print(f"   {layer.name}: {layer.kind} {layer.in_shape} -> {layer.out_shape} on {simulator}", flush=True)
        t0 = time.perf_counter()
        note = None
        if compute:
            unit, note = sim_engine(layer, packed[layer.name], array, log=log)
            scheme, model_total = packed[layer.name].scheme, unit.model["total"]
        else:
            unit, note = sim_stream_unit(layer, log=log)
            scheme, model_total = layer.kind, unit.cycles
        try:
            if compute:
                row = run_engine(layer, packed[layer.name], array, simulator, layer_in[0],
                                 test_dir=base / layer.name, log=log, engine=unit, expected=expected)
            else:
                row = run_stream(layer, simulator, layer_in, expected=expected, test_dir=base / layer.name,
                                 log=log, unit=unit)
            row["reference_exact"] = True
            if reference_images is not None:
                row["reference_images"] = reference_images
            if note:
                row["limits_note"] = note
        except (BenchFailure, CycleMismatch) as err:
            results = getattr(err, "results", {}) or {}
            measured = (results.get("cycles") or [None])[0]
            row = {"layer": layer.name, "scheme": scheme, "simulator": simulator,
                   "cycles_measured": measured, "cycles_model": model_total,
                   "cycles_exact": False if isinstance(err, CycleMismatch) else None,
                   "utilization": None, "bit_exact": isinstance(err, CycleMismatch),
                   "reference_exact": isinstance(err, CycleMismatch), "mismatch": str(err)}
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The ``sparsyn sim`` table: layer, cycles measured/modelled, utilization, bit-exact yes/no."""
    from sparsyn.sw.report import format_table as table
    return table(rows, COLUMNS)
