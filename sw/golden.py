"""The golden model: pure-integer PyTorch (int64, no float anywhere) defining the numeric contract.

Every RTL bench compares against :func:`run_golden`. :func:`run_int8_reference` computes the same
network with float64 PyTorch ops on integer-valued tensors (exact below 2**53) — the "int8 model"
whose accuracy we report — and must agree with the golden model bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .qmodel import MODEL_INPUT, AddLayer, AvgPoolLayer, FlattenLayer, MaxPoolLayer, QuantLayer, QuantModel
from .requant import ACT_MAX, ACT_MIN, requantize


def quantize_input(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Float input -> int8 activation codes (round half up, clamp); the only float step, done once in software."""
    return torch.clamp(torch.floor(x.double() / scale + 0.5), ACT_MIN, ACT_MAX).to(torch.int64)


def im2col(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) int64 -> (B, Ho*Wo, K) with K ordered as the weight matrix columns; zero padding (ph rows
    above and below, pw columns left and right), stride sh down the rows, sw along them."""
    kh, kw = layer.kernel
    (ph, pw), (sh, sw) = layer.padding_hw, layer.stride_hw
    b = x.shape[0]
    x = x.reshape(b, *layer.in_shape)
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph), value=0)
    cols = x.unfold(2, kh, sh).unfold(3, kw, sw)               # B, C, Ho, Wo, kh, kw
    ho, wo = cols.shape[2], cols.shape[3]
    assert (layer.out_shape[1], layer.out_shape[2]) == (ho, wo), (layer.name, ho, wo)
    return cols.permute(0, 2, 3, 1, 4, 5).reshape(b, ho * wo, -1)


def layer_accumulators(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """Wide accumulators (B, N, Ho, Wo) = W . im2col(x) + bias, in int64."""
    cols = im2col(layer, x)
    w = torch.as_tensor(layer.weight, dtype=torch.int64)
    acc = cols @ w.T + torch.as_tensor(layer.bias, dtype=torch.int64)  # B, P, N
    b = x.shape[0]
    return acc.permute(0, 2, 1).reshape(b, *layer.out_shape)


def avgpool_sums(layer: AvgPoolLayer, x: torch.Tensor) -> torch.Tensor:
    """(B, C, Ho, Wo) window sums of an average-pool layer (rows / columns past the last whole window unread)."""
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    x = x.reshape(x.shape[0], *layer.in_shape)
    return x.unfold(2, kh, sh).unfold(3, kw, sw).sum(dim=(-1, -2))


def add_accumulators(layer: AddLayer, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a*mult_a + b*mult_b`` (int64) of a residual add, before the shift and clamp."""
    shape = (a.shape[0], *layer.out_shape)
    return a.reshape(shape) * layer.mult_a + b.reshape(shape) * layer.mult_b


