"""The compression pipeline: float model -> scheme.prepare -> int8 quantization -> packed ROMs + manifest."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from .data import Dataset, data_record, describe, digits, load_data
from .errors import SparsynError
from .golden import logits, quantize_input, run_golden, run_int8_reference, first_mismatch
from .importer import import_model, load_model_file
from .manifest import MANIFEST_NAME, REFERENCE_IMAGES, check_out_dir, write_manifest
from .model_zoo import default_model
from .qmodel import AddLayer, AvgPoolLayer, QuantLayer, QuantModel
from .quantize import quantize_model
from .report import json_text
from .schemes import PackedLayer, Scheme, get_scheme
from .schemes.dense import DenseScheme
from .train import accuracy, reconstruction_mse


def int_accuracy(model: QuantModel, data: Dataset) -> float:
    """Top-1 test accuracy (%) of the golden integer model."""
    x = quantize_input(data.test_x, model.input_scale)
    return 100.0 * (logits(model, x).argmax(1) == data.test_y).double().mean().item()


def int_outputs(model: QuantModel, x: torch.Tensor) -> torch.Tensor:
    """The golden integer model's final outputs for float inputs ``x``, dequantized (codes x the last compute
    layer's output scale): (B, outputs) float64."""
    codes = logits(model, quantize_input(x, model.input_scale))
    return codes.double() * model.compute_layers[-1].out_scale


def reconstruction_report(module: torch.nn.Module, work: torch.nn.Module, model: QuantModel, data: Dataset) -> dict:
    """How well a model without labels (an autoencoder) reconstructs the test inputs: the mean squared error of
    the float model, the compressed float model and the integer model (dequantized output) against the input,
    and of the integer model against the float model's output; ``input_variance`` gives the scale."""
    x = data.test_x
    with torch.no_grad():
        ref = module.eval()(x).double()
        prepared = work.eval()(x).double()
    out = int_outputs(model, x)
    return {"metric": "mse", "float": reconstruction_mse(ref, x), "compressed_float": reconstruction_mse(prepared, x),
            "int": reconstruction_mse(out, x), "int_vs_float": reconstruction_mse(out, ref),
            "input_variance": float(x.double().var())}


