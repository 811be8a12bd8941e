"""Board builds: self-test top -> fit check -> yosys -> nextpnr -> icepack/ecppack -> report.

Two levels:

* :func:`build_core` builds any self-test core (ports ``running``/``passed``/``failed``) for a board —
  the flow itself, used by tests with stand-in designs and by the FPGA sweep;
* :func:`build_board` is ``sparsyn build``: manifest -> engine (whole model when a ModelEngine
  exists, else one layer) -> :class:`~sparsyn.boards.selftest.SelfTest` with golden vectors -> build.
"""
from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import rtlil

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.outdir import check_out, staged_output
from sparsyn.sw.report import json_text, write_json
from sparsyn.sw.schedule import ArrayConfig

from .devices import dsp_blocks_for
from .fit import check_fit, memory_census
from .platforms import Board, get_board
from .report import PROJECT_FMAX_TARGET_MHZ, format_report, make_report
from .selftest import BoardTop, SelfTest, check_selftest_vectors
from .synth import coarse_census
from .toolchain import FIT_ADVICE, check_toolchain, run_build_script

#: Array size ``sparsyn build`` uses when --array is not given, per FPGA family (iCE40: the largest
#: array whose multipliers, with the requantizer's, still fit the UP5K's 8 DSP blocks).
DEFAULT_ARRAY = {"ice40": "2x3", "ecp5": "4x4"}
#: What the self-test runs when --layer is not given: the whole model ("all") on ECP5; on the iCE40UP5K
#: one layer (measured: the three-engine ModelEngine at 1x1 maps to 6722 LUT4s > 5280 without DSPs,
#: and needs 9 > 8 DSP blocks with them).
DEFAULT_LAYER = {"ice40": "largest", "ecp5": "all"}


def _board(board) -> Board:
    return board if isinstance(board, Board) else get_board(board)


def _constrained_platform(board: Board, mhz: float | None):
    """The board's platform; with ``mhz``, place & route is constrained at that clock instead.

    The design still runs from the board oscillator (no PLL) — the constraint only makes nextpnr
    work towards (and report against) a target frequency.
    """
    platform = board.make_platform()
    if not mhz:
        return platform
    hz = float(mhz) * 1e6
    base = type(platform)

    class Constrained(base):
        def iter_port_clock_constraints(self):
            for port, _ in super().iter_port_clock_constraints():
                yield port, hz

        def iter_signal_clock_constraints(self):
            for signal, _ in super().iter_signal_clock_constraints():
                yield signal, hz

    Constrained.__name__ = base.__name__
    return Constrained()


def dsp_policy(board: Board, core, mode: str = "auto") -> dict:
    """Decide whether yosys may map multipliers to DSP blocks.

    ``auto`` counts the design's ``$mul`` cells (a yosys pre-pass on the RTLIL) and uses the DSPs
    only when all of them fit — yosys does not budget DSPs, so an overflow would fail in placement.
    """
    dev = board.dev
    if mode not in ("auto", "on", "off"):
        raise SparsynError(f"--dsp must be auto, on or off, not {mode!r}")
    if mode != "auto":
        return {"mode": mode, "use": mode == "on", "note": f"forced {mode}"}
    census = coarse_census(rtlil.convert(core, name="core"), top="core")
    muls = [(a, b) for a, b in census["muls"] if a >= 2 and b >= 2 and a + b >= 11]
    need = sum(dsp_blocks_for(dev, a, b) for a, b in muls)
    use = need <= dev.dsps
    note = (f"{len(muls)} multipliers need {need} of {dev.dsps} {('SB_MAC16' if dev.family == 'ice40' else 'MULT18X18D')}"
            f" -> {'DSP blocks' if use else 'LUT multipliers'}")
    return {"mode": "auto", "use": use, "multipliers": [list(m) for m in census["muls"]],
            "dsp_blocks_needed": need, "dsp_blocks_available": dev.dsps, "note": note}


