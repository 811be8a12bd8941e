"""Board builds: self-test top -> fit check -> yosys -> nextpnr -> icepack/ecppack -> report.

Two levels:

* :func:`build_core` builds any self-test core (ports ``running``/``passed``/``failed``) for a board —
  the flow itself, used by tests with stand-in designs and by the FPGA sweep;
* :func:`build_board` is ``sparsyn build``: manifest -> engine (whole model when a ModelEngine
  exists, else one layer) -> :class:`~sparsyn.boards.selftest.SelfTest` with golden vectors -> build.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from amaranth.back import rtlil

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.report import write_json
from sparsyn.sw.schedule import ArrayConfig

from .devices import dsp_blocks_for
from .fit import check_fit, memory_census
from .platforms import Board, get_board
from .report import PROJECT_FMAX_TARGET_MHZ, format_report, make_report
from .selftest import BoardTop, SelfTest
from .synth import coarse_census
from .toolchain import check_toolchain, run_build_script

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
    return {"synth_opts": synth,
            "script_after_synth": f"tee -q -o {name}.stat.json stat -json",
            "nextpnr_opts": f"--report {name}.report.json --timing-allow-fail"}


def elaborate_board(board, core, name: str = "top"):
    """Elaborate ``core`` in ``board``'s top without any toolchain (``do_build=False``); returns the plan."""
    b = _board(board)
    return b.make_platform().build(BoardTop(b, core), name=name, do_build=False,
                                   **_overrides(b, name, use_dsp=False))


def build_core(board, core, out, *, config: dict | None = None, name: str = "top", progress: bool = True,
               dsp: str = "auto", fmax_target_mhz: float | None = None, log=print) -> dict:
    """Fit-check and build ``core`` (a self-test core) for ``board`` into folder ``out``; returns the report.

    Tool logs stay in ``out`` (``top.rpt`` yosys, ``top.tim`` nextpnr, ``*.console.log``, ``build.log``);
    ``out/report.json`` and the printed table are written only after a complete build.
    """
    b = _board(board)
    check_toolchain(b.family)
    fit = check_fit(b.dev, memory_census(core), where=f"the {b.device} on {b.name}")
    log(f"fit check: memories need ~{fit['bram_blocks']} of {b.dev.bram_blocks} block RAMs "
        f"({fit['memory_bits']} bits)")
    policy = dsp_policy(b, core, dsp)
    log(f"DSP: {policy['note']}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", f"{name}.report.json", f"{name}.stat.json", f"{name}.bin", f"{name}.bit"):
        (out / stale).unlink(missing_ok=True)
    platform = _constrained_platform(b, fmax_target_mhz)
    plan = platform.prepare(BoardTop(b, core), name=name, **_overrides(b, name, policy["use"]))
    plan.extract(out)
    log(f"building for {b.name} ({b.device}) in {out}")
    times = run_build_script(out, name, b.family, progress=progress)
    report = make_report(b, out, name, config or {}, fit, policy, times, fmax_target_mhz)
    write_json(out / "report.json", report)
    log(format_report(report))
    return report


# ---- sparsyn build ---------------------------------------------------------------------------

def default_manifest(log=print) -> Path:
    """The default digits model compressed with ``dense`` in the work folder (compressed once, reused)."""
    from sparsyn.sw.paths import work_dir
    out = work_dir() / "compressed" / "default-digits-dense"
    if not (out / "manifest.json").exists():
        from sparsyn.sw.compress import compress
        log(f"compressing the default digits model (dense) into {out}")
        compress(model="default", scheme="dense", out=out, log=log)
    return out


def _model_engine(log=print):
    """The whole-network engine class if this build has one (else None: the self-test runs one layer)."""
    for module in ("sparsyn.hw.model_engine", "sparsyn.hw.engine", "sparsyn.hw.model"):
        try:
            cls = getattr(importlib.import_module(module), "ModelEngine", None)
        except ModuleNotFoundError as err:
            if err.name == module:
                continue
            log(f"note: {module} does not import ({err}); the self-test runs a single layer")
            continue
        except ImportError as err:  # present but broken: fall back to one layer, and say so
            log(f"note: {module} does not import ({err}); the self-test runs a single layer")
            continue
        if cls is not None:
            return cls
    return None


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


