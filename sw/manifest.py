"""The sealed manifest: one per compressed model — layers, ROM files, reference vectors and one seal.

Layout of ``manifest.json`` (``format: "sparsyn-manifest"``, ``version: 2``)::

    {"format", "version", "model": {name, input_shape, input_scale, classes},
     "array": {"rows", "cols"},                 # the array every layer was packed for
     "scheme", "options", "layers": [
        {"name", "op": "conv"|"linear"|"maxpool"|"flatten", "in_shape", "out_shape",
         conv/linear: "kernel", "stride", "padding", "relu", "in_scale", "out_scale",
                      "weight_scale", "weight_bits", "scheme", "pack": {scheme + format meta},
                      "roms": {rom: {"file", "kind", "width", "depth", "sha256"}},
                      ["groups"]     # only for a depthwise conv (groups = in channels; absent = 1)
                      (stride / padding: one int, or [rows, columns] when the two axes differ)
         maxpool: "kernel", "stride", "padding"}],
     "reference": {"file", "sha256", "images", "source", "layers"},
     "descriptor": {"file", "kind": "table", "width", "depth", "sha256", "steps", "fields"},   # when shareable
     "report": {...}, "seal": sha256}

ROM files sit beside the manifest, named ``<layer>.<rom>.hex``: they are the layer's memory images,
exactly what the chip holds (kinds ``weights``, ``index``, ``table``, ``constants``); the bias and
requantization constants live only there. ``reference.npz`` holds a few input images and every
layer's expected output from the float64 int8 reference at compress time. ``descriptor.hex`` is the per-layer
descriptor table the sequenced model engine (one datapath for every layer) reads its per-layer values from:
one word per compute layer (``steps``), ``fields`` lists each value's ``[name, bit offset, width, signed]``;
it is written when the model can run on one shared datapath, and its bits count in the stored bits.

**Seal**: ``seal`` is the SHA-256 of the canonical JSON of every other field (which lists each ROM
file's and the reference file's SHA-256), so one digest covers the whole artefact. :func:`load_manifest`
refuses a manifest whose seal, ROM or reference file does not match with one line; a deliberate edit
is sealed again with :func:`reseal`.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from .errors import SparsynError
from .qmodel import AddLayer, AvgPoolLayer, FlattenLayer, MaxPoolLayer, QuantLayer, QuantModel
from .rom import read_readmemh, write_readmemh
from .schedule import ArrayConfig
from .schemes import ROM_KINDS, PackedLayer, Rom, get_scheme

FORMAT = "sparsyn-manifest"
VERSION = 2
MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference.npz"
#: The sequenced engine's per-layer descriptor table (a ``table`` ROM: one word per compute layer).
DESCRIPTOR_NAME = "descriptor.hex"
#: Test images whose per-layer outputs are stored at compress time.
REFERENCE_IMAGES = 4


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def seal_of(doc: dict) -> str:
    """The seal of a manifest document: SHA-256 over the canonical JSON of every field but ``seal``."""
    body = {k: v for k, v in doc.items() if k != "seal"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _layer_record(layer, packed: PackedLayer | None) -> dict:
    rec = {"name": layer.name, "op": layer.kind, "in_shape": list(layer.in_shape),
           "out_shape": list(layer.out_shape)}
    if isinstance(layer, QuantLayer):
        rec.update(kernel=list(layer.kernel), stride=_axes(layer.stride), padding=_axes(layer.padding),
                   relu=layer.relu, in_scale=layer.in_scale, out_scale=layer.out_scale,
                   weight_scale=[float(v) for v in layer.weight_scale], weight_bits=layer.weight_bits,
                   scheme=packed.scheme, pack=packed.meta, roms={})
        if layer.groups != 1:                  # written only when set: other manifests stay as they were
            rec["groups"] = layer.groups
    elif isinstance(layer, MaxPoolLayer):
        rec.update(kernel=layer.kernel, stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, AvgPoolLayer):
        rec.update(kernel=list(layer.kernel), stride=list(layer.stride), mult=layer.mult, shift=layer.shift,
                   relu=layer.relu)
    elif isinstance(layer, AddLayer):
        rec.update(mult_a=layer.mult_a, mult_b=layer.mult_b, shift=layer.shift, relu=layer.relu,
                   out_scale=layer.out_scale)
    if layer.inputs:                       # written only for a graph: a chain's manifest stays as it was
        rec["inputs"] = list(layer.inputs)
    return rec


def _axes(v):
    """A stride / padding as the manifest writes it: one int, or [rows, columns] when they differ."""
    return list(v) if isinstance(v, (tuple, list)) else int(v)


def check_out_dir(out_dir) -> Path:
    """Refuse (one line) an output folder ``sparsyn compress`` may not write or replace (see
    :func:`sparsyn.sw.outdir.check_out`: an existing file, a protected or unwritable place, a non-empty folder
    that holds no sparsyn manifest). Called before any work, and again under the lock when writing."""
    from .outdir import check_out
    return check_out(out_dir, MANIFEST_NAME, command="sparsyn compress")


def _reference_bytes(reference: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, dtype=np.int64) for k, v in reference.items()})
    return buf.getvalue()


def write_manifest(out_dir: Path, model: QuantModel, packed: dict[str, PackedLayer], scheme: str, options: dict,
                   array: ArrayConfig, reference: dict | None = None, extra: dict | None = None,
                   files: dict[str, str] | None = None, descriptor: tuple[Rom, dict] | None = None,
                   reference_source: str | None = None) -> Path:
    """Write manifest + ROM files + reference vectors (+ ``files``: name -> text, e.g. the report) into
    ``out_dir`` atomically (:func:`sparsyn.sw.outdir.staged_output`: staged, then moved into place under a
    lock). ``reference``: ``{"input": (B,C,H,W) ints, "<layer name>": (B,...) ints, ...}``. ``descriptor``: the
    descriptor table's ROM and its layout (``{"steps", "fields"}``). ``reference_source``: what the reference
    inputs are (default: the digits test set's first images).

    An existing ``out_dir`` is only replaced when it is a previous sparsyn output (it holds a sparsyn
    manifest) or empty; any other folder is refused, so nothing sparsyn did not write is deleted.
    """
    from .outdir import staged_output
    with staged_output(out_dir, MANIFEST_NAME, command="sparsyn compress") as stage:
        layers = []
        for layer in model.layers:
            rec = _layer_record(layer, packed.get(layer.name))
            if isinstance(layer, QuantLayer):
                for rom_name, rom in packed[layer.name].roms.items():
                    fname = f"{layer.name}.{rom_name}.hex"
                    write_readmemh(stage / fname, rom.words, rom.width)
                    rec["roms"][rom_name] = {"file": fname, "kind": rom.kind, "width": rom.width,
                                             "depth": rom.depth, "sha256": sha256_file(stage / fname)}
            layers.append(rec)
        doc = {"format": FORMAT, "version": VERSION,
               "model": {"name": model.name, "input_shape": list(model.input_shape),
                         "input_scale": model.input_scale, "classes": model.classes},
               "array": {"rows": array.rows, "cols": array.cols},
               "scheme": scheme, "options": options, "layers": layers}
        if reference is not None:
            (stage / REFERENCE_NAME).write_bytes(_reference_bytes(reference))
            doc["reference"] = {"file": REFERENCE_NAME, "sha256": sha256_file(stage / REFERENCE_NAME),
                                "images": int(np.asarray(reference["input"]).shape[0]),
                                "source": reference_source or ("digits test set, first images; outputs of the "
                                                               "float64 int8 reference"),
                                "layers": [l.name for l in model.layers]}
        if descriptor is not None:
            rom, layout = descriptor
            write_readmemh(stage / DESCRIPTOR_NAME, rom.words, rom.width)
            doc["descriptor"] = {"file": DESCRIPTOR_NAME, "kind": rom.kind, "width": rom.width, "depth": rom.depth,
                                 "sha256": sha256_file(stage / DESCRIPTOR_NAME),
                                 "steps": list(layout["steps"]), "fields": [list(f) for f in layout["fields"]]}
        if extra:
            doc.update(extra)
        doc["seal"] = seal_of(doc)
        (stage / MANIFEST_NAME).write_text(json.dumps(doc, indent=1) + "\n")
        for name, text in (files or {}).items():
            (stage / name).write_text(text)
    return Path(out_dir).expanduser().resolve() / MANIFEST_NAME


def _manifest_path(path: Path) -> Path:
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def read_manifest_json(path: Path, check_seal: bool = True) -> dict:
    """The manifest document, after checking format, version and (by default) the seal."""
    path = _manifest_path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SparsynError(f"manifest {path} not found; create one with 'sparsyn compress --out DIR'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SparsynError(f"manifest {path} is not valid JSON ({err}); re-run 'sparsyn compress'") from None
    except IsADirectoryError:
        raise SparsynError(f"manifest {path} is a folder; pass the folder that holds manifest.json") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SparsynError(f"{path} is not a sparsyn manifest (missing format {FORMAT!r}); "
                           "pass the manifest.json written by 'sparsyn compress'")
    if doc.get("version") != VERSION:
        raise SparsynError(f"manifest {path} has version {doc.get('version')!r}, this sparsyn reads version "
                           f"{VERSION}; re-run 'sparsyn compress' with this version")
    from .manifest_schema import check_layer_chain, check_manifest_schema
    check_manifest_schema(doc, path)
    check_layer_chain(doc, path)
    if check_seal:
        try:
            seal = seal_of(doc)
        except ValueError:
            raise SparsynError(f"manifest {path} holds a NaN or infinite number; re-run 'sparsyn compress'") from None
        if doc.get("seal") != seal:
            raise SparsynError(f"manifest {path} does not match its seal: a field was edited after compression; "
                               "re-run 'sparsyn compress' (or reseal a deliberate edit with "
                               "sparsyn.sw.manifest.reseal)")
    return doc


def manifest_array(doc: dict) -> ArrayConfig:
    """The array geometry the manifest was packed for."""
    try:
        return ArrayConfig(int(doc["array"]["rows"]), int(doc["array"]["cols"]))
    except (KeyError, TypeError, ValueError):
        raise SparsynError("manifest lacks its array geometry; re-run 'sparsyn compress'") from None


def resolve_array(doc: dict, requested=None) -> ArrayConfig:
    """The manifest's array; a different ``requested`` array (``--array``) is refused with one line."""
    have = manifest_array(doc)
    if requested is None:
        return have
    want = requested if isinstance(requested, ArrayConfig) else ArrayConfig.parse(str(requested))
    if (want.rows, want.cols) != (have.rows, have.cols):
        raise SparsynError(f"the manifest was packed for a {have.rows}x{have.cols} array, not {want.rows}x{want.cols}; "
                           f"re-run 'sparsyn compress --array {want.rows}x{want.cols}' (or drop --array to use "
                           f"{have.rows}x{have.cols})")
    return have


def _load_rom(base: Path, rom_name: str, info: dict) -> Rom:
    f = base / info["file"]
    if not f.is_file():
        what = "a folder" if f.is_dir() else "missing"
        raise SparsynError(f"ROM file {f} listed in the manifest is {what}; re-run 'sparsyn compress'")
    digest = sha256_file(f)
    if digest != info["sha256"]:
        raise SparsynError(f"checksum mismatch for ROM file {f} (manifest {info['sha256'][:12]}…, "
                           f"file {digest[:12]}…); the file was modified, re-run 'sparsyn compress'")
    if info.get("kind") not in ROM_KINDS:
        raise SparsynError(f"ROM {rom_name} ({f.name}) has kind {info.get('kind')!r}, not one of "
                           f"{', '.join(ROM_KINDS)}; re-run 'sparsyn compress'")
    return Rom(info["width"], read_readmemh(f, info["width"], info["depth"]), info["kind"])


def load_manifest(path: Path) -> tuple[QuantModel, dict[str, PackedLayer], dict]:
    """Read a manifest, verify its seal and every ROM (checksum, kind, width, depth), and decode the
    weights and constants through each layer's scheme from exactly those ROM files."""
    path = _manifest_path(path)
    doc = read_manifest_json(path)
    base = path.parent
    layers, packed = [], {}
    try:
        array = manifest_array(doc)
        for rec in doc["layers"]:
            shape_in, shape_out = tuple(rec["in_shape"]), tuple(rec["out_shape"])
            if rec["op"] in ("conv", "linear"):
                roms = {name: _load_rom(base, name, info) for name, info in rec["roms"].items()}
                p = PackedLayer(rec["scheme"], rec["pack"], roms)
                a = p.array
                if a is not None and (a.rows, a.cols) != (array.rows, array.cols):
                    raise SparsynError(f"layer {rec['name']} was packed for {a.rows}x{a.cols} but the manifest says "
                                       f"{array.rows}x{array.cols}; re-run 'sparsyn compress'")
                scheme = get_scheme(rec["scheme"])
                weight = np.asarray(scheme.decode(p), dtype=np.int64)
                bias, mult, shift = scheme.decode_constants(p)
                cin, kh, kw = shape_in[0], *rec["kernel"]
                if weight.shape != (shape_out[0], cin * kh * kw):
                    raise SparsynError(f"layer {rec['name']}: its ROMs decode to a {weight.shape[0]}x{weight.shape[1]} "
                                       f"matrix but its shapes need {shape_out[0]}x{cin * kh * kw}; re-run "
                                       "'sparsyn compress'")
                layer = QuantLayer(
                    name=rec["name"], kind=rec["op"], in_shape=shape_in, out_shape=shape_out,
                    kernel=tuple(rec["kernel"]), stride=rec["stride"], padding=rec["padding"],
                    weight=weight, bias=bias, mult=mult, shift=shift, relu=rec["relu"],
                    in_scale=rec["in_scale"], out_scale=rec["out_scale"],
                    weight_scale=np.asarray(rec["weight_scale"]), weight_bits=rec["weight_bits"],
                    scheme=rec["scheme"], groups=rec.get("groups", 1))
                _check_groups(layer)
                packed[layer.name] = p
            elif rec["op"] == "maxpool":
                layer = MaxPoolLayer(rec["name"], shape_in, shape_out, rec["kernel"], rec["stride"], rec["padding"])
            elif rec["op"] == "avgpool":
                layer = AvgPoolLayer(rec["name"], shape_in, shape_out, tuple(rec["kernel"]), tuple(rec["stride"]),
                                     rec["mult"], rec["shift"], rec["relu"])
            elif rec["op"] == "add":
                layer = AddLayer(rec["name"], shape_in, shape_out, tuple(rec["inputs"]), rec["mult_a"], rec["mult_b"],
                                 rec["shift"], rec["relu"], rec["out_scale"])
            elif rec["op"] == "flatten":
                layer = FlattenLayer(rec["name"], shape_in, shape_out)
            else:
                raise SparsynError(f"manifest {path}: layer {rec.get('name')!r} has unknown op {rec['op']!r}")
            layer.inputs = tuple(rec.get("inputs") or ())
            layers.append(layer)
        m = doc["model"]
        model = QuantModel(m["name"], tuple(m["input_shape"]), m["input_scale"], layers, m["classes"])
    except (KeyError, TypeError) as err:
        raise SparsynError(f"manifest {path} is missing field {err}; re-run 'sparsyn compress'") from None
    return model, packed, doc


def _check_groups(layer: QuantLayer) -> None:
    """A layer recorded as depthwise must decode to its block-diagonal matrix (and have as many groups as input
    channels, its output channels a multiple of them)."""
    g, cin, n = layer.groups, layer.in_shape[0], layer.n
    if g == 1:
        return
    if g != cin or n % g:
        raise SparsynError(f"layer {layer.name} records groups={g} with {cin} input and {n} output channels; only "
                           "depthwise convs (groups = input channels) are held; re-run 'sparsyn compress'")
    area = layer.kernel[0] * layer.kernel[1]
    owner = (np.arange(n) // (n // g))[:, None] == (np.arange(layer.k) // area)[None, :]
    if np.any(layer.weight[~owner] != 0):
        raise SparsynError(f"layer {layer.name} is recorded as depthwise but its ROMs hold weights outside each "
                           "output channel's own input channel; re-run 'sparsyn compress'")


def load_descriptor(path: Path, doc: dict | None = None) -> tuple[Rom, dict] | None:
    """The manifest's descriptor table (ROM, ``{"steps", "fields"}``) after checking its file, or None when the
    manifest has none (a model that does not run on one shared datapath)."""
    path = _manifest_path(path)
    doc = doc if doc is not None else read_manifest_json(path)
    info = doc.get("descriptor")
    if not info:
        return None
    rom = _load_rom(path.parent, "descriptor", info)
    return rom, {"steps": info["steps"], "fields": info["fields"]}


def load_reference(path: Path, doc: dict | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The reference vectors stored at compress time: (input (B,C,H,W), {layer name: (B,C,H,W) output})."""
    path = _manifest_path(path)
    doc = doc if doc is not None else read_manifest_json(path)
    info = doc.get("reference")
    if not info:
        raise SparsynError(f"manifest {path} has no reference vectors; re-run 'sparsyn compress'")
    f = path.parent / info["file"]
    if not f.is_file():
        raise SparsynError(f"reference file {f} is missing; re-run 'sparsyn compress'")
    if sha256_file(f) != info["sha256"]:
        raise SparsynError(f"checksum mismatch for reference file {f}; the file was modified, re-run 'sparsyn compress'")
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    x = arrays.pop("input")
    return x, arrays


def check_reference(path: Path, model: QuantModel | None = None, doc: dict | None = None) -> dict:
    """The golden model decoded from the ROM files must reproduce the reference vectors stored at
    compress time, layer by layer; a manifest that no longer computes what was compressed is refused
    (one line: layer, image, channel, position, reference, golden). Returns ``{"images", "layers"}``."""
    import torch

    from .golden import first_mismatch, run_golden
    if model is None or doc is None:
        model, _, doc = load_manifest(path)
    x, ref = load_reference(path, doc)
    outs = run_golden(model, torch.as_tensor(x, dtype=torch.int64))
    names = [l.name for l in model.layers]
    missing = [n for n in names if n not in ref]
    if missing:
        raise SparsynError(f"reference vectors lack layer {missing[0]}; re-run 'sparsyn compress'")
    mm = first_mismatch(names, [ref[n] for n in names], [o.numpy() for o in outs])
    if mm is not None:
        raise SparsynError(f"the manifest no longer computes what was compressed: the golden model from its ROM "
                           f"files differs from the stored reference vectors in layer {mm.layer}, image {mm.image}, "
                           f"channel {mm.channel}, position (y={mm.y}, x={mm.x}): reference {mm.expected}, golden "
                           f"{mm.actual}; re-run 'sparsyn compress'")
    return {"images": int(x.shape[0]), "layers": len(names)}


def reseal(path: Path, reference: bool = False) -> dict:
    """Seal a deliberately edited artefact again: recompute every ROM file's SHA-256 and depth and the
    seal (with ``reference``, also recompute the reference outputs from the edited ROMs). For tests and
    fault-injection experiments; ``sparsyn compress`` seals its own output."""
    path = _manifest_path(path)
    doc = read_manifest_json(path, check_seal=False)
    base = path.parent
    for rec in doc["layers"]:
        for info in rec.get("roms", {}).values():
            f = base / info["file"]
            info["sha256"] = sha256_file(f)
    if doc.get("descriptor"):
        doc["descriptor"]["sha256"] = sha256_file(base / doc["descriptor"]["file"])
    if reference and doc.get("reference"):
        import torch

        from .golden import run_golden
        doc["seal"] = seal_of(doc)
        (path).write_text(json.dumps(doc, indent=1) + "\n")
        model, _, doc = load_manifest(path)
        x, _ = load_reference(path, doc)
        outs = run_golden(model, torch.as_tensor(x, dtype=torch.int64))
        ref = {"input": x, **{l.name: o.numpy() for l, o in zip(model.layers, outs)}}
        f = base / doc["reference"]["file"]
        f.write_bytes(_reference_bytes(ref))
        doc["reference"]["sha256"] = sha256_file(f)
    doc["seal"] = seal_of(doc)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc
