"""The compression pipeline: float model -> scheme.prepare -> int8 quantization -> packed ROMs + manifest."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from .data import Dataset, digits
from .errors import SparsynError
from .golden import logits, quantize_input, run_golden, run_int8_reference, first_mismatch
from .importer import import_model, load_model_file
from .manifest import MANIFEST_NAME, REFERENCE_IMAGES, check_out_dir, write_manifest
from .model_zoo import default_model
from .qmodel import QuantModel
from .quantize import quantize_model
from .report import json_text
from .schemes import PackedLayer, Scheme, get_scheme
from .schemes.dense import DenseScheme
from .train import accuracy


def int_accuracy(model: QuantModel, data: Dataset) -> float:
    """Top-1 test accuracy (%) of the golden integer model."""
    x = quantize_input(data.test_x, model.input_scale)
    return 100.0 * (logits(model, x).argmax(1) == data.test_y).double().mean().item()


def check_golden_vs_reference(model: QuantModel, data: Dataset) -> None:
    """The pure-integer golden model must equal the float64 int8 model on the whole test set."""
    x = quantize_input(data.test_x, model.input_scale)
    names = [l.name for l in model.layers]
    mm = first_mismatch(names, run_int8_reference(model, x), run_golden(model, x))
    if mm is not None:
        raise AssertionError(f"golden model disagrees with the int8 reference: {mm}")


def pack_model(model: QuantModel, scheme: Scheme) -> dict[str, PackedLayer]:
    """Pack every compute layer with its scheme and check decode(pack) gives back the exact weights."""
    packed = {}
    dense = DenseScheme(array=scheme.array)
    for layer in model.compute_layers:
        s = scheme if layer.scheme == scheme.name else dense
        p = s.pack(layer)
        cls = get_scheme(p.scheme)
        decoded = np.asarray(cls.decode(p), dtype=np.int64)
        if decoded.shape != layer.weight.shape or not np.array_equal(decoded, layer.weight):
            raise AssertionError(f"scheme {p.scheme}: decode(pack) of layer {layer.name} differs from its weights")
        bias, mult, shift = cls.decode_constants(p)
        if not (np.array_equal(bias, layer.bias) and np.array_equal(mult, layer.mult)
                and np.array_equal(shift, layer.shift)):
            raise AssertionError(f"scheme {p.scheme}: the constants ROMs of layer {layer.name} differ from its "
                                 "bias / requantization")
        packed[layer.name] = p
    return packed


#: Columns of the stored-bits split (``other`` = tables + constants).
BIT_COLUMNS = ("weight_bits", "index_bits", "other_bits", "stored_bits")


def stored_bits(p: PackedLayer) -> dict:
    """Every bit the chip stores for one layer, split weights / index / other (tables + constants)."""
    kinds = p.bits_by_kind()
    return {"weight_bits": kinds["weights"], "index_bits": kinds["index"],
            "other_bits": kinds["table"] + kinds["constants"], "table_bits": kinds["table"],
            "constant_bits": kinds["constants"], "stored_bits": p.rom_bits}


def layer_report(model: QuantModel, packed: dict[str, PackedLayer]) -> list[dict]:
    """Per compute layer: shapes, scheme figures and the stored bits by kind; ``rate_vs_int8`` /
    ``rate_vs_fp32`` count every stored bit, ``weights_rate_vs_int8`` the weight memory only."""
    rows = []
    for layer in model.compute_layers:
        p = packed[layer.name]
        st = get_scheme(p.scheme).stats(p, layer)
        dense = layer.n * layer.k
        bits = stored_bits(p)
        # the scheme's own figures first (grouped-form statistics may use similar names), then what the
        # chip stores, which always wins
        rows.append({"layer": layer.name, "kind": layer.kind, "scheme": p.scheme, "n": layer.n, "k": layer.k,
                     **{k: v for k, v in st.items() if k not in ("rom_bits", "dense_slots")},
                     "nonzero": int(np.count_nonzero(layer.weight)), **bits,
                     "rate_vs_int8": 8 * dense / bits["stored_bits"], "rate_vs_fp32": 32 * dense / bits["stored_bits"],
                     "weights_rate_vs_int8": 8 * dense / max(1, bits["weight_bits"])})
    return rows


def model_bits(rows: list[dict]) -> dict:
    """Totals of :func:`layer_report` rows: stored bits by kind and the rates of the whole model."""
    dense = sum(r["n"] * r["k"] for r in rows)
    tot = {c: sum(r[c] for r in rows) for c in (*BIT_COLUMNS, "table_bits", "constant_bits")}
    return {**tot, "weights": dense, "rate_vs_int8": 8 * dense / tot["stored_bits"],
            "rate_vs_fp32": 32 * dense / tot["stored_bits"],
            "weights_rate_vs_int8": 8 * dense / max(1, tot["weight_bits"])}


def reference_vectors(model: QuantModel, data: Dataset, images: int = REFERENCE_IMAGES) -> dict:
    """A few test inputs and every layer's output from the float64 int8 reference (stored in the manifest)."""
    x = quantize_input(data.test_x[:images], model.input_scale)
    outs = run_int8_reference(model, x)
    return {"input": x.numpy(), **{l.name: o.numpy() for l, o in zip(model.layers, outs)}}


