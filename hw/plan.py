"""The layer plan: everything about one layer's LayerEngine that is plain data, computed before any
component exists — the memory images (read from the packed layer's ROMs, i.e. the manifest's files),
their word layouts, the pass table, the fit check against the engine's buffers, the bits the design
stores and the exact cycle model. :class:`~sparsyn.hw.engine.LayerEngine` only turns a finished plan
into logic, so its construction cannot fail.

A scheme that brings its own engine supplies its own plan class with the same public face
(:class:`EnginePlan`): ``layer``, ``packed``, ``engine`` (the component class), ``in_elements``,
``out_elements``, ``rom_bits``, ``model`` (static cycle figures) and ``cycles(x)`` (exact per image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sparsyn.sw.array_format import array_layouts, check_constants, pass_table
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer, get_scheme

from . import cycles as cyc
from .layouts import ACC_BITS


@dataclass(frozen=True)
class EngineLimits:
    """Buffer limits of one LayerEngine (defaults sized for an iCE40 UP5K / small ECP5).

    act_elements : int8 activation-buffer entries (C_in*H*W).
    acc_words : accumulator words (Ho*Wo), each C x 32 bit.
    weight_depth : weight-memory words (passes x R).
    out_elements : int8 output-buffer entries (N*Ho*Wo).
    """
    act_elements: int = 8192
    acc_words: int = 1024
    weight_depth: int = 4096
    out_elements: int = 8192


class EnginePlan(Protocol):
    """What every engine's plan offers its users (benches, generators, board tops).

    ``array`` describes the engine's compute resources for utilization figures (the shared array's
    R x C x L; an engine of P PEs with M multipliers each can say ``ArrayConfig(P, 1, M)``); ``model``
    holds at least ``total`` (cycles without data, e.g. the worst case), ``useful_macs`` and
    ``utilization``; ``cycles(x)`` is exact for input ``x`` (flat CHW ints). An engine whose work depends on the
    data (one that skips zero inputs) also offers ``useful_macs(x)``, the MACs it does for input ``x``."""
    layer: QuantLayer
    packed: PackedLayer
    engine: type
    array: ArrayConfig
    model: dict

    @property
    def in_elements(self) -> int: ...

    @property
    def out_elements(self) -> int: ...

    @property
    def rom_bits(self) -> int: ...

    def cycles(self, x=None) -> int: ...


def check_fits(layer: QuantLayer, array: ArrayConfig, passes: int, limits: EngineLimits) -> None:
    """Raise a one-line SparsynError when the layer does not fit the engine's buffers/number formats."""
    r = array.rows
    cin, h, w = layer.in_shape
    checks = [
        ("activation buffer", cin * h * w, limits.act_elements, "input elements (C_in*H*W)",
         "use a smaller input or raise EngineLimits.act_elements"),
        ("accumulator buffer", layer.pixels, limits.acc_words, "words (Ho*Wo)",
         "use a smaller feature map or raise EngineLimits.acc_words"),
        ("weight memory", passes * r, limits.weight_depth, "words (passes x R)",
         "use a larger --array or raise EngineLimits.weight_depth"),
        ("output buffer", layer.n * layer.pixels, limits.out_elements, "elements (N*Ho*Wo)",
         "use fewer output channels or raise EngineLimits.out_elements"),
    ]
    check_limits(layer, checks)


def check_limits(layer: QuantLayer, checks, engine: str = "") -> None:
    """Refuse (one line, need vs limit and the fix) the first of ``checks`` — ``(what, need, have, unit, fix)`` —
    that does not fit ``engine``'s buffers, then a worst-case accumulator beyond 32 bits or constants out of range."""
    for what, need, have, unit, fix in checks:
        if need > have:
            raise SparsynError(f"layer {layer.name} does not fit the {engine + ' ' if engine else ''}{what}: needs "
                               f"{need} {unit}, limit {have} ({need - have} over); {fix}")
    worst = int(np.max(np.abs(layer.bias) + 128 * np.abs(layer.weight).sum(axis=1))) if layer.n else 0
    if worst >= 1 << (ACC_BITS - 1):
        raise SparsynError(f"layer {layer.name}: worst-case accumulator {worst} exceeds the {ACC_BITS}-bit "
                           "accumulator; reduce weight magnitudes or split the layer")
    check_constants(layer)


class LayerPlanBase:
    """What every engine plan derives the same way from its ``layer`` and ``packed`` (see :class:`EnginePlan`)."""

    @property
    def in_elements(self) -> int:
        """Elements of one input image (C_in*H*W)."""
        c, h, w = self.layer.in_shape
        return c * h * w

    @property
    def out_elements(self) -> int:
        """Elements of one output image (N*Ho*Wo)."""
        return self.layer.n * self.layer.pixels

    @property
    def rom_bits(self) -> int:
        """Bits of every memory the engine initialises (= the manifest's ROM bits of this layer)."""
        return self.packed.rom_bits


