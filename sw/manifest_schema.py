"""The JSON Schema of ``manifest.json`` (version 2), checked on every load with the ``jsonschema`` library.

It fixes the structure and the ranges of every field the loader reads (shapes, kernels, ROM records, scales),
so that a hand-edited or truncated manifest is refused in one line naming the field, before any value is used.
The schemes' own packing metadata (``pack``) is an open object: each scheme checks it when it decodes its ROMs.
"""
from __future__ import annotations

from .errors import SparsynError

_DIM = {"type": "integer", "minimum": 1, "maximum": 1 << 20}
_SHAPE = {"type": "array", "items": _DIM, "minItems": 3, "maxItems": 3}
_SCALE = {"type": "number", "exclusiveMinimum": 0}
_ROM = {
    "type": "object",
    "required": ["file", "kind", "width", "depth", "sha256"],
    "properties": {
        "file": {"type": "string", "pattern": r"^[^/\\]+\.hex$"},
        "kind": {"enum": ["weights", "index", "table", "constants"]},
        "width": {"type": "integer", "minimum": 1, "maximum": 4096},
        "depth": {"type": "integer", "minimum": 1, "maximum": 1 << 24},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}


def _axes(lo: int) -> dict:
    """A stride (``lo`` 1) / padding (``lo`` 0): one int, or [rows, columns] when the two axes differ."""
    one = {"type": "integer", "minimum": lo, "maximum": 64}
    return {"oneOf": [one, {"type": "array", "items": one, "minItems": 2, "maxItems": 2}]}


_COMPUTE = {
    "required": ["kernel", "stride", "padding", "relu", "in_scale", "out_scale", "weight_scale", "weight_bits",
                 "scheme", "pack", "roms"],
    "properties": {
        "kernel": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 64}, "minItems": 2,
                   "maxItems": 2},
        "stride": _axes(1),
        "padding": _axes(0),
        "groups": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
        "relu": {"type": "boolean"},
        "in_scale": _SCALE, "out_scale": _SCALE,
        "weight_scale": {"type": "array", "items": _SCALE, "minItems": 1},
        "weight_bits": {"type": "integer", "minimum": 1, "maximum": 16},
        "scheme": {"type": "string"},
        "pack": {"type": "object"},
        "roms": {"type": "object", "minProperties": 1, "additionalProperties": _ROM},
    },
}
_POOL = {
    "required": ["kernel", "stride", "padding"],
    "properties": {"kernel": {"type": "integer", "minimum": 1, "maximum": 64},
                   "stride": {"type": "integer", "minimum": 1, "maximum": 64},
                   "padding": {"type": "integer", "minimum": 0, "maximum": 64}},
}
_PAIR = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 1 << 10}, "minItems": 2, "maxItems": 2}
_MULT = {"type": "integer", "minimum": 0, "maximum": (1 << 15) - 1}
_SHIFT = {"type": "integer", "minimum": 1, "maximum": 47}
_AVGPOOL = {
    "required": ["kernel", "stride", "mult", "shift", "relu"],
    "properties": {"kernel": _PAIR, "stride": _PAIR, "mult": _MULT, "shift": _SHIFT, "relu": {"type": "boolean"}},
}
_ADD = {
    "required": ["inputs", "mult_a", "mult_b", "shift", "relu", "out_scale"],
    "properties": {"inputs": {"minItems": 2, "maxItems": 2}, "mult_a": _MULT, "mult_b": _MULT, "shift": _SHIFT,
                   "relu": {"type": "boolean"}, "out_scale": _SCALE},
}
_LAYER = {
    "type": "object",
    "required": ["name", "op", "in_shape", "out_shape"],
    "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$"},
                   "op": {"enum": ["conv", "linear", "maxpool", "avgpool", "add", "flatten"]},
                   "in_shape": _SHAPE, "out_shape": _SHAPE,
                   "inputs": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2}},
    "allOf": [
        {"if": {"properties": {"op": {"enum": ["conv", "linear"]}}}, "then": _COMPUTE},
        {"if": {"properties": {"op": {"const": "maxpool"}}}, "then": _POOL},
        {"if": {"properties": {"op": {"const": "avgpool"}}}, "then": _AVGPOOL},
        {"if": {"properties": {"op": {"const": "add"}}}, "then": _ADD},
    ],
}

#: The manifest's JSON Schema (draft 2020-12).
MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "version", "model", "array", "scheme", "options", "layers", "seal"],
    "properties": {
        "format": {"const": "sparsyn-manifest"},
        "version": {"const": 2},
        "model": {"type": "object", "required": ["name", "input_shape", "input_scale", "classes"],
                  "properties": {"name": {"type": "string"}, "input_shape": _SHAPE, "input_scale": _SCALE,
                                 "classes": _DIM}},
        "array": {"type": "object", "required": ["rows", "cols"],
                  "properties": {"rows": {"type": "integer", "minimum": 1, "maximum": 256},
                                 "cols": {"type": "integer", "minimum": 1, "maximum": 256}}},
        "scheme": {"type": "string"},
        "options": {"type": "object"},
        "layers": {"type": "array", "items": _LAYER, "minItems": 1},
        "seal": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "descriptor": {"allOf": [_ROM, {
            "required": ["steps", "fields"],
            "properties": {"kind": {"const": "table"},
                           "steps": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                           "fields": {"type": "array", "items": {
                               "type": "array", "minItems": 4, "maxItems": 4,
                               "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0},
                                               {"type": "integer", "minimum": 1, "maximum": 64},
                                               {"type": "boolean"}]}}}}]},
        "reference": {"type": "object", "required": ["file", "sha256", "images"],
                      "properties": {"file": {"type": "string"}, "sha256": {"type": "string"},
                                     "images": {"type": "integer", "minimum": 1}}},
    },
}


def check_manifest_schema(doc, path) -> None:
    """Refuse (one line: the first offending field, its path and the fix) a manifest that does not follow
    :data:`MANIFEST_SCHEMA`."""
    import jsonschema
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message if len(err.message) < 120 else err.message[:117] + "..."
        raise SparsynError(f"manifest {path} is malformed at {where}: {message}; re-run 'sparsyn compress'")


def check_layer_chain(doc, path) -> None:
    """Each layer takes what the tensors it reads give (the layer before it, the model's input for the first, or
    the layers / ``@input`` its ``inputs`` name, which must come earlier): refuse a manifest whose layers were
    removed, reordered or reshaped."""
    shapes = {"@input": list(doc["model"]["input_shape"])}
    prev = "@input"
    for rec in doc["layers"]:
        for src in rec.get("inputs") or [prev]:
            if src not in shapes:
                raise SparsynError(f"manifest {path}: layer {rec['name']} reads {src!r}, which no layer before it "
                                   "makes (a layer was removed or reordered); re-run 'sparsyn compress'")
            if list(rec["in_shape"]) != shapes[src]:
                what = "the layer before" if src == prev and not rec.get("inputs") else repr(src)
                raise SparsynError(f"manifest {path}: layer {rec['name']} takes {rec['in_shape']} but {what} "
                                   f"gives {shapes[src]} (a layer was removed or edited); re-run 'sparsyn compress'")
        if rec["op"] == "add" and list(rec["out_shape"]) != list(rec["in_shape"]):
            raise SparsynError(f"manifest {path}: add layer {rec['name']} gives {rec['out_shape']} from two "
                               f"{rec['in_shape']} tensors; re-run 'sparsyn compress'")
        shapes[rec["name"]] = list(rec["out_shape"])
        prev = rec["name"]