def _overrides(board: Board, name: str, use_dsp: bool) -> dict:
    synth = ("-dsp" if use_dsp else "") if board.family == "ice40" else ("" if use_dsp else "-nodsp")
    # ECP5: the static placer puts the registers around a DSP block next to it; the default (heap) leaves them in
    # the logic's cluster, up to a DSP row away (one netlist, the dense digits model at 8x8 constrained to 100 MHz:
    # heap 84-103 MHz over four seeds, static 107-110 MHz)
    placer = " --placer static" if board.family == "ecp5" else ""
    return {"synth_opts": synth,
            "script_after_synth": f"tee -q -o {name}.stat.json stat -json",
            "nextpnr_opts": f"--report {name}.report.json --timing-allow-fail{placer}"}


def elaborate_board(board, core, name: str = "top", top=None):
    """Elaborate ``core`` in ``board``'s top (``top(board, core)``, default the self-test's :class:`BoardTop`)
    without any toolchain (``do_build=False``); returns the plan."""
    b = _board(board)
    return b.make_platform().build((top or BoardTop)(b, core), name=name, do_build=False,
                                   **_overrides(b, name, use_dsp=False))


#: Files that mark a folder as a ``sparsyn build`` folder (the first is written into every new one).
BUILD_MARKERS = (".sparsyn-build", "build.log")


def build_core(board, core, out, *, config: dict | None = None, name: str = "top", progress: bool = True,
               dsp: str = "auto", fmax_target_mhz: float | None = None, top=None, log=print) -> dict:
    """Fit-check and build ``core`` for ``board`` into folder ``out``; returns the report. ``top(board, core)``
    makes the board's top level (default :class:`BoardTop`: a self-test core with running / passed / failed).

    Tool logs stay in ``out`` (``top.rpt`` yosys, ``top.tim`` nextpnr, ``*.console.log``, ``build.log``);
    ``out/report.json`` and the printed table are written only after a complete build.
    """
    b = _board(board)
    out = check_out(out, BUILD_MARKERS, command="sparsyn build")      # before any work
    check_toolchain(b.family)
    fit = check_fit(b.dev, memory_census(core), where=f"the {b.device} on {b.name}")
    log(f"fit check: memories need ~{fit['bram_blocks']} of {b.dev.bram_blocks} block RAMs "
        f"({fit['memory_bits']} bits)")
    policy = dsp_policy(b, core, dsp)
    log(f"DSP: {policy['note']}")
    platform = _constrained_platform(b, fmax_target_mhz)
    plan = platform.prepare((top or BoardTop)(b, core), name=name, **_overrides(b, name, policy["use"]))
    advice = FIT_ADVICE
    if not policy["use"] and policy.get("dsp_blocks_needed"):
        advice = (f"the multipliers need {policy['dsp_blocks_needed']} DSP blocks, the device has "
                  f"{policy['dsp_blocks_available']}, so they became LUT logic: use a smaller --array, fewer "
                  "multipliers per PE (the pattern scheme: compress with --opt mults=1), or a board with a bigger FPGA")
    # the build runs in a stage folder that replaces ``out`` as a whole when the tools have finished; a tool
    # failure keeps its logs (the folder is moved into place, without report.json); an interruption leaves
    # ``out`` as it was
    failure = None
    with staged_output(out, BUILD_MARKERS, command="sparsyn build") as stage:
        plan.extract(stage)
        log(f"building for {b.name} ({b.device}) in {out}")
        try:
            times = run_build_script(stage, name, b.family, progress=progress, fit_advice=advice)
        except SparsynError as err:
            failure = str(err).replace(str(stage), str(out))
        else:
            report = make_report(b, stage, name, config or {}, fit, policy, times, fmax_target_mhz)
            report = json.loads(json_text(report).replace(str(stage), str(out)))
            write_json(stage / "report.json", report)
    if failure is not None:
        raise SparsynError(failure)
    log(format_report(report))
    return report


# ---- sparsyn build ---------------------------------------------------------------------------

def default_manifest(array: ArrayConfig, log=print) -> Path:
    """The default digits model compressed with ``dense`` for ``array`` in the work folder (compressed
    once per array, reused)."""
    from sparsyn.sw.manifest import VERSION, read_manifest_json
    from sparsyn.sw.paths import work_dir
    out = work_dir() / "compressed" / f"default-digits-dense-{array.rows}x{array.cols}"
    try:
        fresh = read_manifest_json(out)["version"] == VERSION
    except SparsynError:
        fresh = False
    if not fresh:
        from sparsyn.sw.compress import compress
        log(f"compressing the default digits model (dense) for a {array.rows}x{array.cols} array into {out}")
        from sparsyn.hw.descriptor import manifest_descriptor
        compress(model="default", scheme="dense", out=out, log=log, array=array, descriptor=manifest_descriptor)
    return out