def selftest_vectors(model, layer=None, image: int = 0):
    """Input and expected output (int8 codes, CHW order) of ``layer`` (None: the whole model) on
    digits test image ``image``, from the golden model."""
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input, run_golden
    data = digits()
    x = quantize_input(data.test_x[image:image + 1], model.input_scale)
    outs = run_golden(model, x)
    if layer is None:
        return x.reshape(-1).numpy(), outs[-1].reshape(-1).numpy()
    i = [l.name for l in model.layers].index(layer.name)
    inp = x if i == 0 else outs[i - 1]
    return inp.reshape(-1).numpy(), outs[i].reshape(-1).numpy()


def make_selftest(model, packed, array: ArrayConfig, layer: str | None = None,
                  log=print) -> tuple[SelfTest, dict]:
    """The self-test core for a model. ``layer``: a layer name (LayerEngine), ``"all"`` (ModelEngine,
    the whole network) or None (ModelEngine if this build has one, else the largest conv layer).
    Returns (core, config)."""
    from sparsyn.hw.engine import LayerEngine
    model_engine = _model_engine(log) if layer in (None, "all") else None
    if layer == "all" and model_engine is None:
        raise SparsynError("the whole-model engine (ModelEngine) is not part of this build; "
                           "choose one layer with --layer NAME")
    if model_engine is not None:
        engine = model_engine(model, packed, array)
        vin, vout = selftest_vectors(model, None)
        what = {"engine": "ModelEngine", "layer": "all"}
        schemes = sorted({p.scheme for p in packed.values()})
    else:
        q = pick_layer(model, layer)
        engine = LayerEngine(q, packed[q.name], array)
        vin, vout = selftest_vectors(model, q)
        what = {"engine": "LayerEngine", "layer": q.name}
        schemes = [packed[q.name].scheme]
    config = {"model": model.name, **what, "scheme": ",".join(schemes), "array": f"{array.rows}x{array.cols}",
              "selftest_inputs": int(len(vin)), "selftest_outputs": int(len(vout))}
    cyc = getattr(engine, "cycle_model", None) or getattr(engine, "model", None)  # Model- / LayerEngine
    if isinstance(cyc, dict) and "total" in cyc:
        config["engine_cycles"] = int(cyc["total"])
    return SelfTest(engine, vin, vout), config


def build_board(board: str, manifest=None, array=None, layer: str | None = None, out=None, *,
                progress: bool = True, dsp: str = "auto", fmax_target_mhz: float | None = None,
                do_build: bool = True, log=print) -> dict:
    """``sparsyn build``: the self-test bitstream of a manifest's model for ``board``; returns the report.

    ``array`` is ``"RxC"`` or an ArrayConfig (default per family: :data:`DEFAULT_ARRAY`); ``layer`` a
    layer name, ``"all"`` or None (per family: :data:`DEFAULT_LAYER`); ``manifest``
    a manifest folder/file (default: the digits model compressed with dense); ``out`` the build folder
    (default ``work/build/<board>``); ``fmax_target_mhz`` the clock place & route is constrained at
    (default: the project's Fmax goal for the device, 45 MHz on the iCE40UP5K, else the board clock). With ``do_build=False`` only elaborates (no toolchain) and
    returns ``{"plan": BuildPlan, "config": ...}``.
    """
    b = get_board(board)
    arr = array if isinstance(array, ArrayConfig) else ArrayConfig.parse(array or DEFAULT_ARRAY[b.family])
    if fmax_target_mhz is not None and not (isinstance(fmax_target_mhz, (int, float)) and fmax_target_mhz > 0):
        raise SparsynError(f"target clock {fmax_target_mhz!r} MHz must be a positive number")
    if do_build:
        check_toolchain(b.family)  # a missing tool is reported before any compression work
    from sparsyn.sw.manifest import load_manifest
    mpath = Path(manifest) if manifest else default_manifest(log)
    model, packed, _ = load_manifest(mpath)
    if layer is None and DEFAULT_LAYER[b.family] != "all":
        layer = pick_layer(model, None).name
        log(f"self-test runs layer {layer} (the largest conv layer; a whole-model engine has one array and "
            f"requantizer per layer and does not fit the {b.device} — try --layer all)")
    core, config = make_selftest(model, packed, arr, layer, log=log)
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