def compress_model(module: torch.nn.Module, scheme: Scheme, data: Dataset | None = None,
                   progress: bool = True, log=print, name: str = "model"):
    """Compress ``module`` with ``scheme``: returns (QuantModel, {layer: PackedLayer}, report dict)."""
    data = data or digits()
    t0 = time.time()
    layers = import_model(module, data.input_shape)  # refuse unsupported models before any work
    outputs = int(np.prod(layers[-1].out_shape))
    if outputs != data.classes:
        raise SparsynError(f"model {name} produces {outputs} outputs but the dataset has {data.classes} classes; "
                           "give the model a final layer with one output per class")
    float_acc = accuracy(module, data.test_x, data.test_y)
    if not progress and hasattr(scheme, "progress"):
        scheme.progress = False           # --quiet: no training / annealing bars either
    work = copy.deepcopy(module)
    work = scheme.prepare(work, data, log) or work
    prepared_acc = accuracy(work, data.test_x, data.test_y)
    model = quantize_model(work, data, scheme, name=name)
    packed = pack_model(model, scheme)
    check_golden_vs_reference(model, data)
    int_acc = int_accuracy(model, data)
    layers = layer_report(model, packed)
    report = {"model": name, "scheme": scheme.name, "options": scheme.opts,
              "array": {"rows": scheme.array.rows, "cols": scheme.array.cols},
              "accuracy": {"float": float_acc, "compressed_float": prepared_acc, "int": int_acc},
              "golden_equals_int8_reference": True,
              "nonzero": sum(r["nonzero"] for r in layers), **model_bits(layers),
              "layers": layers, "seconds": round(time.time() - t0, 2)}
    history = getattr(scheme, "history", None)
    if history:
        report["history"] = history       # per-step accuracy of the scheme's pruning / training
    return model, packed, report


def load_model(source, progress: bool = True) -> tuple[torch.nn.Module, str]:
    """``"default"`` (the built-in digits CNN; trained on first use, with a bar when ``progress``) or a path to a
    ``torch.save``d module."""
    if isinstance(source, torch.nn.Module):
        return source, type(source).__name__
    if str(source) == "default":
        return default_model(progress=progress), "default-digits"
    return load_model_file(source), Path(source).stem


def with_descriptor(report: dict, bits: int) -> dict:
    """The report's model totals with the descriptor table's ``bits`` (a table ROM the chip stores) added."""
    out = dict(report, descriptor_bits=int(bits))
    for k in ("other_bits", "table_bits", "stored_bits"):
        out[k] = report[k] + int(bits)
    dense = report["weights"]
    out["rate_vs_int8"] = 8 * dense / out["stored_bits"]
    out["rate_vs_fp32"] = 32 * dense / out["stored_bits"]
    return out


def compress(model="default", scheme: str = "dense", options: dict | None = None, out=None,
             progress: bool = True, log=print, array=None, descriptor=None) -> dict:
    """Compress a model for an array (``"RxC"`` or :class:`ArrayConfig`, default 4x4) and write manifest +
    ROMs + reference vectors + report.json into ``out``; returns the report.

    ``descriptor``: ``(model, packed, array) -> table or None``, the hardware's per-layer descriptor table of the
    model (:func:`sparsyn.hw.descriptor.manifest_descriptor`; the command line passes it, the library does not
    import the hardware): written into the manifest, its bits counted in the stored bits."""
    scheme_obj = get_scheme(scheme)(array=array, **(options or {}))  # validate the scheme and options first
    if out is not None:
        check_out_dir(out)                     # before any work: never replace what sparsyn did not write
    module, name = load_model(model, progress=progress)
    if out is None:
        from .paths import work_dir
        out = work_dir() / "compressed" / f"{name}-{scheme}"
    data = digits()
    qmodel, packed, report = compress_model(module, scheme_obj, data, progress=progress, log=log, name=name)
    table = descriptor(qmodel, packed, scheme_obj.array) if descriptor is not None else None
    if table is not None:
        report = with_descriptor(report, table.bits)
    summary = {k: report[k] for k in ("accuracy", *BIT_COLUMNS, "rate_vs_int8", "rate_vs_fp32")}
    report["manifest"] = str(Path(out).expanduser().resolve() / MANIFEST_NAME)
    write_manifest(Path(out), qmodel, packed, scheme, scheme_obj.opts, scheme_obj.array,
                   reference=reference_vectors(qmodel, data), extra={"report": summary},
                   files={"report.json": json_text(report)},
                   descriptor=(table.rom(), table.meta()) if table is not None else None)
    return report
