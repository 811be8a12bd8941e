"""Verilog generation for a manifest: one module per conv/linear layer and per pool, plus a listing.

``generate(manifest, array, out_dir)`` writes, into ``out_dir``:

* ``sparsyn_<layer>.v`` — a :class:`~sparsyn.hw.engine.LayerEngine` (conv/linear), a
  :class:`~sparsyn.hw.maxpool.MaxPoolUnit` or an :class:`~sparsyn.hw.avgpool.AvgPoolUnit`, top module
  ``sparsyn_<layer>``, ports ``clk``, ``rst`` and the flattened component signature (``act_in__valid``,
  ``act_in__ready``, ``act_in__payload``, ...);
* ``sparsyn_lint.vlt`` — the Verilator waivers for generated-code warnings (:data:`LINT_WAIVERS`);
* ``sparsyn-rtl.json`` — files, top modules, ports and the cycle model of every layer.

Everything is elaborated and converted before the first file is written, and the folder is replaced as a
whole (:func:`sparsyn.sw.outdir.staged_output`), so an error or an interruption leaves ``out_dir`` as it was;
a folder that is not a previous ``generate`` output (no ``sparsyn-rtl.json``) is refused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from sparsyn.sw.manifest import load_manifest, resolve_array
from sparsyn.sw.outdir import check_out, staged_output
from sparsyn.sw.schedule import ArrayConfig

from .engines import build_engine
from .model_engine import ModelEngine, plan_model
from .plan import EngineLimits
from .pools import pool_cycles, pool_unit

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


def build_modules(model, packed: dict, array: ArrayConfig | None = None, limits: EngineLimits = EngineLimits(),
                  model_top: bool = False):
    """Plan every layer (refusals happen here, before any component exists), then build them:
    ``[(layer or None, component, module name, record)]``; with ``model_top`` the last entry is the
    :class:`~sparsyn.hw.model_engine.ModelEngine` of the whole network (no files written)."""
    mplan = plan_model(model, packed, array, limits)
    out = []
    for seg in mplan.segments:
        plan = seg.engine
        layer = plan.layer
        rec = {"kind": layer.kind, "scheme": plan.packed.scheme,
               "array": {"rows": plan.array.rows, "cols": plan.array.cols, "lanes": plan.array.lanes},
               "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
               "rom_bits": plan.rom_bits, "cycles": plan.model}
        out.append((layer, build_engine(plan), module_name(layer.name), rec))
        for pool in seg.pools:
            # a pool's "total": its cycles from its last input handshake to its last output handshake
            rec = {"kind": pool.kind, "in_shape": list(pool.in_shape), "out_shape": list(pool.out_shape),
                   "cycles": {"total": pool_cycles(pool)}}
            out.append((pool, pool_unit(pool), module_name(pool.name), rec))
    if model_top:
        out.append((None, ModelEngine(mplan), module_name(f"model_{model.name}"),
                    {"kind": "model", "in_shape": list(model.input_shape),
                     "out_shape": list(model.layers[-1].out_shape), "cycles": mplan.cycle_model}))
    return out


def generate(manifest_path, array: ArrayConfig | None, out_dir, limits: EngineLimits = EngineLimits(),
             model_top: bool = False) -> list[Path]:
    """Write the Verilog of every conv/linear/pool layer of a manifest; returns the files written
    (Verilog files, then the waiver file and the JSON listing). ``array`` (None: the manifest's) must be
    the array the manifest was packed for.

    With ``model_top``, also ``sparsyn_model_<model>.v``: a :class:`~sparsyn.hw.model_engine.ModelEngine`
    running the whole network behind the same port interface (listed with ``kind: "model"``).
    """
    check_out(out_dir, LISTING_NAME, command="sparsyn generate")       # before any work
    model, packed, doc = load_manifest(Path(manifest_path))
    array = resolve_array(doc, array)
    modules = build_modules(model, packed, array, limits, model_top)
    texts, listing = {}, []
    for layer, component, name, rec in modules:
        texts[f"{name}.v"] = convert(component, name)
        rec.update(layer=layer.name if layer is not None else model.name, module=name, file=f"{name}.v",
                   ports=port_list(component))
        listing.append(rec)
    doc = {"format": "sparsyn-rtl", "version": 1, "manifest": str(Path(manifest_path).resolve()),
           "manifest_seal": doc["seal"],
           "model": model.name, "array": {"rows": array.rows, "cols": array.cols},
           "waivers": WAIVER_NAME, "modules": listing}
    texts[WAIVER_NAME] = waiver_text()
    texts[LISTING_NAME] = json.dumps(doc, indent=1) + "\n"
    with staged_output(out_dir, LISTING_NAME, command="sparsyn generate") as stage:
        for fname, text in texts.items():
            (stage / fname).write_text(text)
    out_dir = Path(out_dir).expanduser().resolve()
    return [out_dir / fname for fname in texts]