def pick_layer(model, layer: str | None):
    """The named compute layer, or the largest conv layer (most weights, then most MACs)."""
    compute = model.compute_layers
    if layer is not None:
        names = [l.name for l in compute]
        if layer not in names:
            raise SparsynError(f"model {model.name} has no conv/linear layer {layer!r}; "
                               f"its layers are: {', '.join(names)}")
        return compute[names.index(layer)]
    convs = [l for l in compute if l.kind == "conv"] or compute
    return max(convs, key=lambda l: (l.n * l.k, l.macs))


def selftest_vectors(manifest, model, layer=None, image: int = 0):
    """Input and expected output (int8 codes, CHW order) of ``layer`` (None: the whole model) on
    reference image ``image``: the reference vectors stored in the manifest at compress time (the
    golden model decoded from the ROM files is checked against them first)."""
    from sparsyn.sw.manifest import check_reference, load_reference
    check_reference(manifest, model, load_manifest_doc(manifest))
    x, ref = load_reference(manifest)
    if not 0 <= image < x.shape[0]:
        raise SparsynError(f"self-test image {image} is out of range; the manifest stores {x.shape[0]} reference images")
    names = [l.name for l in model.layers]
    if layer is None:
        return x[image].reshape(-1), ref[names[-1]][image].reshape(-1)
    i = names.index(layer.name)
    inp = x[image] if i == 0 else ref[names[i - 1]][image]
    return inp.reshape(-1), ref[layer.name][image].reshape(-1)


def load_manifest_doc(manifest) -> dict:
    from sparsyn.sw.manifest import read_manifest_json
    return read_manifest_json(manifest)


def make_selftest(manifest, model, packed, array: ArrayConfig | None = None, layer: str | None = None,
                  log=print) -> tuple[SelfTest, dict]:
    """The self-test core for a manifest's model. ``layer``: a layer name (its engine alone) or ``"all"``
    / None (the ModelEngine, the whole network). Everything is planned (and refused, in one line)
    before any component is built. Returns (core, config)."""
    from sparsyn.hw.engines import build_engine, plan_layer
    from sparsyn.hw.model_engine import ModelEngine, plan_model
    if layer in (None, "all"):
        plan = plan_model(model, packed, array)
        vin, vout = selftest_vectors(manifest, model, None)
        what = {"engine": "ModelEngine", "layer": "all"}
        schemes = sorted({p.scheme for p in packed.values()})
        cycles = plan.cycle_model["total"]
        arr = plan.segments[0].engine.array
    else:
        q = pick_layer(model, layer)
        plan = plan_layer(q, packed[q.name], array)
        vin, vout = selftest_vectors(manifest, model, q)
        what = {"engine": plan.engine.__name__, "layer": q.name}
        schemes = [packed[q.name].scheme]
        cycles = plan.model["total"]
        arr = plan.array
    check_selftest_vectors(vin, vout)
    engine = ModelEngine(plan) if layer in (None, "all") else build_engine(plan)
    config = {"model": model.name, **what, "scheme": ",".join(schemes), "array": f"{arr.rows}x{arr.cols}",
              "selftest_inputs": int(len(vin)), "selftest_outputs": int(len(vout)), "engine_cycles": int(cycles)}
    return SelfTest(engine, vin, vout), config


