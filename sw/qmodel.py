"""The integer model: the layer list every scheme, the golden model, the manifest and the RTL share.

A conv layer's weights (N filters x C_in x kh x kw) are held as an N x K integer matrix with
``K = C_in*kh*kw`` in PyTorch's flatten order ``k = (c*kh + dy)*kw + dx``; a Linear layer is a 1x1
conv over a 1x1 image whose C_in is the input length (so Flatten of a C,H,W tensor is free: it
is already the activation buffer's address order ``c*H*W + y*W + x``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def axis_pair(v) -> tuple[int, int]:
    """An int or a 2-sequence (PyTorch's stride / padding argument) as (rows, columns)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected one int or two (rows, columns), got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def axis_pair_or_int(v) -> int | tuple[int, int]:
    """:func:`axis_pair`, as one int when both axes agree (how a square layer is written everywhere)."""
    a, b = axis_pair(v)
    return a if a == b else (a, b)


@dataclass
class QuantLayer:
    """One Conv2d or Linear layer with integer weights and per-channel requantization.

    Attributes
    ----------
    kind : ``"conv"`` or ``"linear"``
    in_shape, out_shape : (C, H, W) of the int8 activation tensors (Linear: (K, 1, 1) / (N, 1, 1)).
    kernel, stride, padding : conv geometry (Linear: (1, 1), 1, 0). Zero padding. ``stride`` / ``padding`` are
        one int when both axes agree, else ``(sh, sw)`` / ``(ph, pw)`` (rows, columns; normalised on creation, so
        a square layer always holds ints); :attr:`stride_hw` / :attr:`padding_hw` give both axes.
    weight : int64 array N x K, the *effective* integer weights the golden model multiplies with.
    bias : int64 array N, added to the accumulator before requantization.
    mult, shift : int64 arrays N, requantization constants (see :mod:`sparsyn.sw.requant`).
    relu : ReLU fused into the output clamp.
    in_scale, out_scale : real value of one activation LSB at input / output.
    weight_scale : float array N, real value of one weight LSB per output channel.
    weight_bits : signed width of the weight values (8 for int8, 2 for ternary).
    scheme : name of the compression scheme whose ROM holds this layer.
    groups : 1, or the group count of a depthwise conv (groups = input channels; output channel ``o`` reads input
        channel ``o // (N / groups)``). Such a layer is held as the block-diagonal N x K matrix it is (zero outside
        each output channel's own kh x kw block), so the golden model, the ROMs and the RTL treat it as a
        regular conv; ``groups`` only records what it was (:attr:`depthwise`).
    """
    name: str
    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: int
    padding: int
    weight: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    relu: bool
    in_scale: float
    out_scale: float
    weight_scale: np.ndarray
    weight_bits: int = 8
    scheme: str = "dense"
    extra: dict[str, Any] = field(default_factory=dict)
    groups: int = 1
    inputs: tuple[str, ...] = ()

    def __post_init__(self):
        self.stride = axis_pair_or_int(self.stride)
        self.padding = axis_pair_or_int(self.padding)

    @property
    def stride_hw(self) -> tuple[int, int]:
        """(sh, sw): the stride along the rows (y) and the columns (x)."""
        return axis_pair(self.stride)

    @property
    def padding_hw(self) -> tuple[int, int]:
        """(ph, pw): the zero padding above/below (y) and left/right (x)."""
        return axis_pair(self.padding)

    @property
    def depthwise(self) -> bool:
        """A depthwise conv (groups = input channels > 1) held as its block-diagonal matrix."""
        return self.groups > 1

    @property
    def n(self) -> int:
        return self.weight.shape[0]

    @property
    def k(self) -> int:
        return self.weight.shape[1]

    @property
    def pixels(self) -> int:
        """Output positions per image (Ho*Wo)."""
        return self.out_shape[1] * self.out_shape[2]

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates per image."""
        return self.n * self.k * self.pixels

    def k_decode(self, k: int) -> tuple[int, int, int]:
        """K index -> (input channel, kernel row, kernel column)."""
        kh, kw = self.kernel
        return k // (kh * kw), (k // kw) % kh, k % kw


@dataclass
class MaxPoolLayer:
    """MaxPool2d on int8 activations (padding counts as -128, i.e. never selected)."""
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    padding: int = 0
    kind: str = "maxpool"
    inputs: tuple[str, ...] = ()


@dataclass
class FlattenLayer:
    """Flatten (C,H,W) -> (C*H*W,1,1): a no-op on the activation buffer, kept for the record."""
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kind: str = "flatten"
    inputs: tuple[str, ...] = ()


@dataclass
class AvgPoolLayer:
    """AvgPool2d (zero padding only) or AdaptiveAvgPool2d(1) on int8 activations, as sum + integer requant.

    Output ``(c, oy, ox)`` sums the ``kh x kw`` window at ``(oy*sh, ox*sw)`` and requantizes the sum with one
    ``(mult, shift)`` ~= 1/(kh*kw) (:mod:`sparsyn.sw.requant`'s contract, clamp to [-128, 127], or [0, 127] with
    ``relu``): ``y = clamp((sum*mult + 2**(shift-1)) >> shift)``. The output scale equals the input scale.
    Rows / columns beyond the last whole window are not read (PyTorch's floor), so DS-CNN's 24x5 window over a
    25x5 map ignores the last row. ``kernel`` / ``stride`` are (rows, columns).
    """
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    mult: int
    shift: int
    relu: bool = False
    kind: str = "avgpool"
    inputs: tuple[str, ...] = ()

    def __post_init__(self):
        self.kernel, self.stride = axis_pair(self.kernel), axis_pair(self.stride)
        self.mult, self.shift = int(self.mult), int(self.shift)

    @property
    def area(self) -> int:
        return self.kernel[0] * self.kernel[1]


@dataclass
class AddLayer:
    """Residual add of two int8 tensors of the same shape but different scales.

    ``y = clamp((a*mult_a + b*mult_b + 2**(shift-1)) >> shift)`` (clamp [-128, 127], [0, 127] with ``relu``):
    each branch is rescaled to the output scale by its own integer multiplier over one common shift.
    ``inputs`` names the two layers (or :data:`MODEL_INPUT`) whose outputs are ``a`` and ``b``.
    """
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    inputs: tuple[str, ...]
    mult_a: int
    mult_b: int
    shift: int
    relu: bool = False
    out_scale: float = 1.0
    kind: str = "add"

    def __post_init__(self):
        self.inputs = tuple(self.inputs)
        self.mult_a, self.mult_b, self.shift = int(self.mult_a), int(self.mult_b), int(self.shift)


#: The name a layer's ``inputs`` use for the model's input tensor.
MODEL_INPUT = "@input"


@dataclass
class QuantModel:
    """An integer network: quantize the input with ``input_scale``, then run ``layers`` in order."""
    name: str
    input_shape: tuple[int, int, int]
    input_scale: float
    layers: list
    classes: int

    @property
    def compute_layers(self) -> list[QuantLayer]:
        return [layer for layer in self.layers if isinstance(layer, QuantLayer)]

    def sources(self, index: int) -> tuple[str, ...]:
        """The tensors layer ``index`` reads: its ``inputs``, or the layer before it (:data:`MODEL_INPUT` for
        the first). Every layer's output is the tensor of its name; the model's output is the last layer's."""
        layer = self.layers[index]
        if layer.inputs:
            return tuple(layer.inputs)
        return (self.layers[index - 1].name,) if index else (MODEL_INPUT,)

    @property
    def is_chain(self) -> bool:
        """Every layer reads the one before it (no branch, no add): what a streaming engine runs."""
        return all(self.sources(i) == ((self.layers[i - 1].name,) if i else (MODEL_INPUT,))
                   for i in range(len(self.layers)))

    def layer(self, name: str):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)
