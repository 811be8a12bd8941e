"""The PE datapath of an array that several layers share: each distinct datapath of those layers once,
the active layer's product selected."""
from __future__ import annotations

import json

from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned

from sparsyn.sw.schemes import PackedLayer

from .mux import mux_tree
from .schemes.base import ProductUnit, make_product

#: Packing metadata that describes the layer's size or schedule, not its PE datapath.
_LAYER_FIELDS = {"n", "k", "in_channels", "kernel", "sections", "passes", "stats", "implicit_rows", "feed"}


def product_key(packed: PackedLayer) -> str:
    """Layers with the same key get the same PE datapath (scheme, datapath options, decode tables)."""
    meta = {k: v for k, v in packed.meta.items() if k not in _LAYER_FIELDS}
    tables = {name: list(packed.roms[name].words) for name in packed.meta.get("tables", {})}
    return json.dumps([packed.scheme, meta, tables], sort_keys=True, default=str)


def _field_values(layout, value: int) -> dict | None:
    """A flat struct entry's integer fields (signed fields sign-extended); None for other layouts."""
    from amaranth.lib import data
    if not isinstance(layout, data.StructLayout):
        return None
    out = {}
    for name, field in layout:
        shape = Shape.cast(field.shape) if not isinstance(field.shape, data.Layout) else None
        if shape is None:
            return None
        raw = (value >> field.offset) & ((1 << shape.width) - 1)
        out[name] = raw - (1 << shape.width) if shape.signed and raw >> (shape.width - 1) else raw
    return out


def convert_entry(src, dst, value: int) -> int | None:
    """Entry ``value`` of layout ``src`` as an entry of layout ``dst`` (the same fields, widened — what
    :func:`~.per_layer.convert_bits` does in hardware); None if a nonzero field has no place in ``dst``."""
    fields = _field_values(src, value)
    if fields is None or _field_values(dst, 0) is None:
        return None
    out = 0
    for name, v in fields.items():
        if name not in dst.members:
            if v:
                return None
            continue
        f = dst[name]
        shape = Shape.cast(f.shape)
        lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
        if not lo <= v <= hi:
            return None
        out |= (v & ((1 << shape.width) - 1)) << f.offset
    return out


#: Entries of at most this many bits are checked exhaustively when one datapath may run another's layers.
_ABSORB_BITS = 12


def absorbs(target: PackedLayer, other: PackedLayer) -> bool:
    """Whether ``target``'s PE datapath computes every entry of ``other``'s exactly: for each of ``other``'s entry
    values, converted field by field into ``target``'s entry layout, the software specs' coefficients agree lane
    for lane (``target``'s extra lanes 0) — checked exhaustively (e.g. a dense int8 first layer on the mux-input PE
    of tight / packcnn: weight w at lane 0). The PE phases must agree."""
    from sparsyn.sw.schemes import get_scheme
    a, b = get_scheme(other.scheme), get_scheme(target.scheme)
    if a.pe_phases(other) != b.pe_phases(target) or b.lanes(target) < a.lanes(other):
        return False
    src, dst = a.entry_layout(other), b.entry_layout(target)
    if Shape.cast(src).width > _ABSORB_BITS:
        return False
    for v in range(1 << Shape.cast(src).width):
        w = convert_entry(src, dst, v)
        if w is None:
            return False
        want = tuple(a.entry_coefficients(other, v))
        got = tuple(b.entry_coefficients(target, w))
        if got != want + (0,) * (len(got) - len(want)):
            return False
    return True


def datapath_kinds(packed_layers: list[PackedLayer]) -> tuple[list[PackedLayer], list[int]]:
    """The distinct PE datapaths of ``packed_layers`` (one representative packed layer each) and, per
    layer, the index of its datapath. A datapath that :func:`absorbs` another's layers runs them too (their
    entries converted field by field on the way to the PE), so e.g. a dense first layer needs no multipliers of
    its own next to a tight / packcnn array."""
    keys, reps, kind = {}, [], []
    for p in packed_layers:
        key = product_key(p)
        if key not in keys:
            keys[key] = len(reps)
            reps.append(p)
        kind.append(keys[key])
    merged = list(range(len(reps)))
    for i, rep in enumerate(reps):
        for j, other in enumerate(reps):
            if i != j and merged[j] == j and merged[i] == i and absorbs(other, rep):
                merged[i] = j
                break
    keep = sorted(set(merged))
    return [reps[k] for k in keep], [keep.index(merged[k]) for k in kind]


