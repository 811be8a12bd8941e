"""The one engine factory: every place that builds hardware for a layer comes through here.

``plan_layer`` asks the layer's scheme which engine runs it (its ``HARDWARE.engine``, default the
shared :class:`~sparsyn.hw.engine.LayerEngine`) and has that engine plan the layer as plain data
(fit check, memory images, exact cycle model) — no component exists yet, so a refusal leaves nothing
half-built. ``build_engine`` turns a plan into the component. The model engine, ``sparsyn generate``,
the RTL check, the board tops, the Amaranth-simulator helpers and the benchmarks all use these, so a
scheme can bring its own engine without touching any of them.
"""
from __future__ import annotations

from sparsyn.sw.array_format import check_array
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer

from .plan import EngineLimits
from .schemes.base import scheme_hardware


def engine_class(packed: PackedLayer) -> type:
    """The engine component class that runs layers packed by ``packed.scheme``."""
    from .engine import LayerEngine
    return scheme_hardware(packed.scheme).engine or LayerEngine


def plan_layer(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig | None = None,
               limits: EngineLimits = EngineLimits()):
    """The plan of ``layer`` on its scheme's engine. ``array``, when given, must be the array the layer
    was packed for (refused with one line otherwise: the array is part of the compressed artefact)."""
    if not isinstance(layer, QuantLayer):
        raise SparsynError(f"layer {layer.name} is a {layer.kind}; engines run conv/linear layers")
    if array is not None:
        check_array(packed, array)
    cls = engine_class(packed)
    plan = cls.plan(layer, packed, limits)
    plan.engine = cls
    return plan


def build_engine(plan):
    """The engine component of a finished plan (cannot fail)."""
    return plan.engine(plan)


def layer_engine(layer: QuantLayer, packed: PackedLayer, array: ArrayConfig | None = None,
                 limits: EngineLimits = EngineLimits()):
    """``build_engine(plan_layer(...))``: the engine of one layer."""
    return build_engine(plan_layer(layer, packed, array, limits))