def _expects(module: torch.nn.Module) -> str:
    """What the model's first Conv2d / Linear takes, for messages."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            return f"its first layer takes {m.in_channels} input channel(s)"
        if isinstance(m, torch.nn.Linear):
            return f"its first layer takes {m.in_features} features"
    return "see its first layer"


def check_model_data(module: torch.nn.Module, data: Dataset, name: str = "model"):
    """Refuse (one line each) a model that cannot be compressed on ``data``: one that does not take the data's
    inputs (naming the data's shape), an unsupported model (the importer: every problem at once), a classifier
    whose outputs are not the data's classes, a model scored without labels that does not reconstruct its input.
    Returns the imported float layers."""
    shape = data.input_shape
    try:
        layers = import_model(module, shape)  # refuse unsupported models before any work
    except SparsynError as refusal:
        # the importer ran the module on the data's shape when it accepted it; when it refuses, say first when
        # the reason is the data: a module that does not take inputs of this shape at all
        n = len(data.train_x) + len(data.test_x)
        try:
            with torch.no_grad():
                module.eval()(data.test_x[:2])
        except TypeError:
            raise refusal from None           # not called like a one-input model: the importer's message
        except Exception as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise SparsynError(f"model {name} does not take the data's inputs: x is {n}×{'×'.join(map(str, shape))} "
                               f"(one sample: {shape}) and running it fails ({first}); {_expects(module)}: give "
                               "data whose samples have the model's input shape") from None
        raise refusal from None
    outputs = int(np.prod(layers[-1].out_shape))
    if data.labelled and outputs != data.classes:
        raise SparsynError(f"model {name} produces {outputs} outputs but the dataset has {data.classes} classes; "
                           "give the model a final layer with one output per class"
                           + ("" if (data.source or {}).get("kind") != "npz" else
                              " (or store classes=N in the .npz when some classes have no samples)"))
    if not data.labelled and outputs != int(np.prod(shape)):
        raise SparsynError(f"model {name} produces {outputs} outputs but the data has no labels (no y): without "
                           f"labels a model is scored by how well it reconstructs its input, which needs "
                           f"{int(np.prod(shape))} outputs; add labels y to the data, or give an autoencoder")
    return layers


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


def operator_constants(layer) -> int:
    """Bits of the constants an average pool (mult, shift) or a residual add (mult_a, mult_b, shift) keeps on the
    chip (its unit's constants; a unit shared by several such layers holds them in the descriptor table)."""
    from .requant import MAX_SHIFT, MULT_BITS
    shift = MAX_SHIFT.bit_length()
    if isinstance(layer, AvgPoolLayer):
        return MULT_BITS + shift
    if isinstance(layer, AddLayer):
        return 2 * MULT_BITS + shift
    return 0


def layer_report(model: QuantModel, packed: dict[str, PackedLayer]) -> list[dict]:
    """Per compute layer: shapes, scheme figures and the stored bits by kind; ``rate_vs_int8`` /
    ``rate_vs_fp32`` count every stored bit, ``weights_rate_vs_int8`` the weight memory only. Average pools and
    residual adds get a row of their constants (:func:`operator_constants`)."""
    rows = []
    for layer in model.layers:
        if operator_constants(layer):
            bits = operator_constants(layer)
            rows.append({"layer": layer.name, "kind": layer.kind, "scheme": "-", "n": 0, "k": 0, "nonzero": 0,
                         "weight_bits": 0, "index_bits": 0, "other_bits": bits, "table_bits": 0,
                         "constant_bits": bits, "stored_bits": bits, "rate_vs_int8": None, "rate_vs_fp32": None,
                         "weights_rate_vs_int8": None})
            continue
        if not isinstance(layer, QuantLayer):
            continue
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
    """A few test inputs (B, C, H, W) and every layer's output from the float64 int8 reference (stored in the
    manifest; an N×F input is stored as (B, F, 1, 1))."""
    x = quantize_input(data.test_x[:images], model.input_scale)
    x = x.reshape(x.shape[0], *model.input_shape)
    outs = run_int8_reference(model, x)
    return {"input": x.numpy(), **{l.name: o.numpy() for l, o in zip(model.layers, outs)}}


def compress_model(module: torch.nn.Module, scheme: Scheme, data: Dataset | None = None,
                   progress: bool = True, log=print, name: str = "model"):
    """Compress ``module`` with ``scheme``: returns (QuantModel, {layer: PackedLayer}, report dict).

    ``data`` (default: the digits): calibration and fine-tuning on its train split, evaluation on its test split.
    With labels the report gives top-1 ``accuracy`` (float, compressed float, integer); without (an
    autoencoder) ``accuracy`` is None and ``reconstruction`` gives the mean squared errors
    (:func:`reconstruction_report`). ``data`` records the data used (:func:`sparsyn.sw.data.data_record`)."""
    data = data or digits()
    t0 = time.time()
    check_model_data(module, data, name)
    float_acc = accuracy(module, data.test_x, data.test_y)
    if not progress and hasattr(scheme, "progress"):
        scheme.progress = False           # --quiet: no training / annealing bars either
    work = copy.deepcopy(module)
    work = scheme.prepare(work, data, log) or work
    prepared_acc = accuracy(work, data.test_x, data.test_y)
    model = quantize_model(work, data, scheme, name=name)
    packed = pack_model(model, scheme)
    check_golden_vs_reference(model, data)
    layers = layer_report(model, packed)
    report = {"model": name, "scheme": scheme.name, "options": scheme.opts,
              "array": {"rows": scheme.array.rows, "cols": scheme.array.cols},
              "data": data_record(data)}
    if data.labelled:
        report["accuracy"] = {"float": float_acc, "compressed_float": prepared_acc, "int": int_accuracy(model, data)}
    else:
        report["accuracy"] = None
        report["reconstruction"] = reconstruction_report(module, work, model, data)
    report.update({"golden_equals_int8_reference": True, "nonzero": sum(r["nonzero"] for r in layers),
                   **model_bits(layers), "layers": layers, "seconds": round(time.time() - t0, 2)})
    history = getattr(scheme, "history", None)
    if history:
        report["history"] = history       # per-step accuracy of the scheme's pruning / training
    return model, packed, report


def load_model(source, progress: bool = True) -> tuple[torch.nn.Module, str]:
    """``"default"`` (the built-in digits CNN; trained on first use, with a bar when ``progress``), ``"zoo:NAME"``
    (a tinyML zoo network trained on its synthetic data, :mod:`sparsyn.sw.zoo`) or a path to a ``torch.save``d
    module."""
    if isinstance(source, torch.nn.Module):
        return source, type(source).__name__
    if str(source) == "default":
        return default_model(progress=progress), "default-digits"
    from .zoo import is_zoo, zoo_entry, zoo_model
    if is_zoo(str(source)):
        entry = zoo_entry(str(source))
        return zoo_model(entry.name, progress=progress), entry.name
    return load_model_file(source), Path(source).stem


def as_dataset(data) -> Dataset | None:
    """``None``, a :class:`Dataset`, or the path of an ``.npz`` file (:func:`sparsyn.sw.data.load_data`)."""
    if data is None or isinstance(data, Dataset):
        return data
    return load_data(data)


def model_and_data(model, data: Dataset | None, progress: bool = True) -> tuple[torch.nn.Module, str, Dataset]:
    """The module to compress, its name and the data to compress it on (``data``, or by default the digits — a
    zoo network's own synthetic data). A zoo network is checked against the data before it is trained (an
    unsupported one is refused at once) and trained on that data (cached)."""
    from .zoo import build_zoo_model, is_zoo, zoo_data, zoo_entry, zoo_model
    if is_zoo(str(model)) and not isinstance(model, torch.nn.Module):
        entry = zoo_entry(str(model))
        data = data if data is not None else zoo_data(entry.name)
        check_model_data(build_zoo_model(entry.name), data, entry.name)
        return zoo_model(entry.name, data, progress=progress), entry.name, data
    module, name = load_model(model, progress=progress)
    return module, name, data if data is not None else digits()


def with_descriptor(report: dict, bits: int) -> dict:
    """The report's model totals with the descriptor table's ``bits`` (a table ROM the chip stores) added."""
    out = dict(report, descriptor_bits=int(bits))
    for k in ("other_bits", "table_bits", "stored_bits"):
        out[k] = report[k] + int(bits)
    dense = report["weights"]
    out["rate_vs_int8"] = 8 * dense / out["stored_bits"]
    out["rate_vs_fp32"] = 32 * dense / out["stored_bits"]
    return out


def check_model_source(model, data: Dataset | None = None) -> None:
    """Refuse before any work (one line) what :func:`compress` would refuse about ``model`` and ``data``: a model
    file that does not load, an unknown zoo name, a model the importer does not support or that does not fit the
    data. Checks the architecture only (the default CNN and zoo networks untrained): nothing is trained."""
    from .model_zoo import build_default_model
    from .zoo import build_zoo_model, is_zoo, zoo_data, zoo_entry
    if isinstance(model, torch.nn.Module):
        module, name = model, type(model).__name__
    elif str(model) == "default":
        module, name = build_default_model(), "default-digits"
    elif is_zoo(str(model)):
        name = zoo_entry(str(model)).name
        module, data = build_zoo_model(name), data if data is not None else zoo_data(name)
    else:
        module, name = load_model_file(model), Path(model).stem
    check_model_data(module, data if data is not None else digits(), name)


def compress(model="default", scheme: str = "dense", options: dict | None = None, out=None,
             progress: bool = True, log=print, array=None, descriptor=None, data=None) -> dict:
    """Compress a model for an array (``"RxC"`` or :class:`ArrayConfig`, default 4x4) and write manifest +
    ROMs + reference vectors + report.json into ``out``; returns the report.

    ``model``: ``"default"``, ``"zoo:NAME"``, a module file or a module. ``data``: a :class:`Dataset` or the path
    of an ``.npz`` file (:func:`sparsyn.sw.data.load_data`); default the digits (a zoo network: its synthetic
    data). The manifest and the report record which data was used (``data``: kind, file and SHA-256, shapes,
    split), and the reference vectors come from its test split.

    ``descriptor``: ``(model, packed, array) -> table or None``, the hardware's per-layer descriptor table of the
    model (:func:`sparsyn.hw.descriptor.manifest_descriptor`; the command line passes it, the library does not
    import the hardware): written into the manifest, its bits counted in the stored bits."""
    scheme_obj = get_scheme(scheme)(array=array, **(options or {}))  # validate the scheme and options first
    if out is not None:
        check_out_dir(out)                     # before any work: never replace what sparsyn did not write
    module, name, data = model_and_data(model, as_dataset(data), progress=progress)
    if out is None:
        from .paths import work_dir
        out = work_dir() / "compressed" / f"{name}-{scheme}"
    qmodel, packed, report = compress_model(module, scheme_obj, data, progress=progress, log=log, name=name)
    table = descriptor(qmodel, packed, scheme_obj.array) if descriptor is not None else None
    if table is not None:
        report = with_descriptor(report, table.bits)
    summary = {k: report[k] for k in ("accuracy", *BIT_COLUMNS, "rate_vs_int8", "rate_vs_fp32")}
    if "reconstruction" in report:
        summary["reconstruction"] = report["reconstruction"]
    report["manifest"] = str(Path(out).expanduser().resolve() / MANIFEST_NAME)
    source = ("digits test set" if report["data"].get("kind") == "digits" else f"{describe(data)}, test split")
    write_manifest(Path(out), qmodel, packed, scheme, scheme_obj.opts, scheme_obj.array,
                   reference=reference_vectors(qmodel, data), extra={"report": summary, "data": report["data"]},
                   reference_source=f"{source}, first images; outputs of the float64 int8 reference",
                   files={"report.json": json_text(report)},
                   descriptor=(table.rom(), table.meta()) if table is not None else None)
    return report