def entry_targets(packed_layers: list[PackedLayer]) -> list:
    """Per layer, the entry layout of the datapath that runs it (its own, or the absorbing datapath's)."""
    from sparsyn.sw.schemes import get_scheme
    reps, kind = datapath_kinds(packed_layers)
    return [get_scheme(reps[k].scheme).entry_layout(reps[k]) for k in kind]


class SharedProduct(ProductUnit):
    """One PE datapath per distinct kind, fed the same entry bits and activations; ``product`` is the active
    layer's (latency 0 like every datapath, or 1 with ``registered``).

    The entry is the widest kind's entry width of raw bits (each kind reads its own layout from the low
    bits), ``x`` the most lanes of any kind (each reads its first L). Every vector is held for the most phases of
    any kind (``phases``); a kind with fewer contributes 0 in the phases beyond its own.

    Parameters
    ----------
    products : list[ProductUnit] — one per kind, for this PE's position.
    kind : list[int] — per layer, the index of its datapath in ``products``.
    registered : bool — register each kind's product before the selection (latency 1 instead of 0; a pipelined PE
        then adds no product register of its own).

    Attributes
    ----------
    layer : In(range(len(kind))) — the active layer (stable while it runs).
    """

    def __init__(self, products: list[ProductUnit], kind: list[int], *, registered: bool = False):
        self.products, self.kind = list(products), [int(k) for k in kind]
        #: each kind's product is registered before the selection (latency 1): the multipliers feed registers
        #: directly, so yosys packs those into the DSP blocks and nextpnr times the paths
        self.registered = bool(registered)
        entry = max(Shape.cast(p.signature.members["entry"].shape).width for p in self.products)
        # every step is held for the most phases any datapath needs; one with fewer adds 0 in its extra phases
        super().__init__(unsigned(entry), max(p.lanes for p in self.products),
                         max(p.product_width for p in self.products), max(p.phases for p in self.products),
                         layers=len(self.kind))

    def elaborate(self, platform):
        m = Module()
        outs = []
        for i, p in enumerate(self.products):
            m.submodules[f"kind{i}"] = p
            size = Shape.cast(p.signature.members["entry"].shape).width
            m.d.comb += Value.cast(p.entry).eq(Value.cast(self.entry)[:size])
            m.d.comb += [p.x[l].eq(self.x[l]) for l in range(p.lanes)]
            out = p.product
            if p.phases > 1:
                m.d.comb += p.phase.eq(self.phase)
            if p.phases < self.phases:
                out = Mux(self.phase < p.phases, p.product, 0)
            if self.registered:
                reg = Signal.like(p.product, name=f"kind{i}_product", reset_less=True)
                m.d.sync += reg.eq(out)
                out = reg
            outs.append(out)
        if len(outs) == 1:
            m.d.comb += self.product.eq(outs[0])
            return m
        m.d.comb += self.product.eq(mux_tree(self.layer, [outs[k] for k in self.kind]))
        return m


def shared_product_factory(packed_layers: list[PackedLayer]):
    """``factory(position) -> ProductUnit`` for an array shared by ``packed_layers`` (one layer: its own datapath)."""
    reps, kind = datapath_kinds(packed_layers)
    if len(packed_layers) == 1:
        return lambda position: make_product(packed_layers[0], position)
    return lambda position: SharedProduct([make_product(p, position) for p in reps], kind, registered=True)


__all__ = ["SharedProduct", "absorbs", "convert_entry", "datapath_kinds", "entry_targets", "product_key",
           "shared_product_factory"]
