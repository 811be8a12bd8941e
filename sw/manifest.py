"""The versioned JSON manifest: one per compressed model, listing layers, schemes, ROM files and checksums.

Layout of ``manifest.json`` (``format: "sparsyn-manifest"``, ``version: 1``)::

    {"format", "version", "model": {name, input_shape, input_scale, classes},
     "scheme", "options", "layers": [
        {"name", "op": "conv"|"linear"|"maxpool"|"flatten", "in_shape", "out_shape",
         conv/linear: "kernel", "stride", "padding", "relu", "in_scale", "out_scale",
                      "weight_scale", "weight_bits", "bias", "requant": {"mult", "shift"},
                      "scheme", "pack": {scheme meta},
                      "roms": {rom: {"file", "width", "depth", "sha256"}}
         maxpool: "kernel", "stride", "padding"}]}

ROM files sit beside the manifest, named ``<layer>.<rom>.hex``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import SparsynError
from .qmodel import FlattenLayer, MaxPoolLayer, QuantLayer, QuantModel
from .rom import read_readmemh, write_readmemh
from .schemes import PackedLayer, Rom, get_scheme

FORMAT = "sparsyn-manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _layer_record(layer, packed: PackedLayer | None) -> dict:
    rec = {"name": layer.name, "op": layer.kind, "in_shape": list(layer.in_shape),
           "out_shape": list(layer.out_shape)}
    if isinstance(layer, QuantLayer):
        rec.update(kernel=list(layer.kernel), stride=layer.stride, padding=layer.padding, relu=layer.relu,
                   in_scale=layer.in_scale, out_scale=layer.out_scale,
                   weight_scale=[float(v) for v in layer.weight_scale], weight_bits=layer.weight_bits,
                   bias=[int(v) for v in layer.bias],
                   requant={"mult": [int(v) for v in layer.mult], "shift": [int(v) for v in layer.shift]},
                   scheme=packed.scheme, pack=packed.meta, roms={})
    elif isinstance(layer, MaxPoolLayer):
        rec.update(kernel=layer.kernel, stride=layer.stride, padding=layer.padding)
    return rec


def write_manifest(out_dir: Path, model: QuantModel, packed: dict[str, PackedLayer],
                   scheme: str, options: dict, extra: dict | None = None) -> Path:
    """Write manifest + ROM files into ``out_dir`` atomically (staged, then moved into place)."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        layers = []
        for layer in model.layers:
            rec = _layer_record(layer, packed.get(layer.name))
            if isinstance(layer, QuantLayer):
                for rom_name, rom in packed[layer.name].roms.items():
                    fname = f"{layer.name}.{rom_name}.hex"
                    write_readmemh(stage / fname, rom.words, rom.width)
                    rec["roms"][rom_name] = {"file": fname, "width": rom.width, "depth": rom.depth,
                                             "sha256": sha256_file(stage / fname)}
            layers.append(rec)
        doc = {"format": FORMAT, "version": VERSION,
               "model": {"name": model.name, "input_shape": list(model.input_shape),
                         "input_scale": model.input_scale, "classes": model.classes},
               "scheme": scheme, "options": options, "layers": layers}
        if extra:
            doc.update(extra)
        (stage / MANIFEST_NAME).write_text(json.dumps(doc, indent=1) + "\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            stage.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out_dir / MANIFEST_NAME


def _manifest_path(path: Path) -> Path:
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest_json(path: Path) -> dict:
    path = _manifest_path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SparsynError(f"manifest {path} not found; create one with 'sparsyn compress --out DIR'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SparsynError(f"manifest {path} is not valid JSON ({err}); re-run 'sparsyn compress'") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SparsynError(f"{path} is not a sparsyn manifest (missing format {FORMAT!r}); "
                           "pass the manifest.json written by 'sparsyn compress'")
    if doc.get("version") != VERSION:
        raise SparsynError(f"manifest {path} has version {doc.get('version')!r}, this sparsyn reads version "
                           f"{VERSION}; re-run 'sparsyn compress' with this version")
    return doc


def load_manifest(path: Path) -> tuple[QuantModel, dict[str, PackedLayer], dict]:
    """Read a manifest, verify every ROM (checksum, width, depth) and decode the weights through the scheme."""
    path = _manifest_path(path)
    doc = read_manifest_json(path)
    base = path.parent
    layers, packed = [], {}
    try:
        for rec in doc["layers"]:
            shape_in, shape_out = tuple(rec["in_shape"]), tuple(rec["out_shape"])
            if rec["op"] in ("conv", "linear"):
                roms = {}
                for rom_name, info in rec["roms"].items():
                    f = base / info["file"]
                    if not f.exists():
                        raise SparsynError(f"ROM file {f} listed in the manifest is missing; "
                                           "re-run 'sparsyn compress'")
                    digest = sha256_file(f)
                    if digest != info["sha256"]:
                        raise SparsynError(f"checksum mismatch for ROM file {f} (manifest {info['sha256'][:12]}…, "
                                           f"file {digest[:12]}…); the file was modified, re-run 'sparsyn compress'")
                    roms[rom_name] = Rom(info["width"], read_readmemh(f, info["width"], info["depth"]))
                p = PackedLayer(rec["scheme"], rec["pack"], roms)
                weight = get_scheme(rec["scheme"]).decode(p)
                layer = QuantLayer(
                    name=rec["name"], kind=rec["op"], in_shape=shape_in, out_shape=shape_out,
                    kernel=tuple(rec["kernel"]), stride=rec["stride"], padding=rec["padding"],
                    weight=np.asarray(weight, dtype=np.int64), bias=np.asarray(rec["bias"], dtype=np.int64),
                    mult=np.asarray(rec["requant"]["mult"], dtype=np.int64),
                    shift=np.asarray(rec["requant"]["shift"], dtype=np.int64), relu=rec["relu"],
                    in_scale=rec["in_scale"], out_scale=rec["out_scale"],
                    weight_scale=np.asarray(rec["weight_scale"]), weight_bits=rec["weight_bits"],
                    scheme=rec["scheme"])
                packed[layer.name] = p
            elif rec["op"] == "maxpool":
                layer = MaxPoolLayer(rec["name"], shape_in, shape_out, rec["kernel"], rec["stride"], rec["padding"])
            elif rec["op"] == "flatten":
                layer = FlattenLayer(rec["name"], shape_in, shape_out)
            else:
                raise SparsynError(f"manifest {path}: layer {rec.get('name')!r} has unknown op {rec['op']!r}")
            layers.append(layer)
        m = doc["model"]
        model = QuantModel(m["name"], tuple(m["input_shape"]), m["input_scale"], layers, m["classes"])
    except (KeyError, TypeError) as err:
        raise SparsynError(f"manifest {path} is missing field {err}; re-run 'sparsyn compress'") from None
    return model, packed, doc
