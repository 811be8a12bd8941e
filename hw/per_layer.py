"""Per-layer constants of a datapath that several layers share, selected by the active layer.

The LayerEngine's components are elaborated for a list of layer plans. With one plan every per-layer
value is a constant, exactly as in a single-layer engine; with several (the sequenced model engine,
one datapath reused layer after layer) a value that differs between the layers becomes a small
multiplexer over their constants, switched by the ``layer`` input (held stable while a layer runs).
Values that all layers share stay constants, so a single-layer engine pays nothing.
"""
from __future__ import annotations

from typing import Sequence

from amaranth.hdl import Const, Shape, Signal, Value

from .mux import mux_tree


def stream_members(count: int, inputs=("i",)) -> dict:
    """The ports of a unit streaming int8 CHW tensors for ``count`` layers that share it: one ``In`` stream per
    name in ``inputs``, the ``o`` stream out, and a ``layer_index`` input when several layers share the unit."""
    from amaranth.hdl import signed
    from amaranth.lib import stream
    from amaranth.lib.wiring import In, Out

    from .layouts import ACT_BITS
    return {**({"layer_index": In(range(count))} if count > 1 else {}),
            **{name: In(stream.Signature(signed(ACT_BITS))) for name in inputs},
            "o": Out(stream.Signature(signed(ACT_BITS)))}


def as_list(plans) -> list:
    """A single plan (or layer) as a one-element list; a sequence as a list."""
    return list(plans) if isinstance(plans, (list, tuple)) else [plans]


def layer_name(item) -> str:
    """The name of a layer given as its name, a layer (``name``) or a plan (``layer.name``)."""
    if isinstance(item, str):
        return item
    inner = getattr(item, "layer", None)
    return inner.name if inner is not None and hasattr(inner, "name") else item.name


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
        The active layer's index into ``layers`` (``None``: a single layer, every value is a constant).
    layers : the layers (their names, or objects with ``name`` / ``layer.name``: plans, layers, pools).
    owner : the component selecting (its class names the fields in a descriptor table).

    Inside a :func:`~sparsyn.hw.descriptor.descriptor_scope` (the sequenced engine's datapath) a value that
    differs between layers is a field of the descriptor table, read at the active layer's step; elsewhere
    (a per-layer datapath in a test, or the recording elaboration) a multiplexer over the constants.
    """

    def __init__(self, m, layer: Value | None, layers, owner=None):
        from .descriptor import current_scope
        self.names = [layer_name(x) for x in as_list(layers)]
        self.m, self.layer, self.count = m, layer, len(self.names)
        if (layer is None) != (self.count == 1):
            raise ValueError("a layer index is needed exactly when there is more than one layer")
        self.scope = current_scope() if self.count > 1 else None
        self.key = self.scope.owner_key(owner if owner is not None else "select") if self.scope else None
        self.port = None

    def _step_address(self):
        """The table word of the active layer: its step (the layer index mapped to the sequence)."""
        steps = [self.scope.step_of(n) for n in self.names]
        port = self.scope.memory.read_port(domain="comb")
        if steps == list(range(len(steps))) and len(port.addr) >= len(self.layer):
            self.m.d.comb += port.addr.eq(self.layer)
        else:
            self.m.d.comb += port.addr.eq(mux_tree(self.layer, [Const(s, len(port.addr)) for s in steps]))
        return port

    def __call__(self, values: Sequence[int], shape=None, name: str | None = None) -> Value:
        """``values[layer]``: a constant when all values are equal, else a switch over the layer index (or, in a
        descriptor scope, the field ``<owner>.<name>`` of the descriptor table)."""
        values = [int(v) for v in values]
        if len(values) != self.count:
            raise ValueError(f"{len(values)} values for {self.count} layers")
        shape = Shape.cast(shape) if shape is not None else value_shape(values)
        if len(set(values)) == 1:
            return Const(values[0], shape)
        sig = Signal(shape, name=name)
        scope = self.scope
        if scope is not None and name is None:
            raise ValueError("a per-layer value in a descriptor scope needs a name")
        if scope is not None and scope.table is not None:
            if self.port is None:
                self.port = self._step_address()
            self.m.d.comb += sig.eq(scope.read(f"{self.key}.{name}", shape, self.names, values, self.port))
            return sig
        if scope is not None:
            scope.record(f"{self.key}.{name}", shape, self.names, values)
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
