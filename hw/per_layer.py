"""Per-layer constants of a datapath that several layers share, selected by the active layer.

The LayerEngine's components are elaborated for a list of layer plans. With one plan every per-layer
value is a constant, exactly as in a single-layer engine; with several (the sequenced model engine,
one datapath reused layer after layer) a value that differs between the layers becomes a small
multiplexer over their constants, switched by the ``layer`` input (held stable while a layer runs).
Values that all layers share stay constants, so a single-layer engine pays nothing.
"""
from __future__ import annotations

import operator
from typing import Sequence

from amaranth.hdl import Const, Shape, Signal, Value

from .mux import mux_tree


def as_list(plans) -> list:
    """A single plan (or layer) as a one-element list; a sequence as a list."""
    return list(plans) if isinstance(plans, (list, tuple)) else [plans]


def value_shape(values: Sequence[int]) -> Shape:
    """The smallest shape holding every value (signed if any is negative)."""
    lo, hi = min(values), max(values)
    return Shape.cast(range(min(lo, 0), max(hi, 0) + 1))


class LayerSelect:
    """Picks one of per-layer constants by the active layer.

    Parameters
    ----------
    m : Module the selection logic goes into.
    layer : Value or None
        The active layer's index (``None``: a single layer, every value is a constant).
    count : int
        Number of layers.
    """

    def __init__(self, m, layer: Value | None, count: int):
        self.m, self.layer, self.count = m, layer, operator.index(count)
        if (layer is None) != (self.count == 1):
            raise ValueError("a layer index is needed exactly when there is more than one layer")

    def __call__(self, values: Sequence[int], shape=None, name: str | None = None) -> Value:
        """``values[layer]``: a constant when all values are equal, else a switch over the layer index."""
        values = [int(v) for v in values]
        if len(values) != self.count:
            raise ValueError(f"{len(values)} values for {self.count} layers")
        shape = Shape.cast(shape) if shape is not None else value_shape(values)
        if len(set(values)) == 1:
            return Const(values[0], shape)
        sig = Signal(shape, name=name)
        # a tree of Mux (continuous assignments), not a Switch: an ``always @*`` case whose inputs do not change
        # after time 0 stays X in Icarus (see :func:`sparsyn.hw.mux.mux_tree`)
        self.m.d.comb += sig.eq(mux_tree(self.layer, [Const(v, shape) for v in values]))
        return sig

    def flag(self, values: Sequence[bool], name: str | None = None) -> Value:
        return self([int(bool(v)) for v in values], 1, name)


def convert_bits(src, dst, bits: Value) -> Value:
    """``bits`` (a word of layout ``src``) re-packed as a word of layout ``dst``: the same struct fields /
    array elements, each widened (zero- or sign-extended) to its ``dst`` width; elements ``dst`` has beyond
    ``src``'s length are 0. Layouts of the layers that share a datapath differ only in such widths."""
    from amaranth.lib import data
    from amaranth.hdl import Cat
    if isinstance(dst, data.StructLayout):
        parts = []
        for name, field in sorted(dst, key=lambda item: item[1].offset):
            if name in src.members:
                sf = src[name]
                parts.append(convert_bits(sf.shape, field.shape, bits[sf.offset:sf.offset + sf.width]))
            else:
                parts.append(Const(0, Shape.cast(field.shape).width))
        return Cat(*parts)
    if isinstance(dst, data.ArrayLayout):
        ew = Shape.cast(src.elem_shape).width if isinstance(src, data.ArrayLayout) else 0
        parts = []
        for i in range(dst.length):
            if isinstance(src, data.ArrayLayout) and i < src.length:
                parts.append(convert_bits(src.elem_shape, dst.elem_shape, bits[i * ew:(i + 1) * ew]))
            else:
                parts.append(Const(0, Shape.cast(dst.elem_shape).width))
        return Cat(*parts)
    dw, sw = Shape.cast(dst).width, Shape.cast(src).width
    if dw <= sw:
        return bits[:dw]
    fill = bits[sw - 1].replicate(dw - sw) if Shape.cast(src).signed and sw else Const(0, dw - sw)
    return Cat(bits[:sw], fill)


def select_word(m, layer, raw: Value, layouts: Sequence, dst, name: str | None = None) -> Value:
    """A word of layout ``dst`` from ``raw``, which holds a word of ``layouts[layer]`` in its low bits."""
    layouts = list(layouts)
    sig = Signal(dst, name=name)
    words = [convert_bits(lay, dst, raw[:Shape.cast(lay).width]) for lay in layouts]
    m.d.comb += sig.as_value().eq(words[0] if len(words) == 1 else mux_tree(layer, words))
    return sig
