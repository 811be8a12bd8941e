"""Verilog generation for a manifest: one module per conv/linear layer and per maxpool, plus a listing.

``generate(manifest, array, out_dir)`` writes, into ``out_dir``:

* ``sparsyn_<layer>.v`` — a :class:`~sparsyn.hw.engine.LayerEngine` (conv/linear) or
  :class:`~sparsyn.hw.maxpool.MaxPoolUnit`, top module ``sparsyn_<layer>``, ports ``clk``, ``rst``
  and the flattened component signature (``act_in__valid``, ``act_in__ready``, ``act_in__payload``, ...);
* ``sparsyn_lint.vlt`` — the Verilator waivers for generated-code warnings (:data:`LINT_WAIVERS`);
* ``sparsyn-rtl.json`` — files, top modules, ports and the cycle model of every layer.

Everything is elaborated and converted before the first file is written, so an error (a layer that
does not fit, a bad manifest) leaves ``out_dir`` untouched.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.manifest import load_manifest
from sparsyn.sw.qmodel import MaxPoolLayer, QuantLayer
from sparsyn.sw.schedule import ArrayConfig

from .engine import EngineLimits, LayerEngine
from .maxpool import MaxPoolUnit, maxpool_cycles

LISTING_NAME = "sparsyn-rtl.json"
WAIVER_NAME = "sparsyn_lint.vlt"

#: Verilator ``-Wall`` warnings that Amaranth's Verilog back end produces by construction, each with
#: the reason it is waived. Amaranth (through Yosys) emits fully width-resolved netlists whose
#: semantics are fixed by Amaranth's own rules (checked by its simulator), so these are style
#: warnings about the generated text, not about the design. Anything else fails the lint.
LINT_WAIVERS = {
    "UNUSEDSIGNAL": "Amaranth keeps named debug wires for every view field / port alias and "
                    "unused high bits of intermediate arithmetic results",
    "PROCASSINIT": "Amaranth gives registers their reset value as a declaration initialiser "
                   "and assigns them in always blocks",
    "WIDTHEXPAND": "Yosys emits operands at their own width and relies on Verilog's "
                   "context-determined extension (sign extension is explicit via $signed)",
    "WIDTHTRUNC": "Yosys emits intermediate results wider than their destination and relies on "
                  "implicit truncation (Amaranth's .eq truncation semantics)",
    "CASEINCOMPLETE": "FSM state and dynamic-index case statements have no default arm; the "
                      "uncovered values are unreachable and the signals keep their defaults",
    "DECLFILENAME": "one file holds a top module and its submodules, which are named "
                    "'<top>.<instance>' and so never match the file name",
}


def module_name(layer_name: str) -> str:
    """Verilog module name of a layer: ``sparsyn_<layer>`` with non-identifier characters as ``_``."""
    return "sparsyn_" + re.sub(r"\W", "_", layer_name)


def port_list(component: wiring.Component) -> list[dict]:
    """The Verilog ports of a converted component: clk, rst and the flattened signature."""
    ports = [{"name": "clk", "dir": "input", "width": 1}, {"name": "rst", "dir": "input", "width": 1}]
    for path, member, value in component.signature.flatten(component):
        ports.append({"name": "__".join(str(p) for p in path),
                      "dir": "input" if member.flow == wiring.In else "output",
                      "width": len(value.as_value()) if hasattr(value, "as_value") else len(value)})
    return ports


def waiver_text() -> str:
    lines = ["`verilator_config", "// Waivers for warnings of Amaranth-generated Verilog (sparsyn.hw.generate).",
             "// Each rule is generated-code style, not a design problem; see LINT_WAIVERS for details."]
    for rule, why in LINT_WAIVERS.items():
        lines += [f"// {rule}: {why}", f"lint_off -rule {rule}"]
    return "\n".join(lines) + "\n"


def convert(component: wiring.Component, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False)


def build_modules(model, packed: dict, array: ArrayConfig, limits: EngineLimits = EngineLimits()):
    """Elaborate every layer: ``[(layer, component, module name, record)]`` (no files written)."""
    out = []
    try:
        _build(model, packed, array, limits, out)
    except BaseException:
        for _, component, _, _ in out:
            component._MustUse__silence = True   # discarded unelaborated: no "never used" warnings
        raise
    return out


def _build(model, packed, array, limits, out):
    for layer in model.layers:
        if isinstance(layer, QuantLayer):
            if layer.name not in packed:
                raise SparsynError(f"layer {layer.name} has no packed weights in the manifest; re-run 'sparsyn compress'")
            engine = LayerEngine(layer, packed[layer.name], array, limits)
            rec = {"kind": layer.kind, "scheme": packed[layer.name].scheme,
                   "array": {"rows": engine.array.rows, "cols": engine.array.cols, "lanes": engine.array.lanes},
                   "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
                   "cycles": engine.model}
            out.append((layer, engine, module_name(layer.name), rec))
        elif isinstance(layer, MaxPoolLayer):
            unit = MaxPoolUnit(layer)
            rec = {"kind": "maxpool", "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
                   "cycles": {"total": maxpool_cycles(layer)}}
            out.append((layer, unit, module_name(layer.name), rec))


def generate(manifest_path, array: ArrayConfig, out_dir, limits: EngineLimits = EngineLimits(),
             model_top: bool = False) -> list[Path]:
    """Write the Verilog of every conv/linear/maxpool layer of a manifest; returns the files written
    (Verilog files, then the waiver file and the JSON listing).

    With ``model_top``, also ``sparsyn_model_<model>.v``: a :class:`~sparsyn.hw.model_engine.ModelEngine`
    running the whole network behind the same port interface (listed with ``kind: "model"``).
    """
    model, packed, _doc = load_manifest(Path(manifest_path))
    modules = build_modules(model, packed, array, limits)
    if model_top:
        from .model_engine import ModelEngine
        try:
            top = ModelEngine(model, packed, array, limits)
        except BaseException:
            for _, component, _, _ in modules:
                component._MustUse__silence = True
            raise
        modules.append((None, top, module_name(f"model_{model.name}"),
                        {"kind": "model", "in_shape": list(model.input_shape),
                         "out_shape": list(model.layers[-1].out_shape), "cycles": top.cycle_model}))
    texts, listing = {}, []
    for layer, component, name, rec in modules:
        texts[f"{name}.v"] = convert(component, name)
        rec.update(layer=layer.name if layer is not None else model.name, module=name, file=f"{name}.v",
                   ports=port_list(component))
        listing.append(rec)
    doc = {"format": "sparsyn-rtl", "version": 1, "manifest": str(Path(manifest_path).resolve()),
           "model": model.name, "array": {"rows": array.rows, "cols": array.cols},
           "waivers": WAIVER_NAME, "modules": listing}
    texts[WAIVER_NAME] = waiver_text()
    texts[LISTING_NAME] = json.dumps(doc, indent=1) + "\n"
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SparsynError(f"cannot create output folder {out_dir} ({err.strerror}); choose another --out") from None
    written = []
    for fname, text in texts.items():
        path = out_dir / fname
        tmp = out_dir / f".{fname}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def lint(verilog_path, top: str | None = None, waivers: Path | None = None) -> str:
    """``verilator --lint-only -Wall`` on one generated file with the waiver file beside it.

    Returns Verilator's output (empty when clean); raises SparsynError naming the first warning.
    """
    from sparsyn.sim.tools import verilator_env
    path = Path(verilog_path)
    if not path.exists():
        raise SparsynError(f"Verilog file {path} not found; run 'sparsyn generate' first")
    waivers = Path(waivers) if waivers else path.parent / WAIVER_NAME
    if not waivers.exists():
        waivers.write_text(waiver_text())
    top = top or path.stem
    env = verilator_env(dict(os.environ))
    cmd = ["verilator", "--lint-only", "-Wall", str(waivers), str(path), "--top-module", top]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        first = next((ln for ln in text.splitlines() if ln.startswith("%")), text.strip()[:200])
        raise SparsynError(f"verilator lint of {path.name} failed: {first}")
    return text
