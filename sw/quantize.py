"""Post-training quantization, calibrated on the training set.

* input and activations: symmetric int8, zero point 0, scale = max|activation| / 127 over the
  calibration set (ReLU outputs therefore use codes 0..127);
* weights: the scheme's ``quantize_weights`` (default: per-output-channel symmetric int8), giving a
  per-channel weight scale s_w;
* bias: int32 codes ``round(b / (s_in * s_w))``;
* requantization: ``mult * 2**-shift ~= s_in * s_w / s_out`` per channel (:mod:`.requant`), so any
  weight scale — e.g. a ternary layer's alpha — is folded into the integer requantization.
"""
from __future__ import annotations

import numpy as np
import torch

from .data import Dataset
from .errors import SparsynError
from .importer import FloatLayer, import_model, run_float
from .qmodel import MODEL_INPUT, AddLayer, AvgPoolLayer, FlattenLayer, MaxPoolLayer, QuantLayer, QuantModel
from .requant import ACC_BITS, ACT_MAX, choose_multiplier
from .schemes.base import Scheme, quantize_int8_per_channel


def _scale(t: torch.Tensor) -> float:
    m = float(t.abs().max())
    return m / ACT_MAX if m > 0 else 1.0


def quantize_layers(layers: list[FloatLayer], calib_x: torch.Tensor, scheme: Scheme | None,
                    name: str = "model", classes: int | None = None) -> QuantModel:
    """Quantize an imported float layer list; ``scheme`` quantizes the weights of the layers it applies to.

    Each tensor has one scale: the input's and every conv / linear / add output's calibrated here; pools and
    flatten keep their input's. A layer's input scale is the scale of the tensor it reads (a graph's branches
    each keep theirs; a residual add rescales both to its own output scale)."""
    with torch.no_grad():
        outs = run_float(layers, calib_x, collect=True)
    in_scale = _scale(calib_x)
    scale_of = {MODEL_INPUT: in_scale}
    compute = [l for l in layers if l.kind in ("conv", "linear")]
    q, ci, prev = [], 0, MODEL_INPUT
    for l, out in zip(layers, outs):
        srcs = l.inputs or (prev,)
        s_in = scale_of[srcs[0]]
        s_out = s_in
        if l.kind in ("conv", "linear"):
            s_out = _scale(out)
            if scheme is not None and scheme.applies_to(ci, l.kind, len(compute), tuple(l.kernel)):
                w_int, s_w, bits = scheme.quantize_weights(ci, l.weight)
                layer_scheme = scheme.name
            else:
                w_int, s_w, bits = quantize_int8_per_channel(l.weight)
                layer_scheme = "dense"
            w_int = np.asarray(w_int, dtype=np.int64)
            s_w = np.asarray(s_w, dtype=np.float64)
            bias = np.floor(l.bias / (s_in * s_w) + 0.5).astype(np.int64)
            bound = np.abs(w_int).sum(axis=1) * 128 + np.abs(bias)
            if bound.max() >= 2 ** (ACC_BITS - 1):
                raise SparsynError(f"layer '{l.name}' could overflow the {ACC_BITS}-bit accumulator "
                                   f"(worst case {int(bound.max())}); reduce its fan-in or weight range")
            mults, shifts = zip(*(choose_multiplier(s_in * float(sw) / s_out) for sw in s_w))
            q.append(QuantLayer(
                name=l.name, kind=l.kind, in_shape=l.in_shape, out_shape=l.out_shape, kernel=tuple(l.kernel),
                stride=l.stride, padding=l.padding, weight=w_int, bias=bias,
                mult=np.array(mults, dtype=np.int64), shift=np.array(shifts, dtype=np.int64), relu=l.relu,
                in_scale=s_in, out_scale=s_out, weight_scale=s_w, weight_bits=int(bits), scheme=layer_scheme,
                groups=l.groups, inputs=tuple(l.inputs)))
            ci += 1
        elif l.kind == "maxpool":
            k, s, p = l.pool
            q.append(MaxPoolLayer(l.name, l.in_shape, l.out_shape, k, s, p, inputs=tuple(l.inputs)))
        elif l.kind == "avgpool":
            mult, shift = choose_multiplier(1.0 / (l.kernel[0] * l.kernel[1]))
            q.append(AvgPoolLayer(l.name, l.in_shape, l.out_shape, l.kernel, l.stride, mult, shift,
                                  inputs=tuple(l.inputs)))
        elif l.kind == "add":
            s_out = _scale(out)
            q.append(add_layer(l.name, l.in_shape, tuple(l.inputs), scale_of[srcs[0]], scale_of[srcs[1]], s_out,
                               l.relu))
        elif l.kind == "flatten":
            q.append(FlattenLayer(l.name, l.in_shape, l.out_shape, inputs=tuple(l.inputs)))
        scale_of[l.name] = s_out
        prev = l.name
    out_n = int(np.prod(layers[-1].out_shape))
    return QuantModel(name, tuple(layers[0].in_shape), in_scale, q, classes or out_n)


def add_layer(name: str, shape, inputs, s_a: float, s_b: float, s_out: float, relu: bool) -> AddLayer:
    """The residual add of tensors of scales ``s_a`` and ``s_b`` into scale ``s_out``: both rescales over the
    shift that gives the larger ratio a full :data:`~sparsyn.sw.requant.MULT_BITS`-bit multiplier."""
    ra, rb = s_a / s_out, s_b / s_out
    big, shift = choose_multiplier(max(ra, rb))
    small = int(np.floor(min(ra, rb) * 2.0 ** shift + 0.5))
    ma, mb = (big, small) if ra >= rb else (small, big)
    return AddLayer(name, tuple(shape), tuple(shape), tuple(inputs), ma, mb, shift, relu, s_out)


def quantize_model(module, data: Dataset, scheme: Scheme | None = None, name: str = "model") -> QuantModel:
    """Import ``module`` (torch.fx) and quantize it, calibrating on ``data.train_x``."""
    layers = import_model(module, data.input_shape)
    return quantize_layers(layers, data.train_x, scheme, name, data.classes)