def run_layer(layer, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """One layer of the golden model on an int64 batch (B, C, H, W) (an add also takes its second input)."""
    if isinstance(layer, QuantLayer):
        acc = layer_accumulators(layer, x)
        return requantize(acc, layer.mult, layer.shift, layer.relu)
    if isinstance(layer, MaxPoolLayer):
        x = x.reshape(x.shape[0], *layer.in_shape)
        p = layer.padding
        if p:
            x = F.pad(x, (p, p, p, p), value=ACT_MIN)
        win = x.unfold(2, layer.kernel, layer.stride).unfold(3, layer.kernel, layer.stride)
        return win.amax(dim=(-1, -2))
    if isinstance(layer, FlattenLayer):
        return x.reshape(x.shape[0], *layer.out_shape)
    if isinstance(layer, AvgPoolLayer):
        return requantize(avgpool_sums(layer, x), [layer.mult], [layer.shift], layer.relu)
    if isinstance(layer, AddLayer):
        (b,) = more
        return requantize(add_accumulators(layer, x, b), [1], [layer.shift], layer.relu)
    raise TypeError(f"unknown layer {layer!r}")


def layer_inputs(model: QuantModel, index: int, x: torch.Tensor, outs: list) -> list[torch.Tensor]:
    """The tensors layer ``index`` reads, from the model input ``x`` and the outputs so far (``outs``, in layer
    order)."""
    names = {layer.name: i for i, layer in enumerate(model.layers[:index])}
    return [x if src == MODEL_INPUT else outs[names[src]] for src in model.sources(index)]


def run_golden(model: QuantModel, x_int: torch.Tensor) -> list[torch.Tensor]:
    """All layer outputs (int64, each (B, C, H, W)) for an int8-coded input batch (a graph runs in layer order,
    each layer on the tensors it names)."""
    if x_int.dtype != torch.int64:
        raise TypeError("the golden model takes int64 activation codes; use quantize_input()")
    outs = []
    x = x_int.reshape(x_int.shape[0], *model.input_shape)
    for i, layer in enumerate(model.layers):
        outs.append(run_layer(layer, *layer_inputs(model, i, x, outs)))
    return outs


def logits(model: QuantModel, x_int: torch.Tensor) -> torch.Tensor:
    """Final int8 logits (B, classes) of the golden model."""
    return run_golden(model, x_int)[-1].reshape(x_int.shape[0], -1)


def run_int8_reference(model: QuantModel, x_int: torch.Tensor) -> list[torch.Tensor]:
    """The int8 model computed with float64 conv/linear/max-pool ops (exact for these ranges)."""
    outs = []
    x0 = x_int.double().reshape(x_int.shape[0], *model.input_shape)
    for i, layer in enumerate(model.layers):
        x, *more = layer_inputs(model, i, x0, outs)
        if isinstance(layer, QuantLayer):
            c, _, _ = layer.in_shape
            kh, kw = layer.kernel
            w = torch.as_tensor(layer.weight, dtype=torch.float64).reshape(layer.n, c, kh, kw)
            acc = F.conv2d(x.reshape(x.shape[0], *layer.in_shape), w,
                           torch.as_tensor(layer.bias, dtype=torch.float64),
                           stride=layer.stride, padding=layer.padding)
            m = torch.as_tensor(layer.mult, dtype=torch.float64).view(1, -1, 1, 1)
            s = torch.pow(2.0, torch.as_tensor(layer.shift, dtype=torch.float64)).view(1, -1, 1, 1)
            y = torch.floor((acc * m + s / 2) / s)
            x = y.clamp(0 if layer.relu else ACT_MIN, ACT_MAX)
        elif isinstance(layer, MaxPoolLayer):
            x = F.max_pool2d(x.reshape(x.shape[0], *layer.in_shape), layer.kernel, layer.stride, layer.padding)
        elif isinstance(layer, FlattenLayer):
            x = x.reshape(x.shape[0], *layer.out_shape)
        elif isinstance(layer, AvgPoolLayer):
            (kh, kw), s = layer.kernel, 2.0 ** layer.shift
            total = F.avg_pool2d(x.reshape(x.shape[0], *layer.in_shape), layer.kernel, layer.stride) * (kh * kw)
            x = torch.floor((torch.round(total) * layer.mult + s / 2) / s).clamp(0 if layer.relu else ACT_MIN, ACT_MAX)
        elif isinstance(layer, AddLayer):
            s = 2.0 ** layer.shift
            acc = x.reshape(x.shape[0], *layer.out_shape) * layer.mult_a + more[0].reshape(x.shape[0], *layer.out_shape) * layer.mult_b
            x = torch.floor((acc + s / 2) / s).clamp(0 if layer.relu else ACT_MIN, ACT_MAX)
        outs.append(x)
    return [o.to(torch.int64) for o in outs]


@dataclass
class Mismatch:
    """The first element where two runs differ."""
    layer: str
    image: int
    channel: int
    y: int
    x: int
    expected: int
    actual: int
    count: int  # number of differing elements in that layer

    def __str__(self):
        return (f"mismatch in layer {self.layer}: image {self.image} channel {self.channel} "
                f"position (y={self.y}, x={self.x}): expected {self.expected}, actual {self.actual} "
                f"({self.count} element(s) differ in this layer)")


def first_mismatch(layer_names: list[str], expected: list, actual: list) -> Mismatch | None:
    """Locate the first differing layer/channel/position between two per-layer output lists.

    Each entry is an integer tensor/array of shape (B, C, H, W) (or (C, H, W) for one image).
    Layers missing from ``actual`` (None) are skipped.
    """
    for name, exp, act in zip(layer_names, expected, actual):
        if act is None:
            continue
        exp = np.asarray(exp, dtype=np.int64)
        act = np.asarray(act, dtype=np.int64)
        if exp.ndim == 3:
            exp, act = exp[None], act.reshape((1,) + exp.shape[1:]) if act.ndim == 3 else act
        if exp.shape != act.shape:
            return Mismatch(name, -1, -1, -1, -1, int(np.prod(exp.shape)), int(np.prod(act.shape)), -1)
        diff = np.argwhere(exp != act)
        if len(diff):
            b, c, y, x = (int(v) for v in diff[0])
            return Mismatch(name, b, c, y, x, int(exp[b, c, y, x]), int(act[b, c, y, x]), len(diff))
    return None