def build_board(board: str, manifest=None, array=None, layer: str | None = None, out=None, *,
                progress: bool = True, dsp: str = "auto", fmax_target_mhz: float | None = None,
                do_build: bool = True, top: str = "selftest", baud: int | None = None, weights: str = "auto", scratch: str = "auto",
                acts: str = "auto", log=print) -> dict:
    """``sparsyn build``: the self-test bitstream of a manifest's model for ``board``; returns the report.

    ``array`` is ``"RxC"`` or an ArrayConfig (default per family: :data:`DEFAULT_ARRAY`); ``layer`` a
    layer name, ``"all"`` or None (per family: :data:`DEFAULT_LAYER`); ``manifest``
    a manifest folder/file (default: the digits model compressed with dense); ``out`` the build folder
    (default ``work/build/<board>``); ``fmax_target_mhz`` the clock place & route is constrained at
    (default: the project's Fmax goal for the device, 45 MHz on the iCE40UP5K, else the board clock). With ``do_build=False`` only elaborates (no toolchain) and
    returns ``{"plan": BuildPlan, "config": ...}``.
    """
    b = get_board(board)
    if array is not None and not isinstance(array, ArrayConfig):
        array = ArrayConfig.parse(array)
    if fmax_target_mhz is not None and not (isinstance(fmax_target_mhz, (int, float)) and fmax_target_mhz > 0):
        raise SparsynError(f"target clock {fmax_target_mhz!r} MHz must be a positive number")
    if do_build:
        check_toolchain(b.family)  # a missing tool is reported before any compression work
    from sparsyn.sw.manifest import load_manifest, resolve_array
    mpath = Path(manifest) if manifest else default_manifest(array or ArrayConfig.parse(DEFAULT_ARRAY[b.family]), log)
    model, packed, doc = load_manifest(mpath)
    arr = resolve_array(doc, array)
    if top == "inference":
        return _build_inference(b, mpath, arr, out, progress=progress, dsp=dsp, fmax_target_mhz=fmax_target_mhz,
                                do_build=do_build, baud=baud, weights=weights, scratch=scratch, acts=acts, log=log)
    if top != "selftest":
        raise SparsynError(f"--top must be inference or selftest, not {top!r}")
    if layer is None and DEFAULT_LAYER[b.family] != "all":
        layer = pick_layer(model, None).name
        log(f"self-test runs layer {layer} (the largest conv layer; a whole-model engine has one array and "
            f"requantizer per layer and does not fit the {b.device} — try --layer all)")
    core, config = make_selftest(mpath, model, packed, arr, layer, log=log)
    config["manifest"] = str(mpath)
    if not do_build:
        return {"plan": elaborate_board(b, core), "config": config}
    if out is None:
        from sparsyn.sw.paths import work_dir
        out = work_dir() / "build" / b.name
    if fmax_target_mhz is None:   # place & route towards the project's goal where it has one (UP5K: 45 MHz)
        fmax_target_mhz = PROJECT_FMAX_TARGET_MHZ.get(b.device)
    return build_core(b, core, out, config=config, progress=progress, dsp=dsp,
                      fmax_target_mhz=fmax_target_mhz, log=log)


def _build_inference(b: Board, mpath: Path, arr: ArrayConfig, out, *, progress, dsp, fmax_target_mhz, do_build,
                     baud, weights, log, scratch: str = "auto", acts: str = "auto") -> dict:
    """``sparsyn build`` of the inference top: the whole model on the sequenced engine behind the UART link."""
    from .infer import DEFAULT_BAUD, InferenceTop, inference_design
    design = inference_design(mpath, b.name, baud=baud or DEFAULT_BAUD, array=arr, weights=weights, scratch=scratch,
                              acts=acts, log=log)
    core = design.core()
    plan = design.plan
    config = {"top": "inference", "model": plan.model.name, "engine": design.engine_kind,
              "scheme": ",".join(sorted({p.scheme for p in (l.packed for l in _engine_plans(design))})),
              "array": f"{arr.rows}x{arr.cols}", "baud": design.baud, "uart_divisor": design.divisor,
              "design_hash": design.design_hash.hex(), "engine_cycles": int(plan.cycle_model["total"]),
              "weights_in": design.weights_in, "scratch": design.scratch, "acts": design.acts, "weight_bytes": len(design.weight_image),
              "manifest": str(mpath)}
    if not do_build:
        return {"plan": elaborate_board(b, core, top=InferenceTop), "config": config}
    if out is None:
        from sparsyn.sw.paths import work_dir
        out = work_dir() / "build" / b.name
    if fmax_target_mhz is None:
        fmax_target_mhz = PROJECT_FMAX_TARGET_MHZ.get(b.device)
    return build_core(b, core, out, config=config, progress=progress, dsp=dsp, fmax_target_mhz=fmax_target_mhz,
                      top=InferenceTop, log=log)


def _engine_plans(design):
    return design.plan.layers if design.engine_kind == "sequenced" else [s.engine for s in design.plan.segments]