@dataclass
class LayerPlan(LayerPlanBase):
    """The plain-data plan of one :class:`~sparsyn.hw.engine.LayerEngine` (see the module docstring).

    Attributes
    ----------
    layer : QuantLayer — geometry, ReLU, and the decoded weights (for the useful-MAC count).
    packed : PackedLayer — its ROMs are the memory images, word for word.
    array : ArrayConfig — R x C with the scheme's lanes L.
    entry_layout, layouts : the PE entry layout and the word layout of every memory (name -> layout).
    passes : the decoded pass table (``section``, ``first``, ``last``, ``channels`` per pass).
    model : :func:`sparsyn.hw.cycles.layer_cycles` of this layer (exact; independent of the data).
    """
    layer: QuantLayer
    packed: PackedLayer
    array: ArrayConfig
    entry_layout: Any
    layouts: dict
    passes: list[dict]
    limits: EngineLimits
    model: dict = field(default_factory=dict)
    engine: type | None = None
    #: The row feed of the ROM format (``lanes`` / ``window`` / ``channels``, see :mod:`.feeders`).
    feed: str = "lanes"
    #: Cycles each step is held for a time-multiplexed PE datapath (the scheme's ``pe_phases``; else 1).
    phases: int = 1

    @property
    def steps(self) -> int:
        """Issue steps of one pass (:func:`sparsyn.hw.feeders.feed_steps`)."""
        from .feeders import feed_steps
        return feed_steps(self.feed, self.layer)

    @property
    def images(self) -> dict[str, list[int]]:
        """Memory name -> its initial words (the ROM file's words)."""
        return {name: rom.words for name, rom in self.packed.roms.items()}

    @property
    def sections(self) -> int:
        return self.packed.meta["sections"]

    @property
    def section_passes(self) -> list[int]:
        return [sum(1 for p in self.passes if p["section"] == s) for s in range(self.sections)]

    @property
    def section_channels(self) -> list[int]:
        first = {p["section"]: p["channels"] for p in self.passes}
        return [first[s] for s in range(self.sections)]

    def cycles(self, x=None) -> int:
        """Cycles from ``start`` to ``done`` for input ``x`` (this engine's timing does not depend on it)."""
        return self.model["total"]


def plan_array_layer(layer: QuantLayer, packed: PackedLayer, limits: EngineLimits = EngineLimits()) -> LayerPlan:
    """The LayerPlan of a layer packed in the shared array's format; refuses (one line) ROMs of the wrong
    kind / width / depth, a layer that does not fit ``limits``, or out-of-range constants."""
    if layer.kind not in ("conv", "linear"):
        raise SparsynError(f"layer {layer.name} is a {layer.kind}, the LayerEngine runs conv/linear layers")
    scheme = get_scheme(packed.scheme)
    entry_layout = scheme.entry_layout(packed)
    passes = pass_table(packed, entry_layout)          # also checks every ROM's kind, width and depth
    m = packed.meta
    if (m["n"], m["k"]) != (layer.n, layer.k) or m["in_channels"] != layer.in_shape[0] \
            or tuple(m["kernel"]) != tuple(layer.kernel):
        raise SparsynError(f"layer {layer.name}: its ROMs were packed for another layer shape; re-run 'sparsyn compress'")
    a = m["array"]
    array = ArrayConfig(a["rows"], a["cols"], a["lanes"])
    if a["lanes"] != scheme.lanes(packed):
        raise SparsynError(f"layer {layer.name}: packed for {a['lanes']} lanes but the {packed.scheme} PE takes "
                           f"{scheme.lanes(packed)}; re-run 'sparsyn compress'")
    check_fits(layer, array, len(passes), limits)
    from .feeders import FEEDERS
    feed = m.get("feed", "lanes")
    if feed not in FEEDERS:
        raise SparsynError(f"layer {layer.name}: its ROMs use the row feed {feed!r}, which this engine has no "
                           f"feeder for ({', '.join(FEEDERS)}); re-run 'sparsyn compress'")
    plan = LayerPlan(layer, packed, array, entry_layout, array_layouts(m, entry_layout), passes, limits, feed=feed,
                     phases=scheme.pe_phases(packed))
    plan.model = cyc.layer_cycles(list(zip(plan.section_passes, plan.section_channels)), array, layer,
                                  plan.steps * plan.phases, FEEDERS[feed].latency, scheme.pe_macs(packed))
    return plan


def with_phases(plan: LayerPlan, phases: int) -> LayerPlan:
    """``plan`` with every step held for ``phases`` cycles (>= its own: a datapath shared with layers whose PE is
    time-multiplexed over more phases; its own PE adds 0 in the extra ones), the cycle model recomputed."""
    import dataclasses
    from .feeders import FEEDERS
    if phases < plan.phases:
        raise ValueError(f"layer {plan.layer.name} needs {plan.phases} phases, not {phases}")
    if phases == plan.phases:
        return plan
    new = dataclasses.replace(plan, phases=phases)
    scheme = get_scheme(plan.packed.scheme)
    new.model = cyc.layer_cycles(list(zip(new.section_passes, new.section_channels)), new.array, new.layer,
                                 new.steps * phases, FEEDERS[new.feed].latency, scheme.pe_macs(new.packed))
    return new
