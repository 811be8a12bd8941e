"""The hardware of the layers without weights (max-pool, average-pool, residual add): one factory.

Each such layer runs on a stream unit: int8 CHW streams in (``i``, or ``a`` and ``b`` for an add), one int8
CHW stream ``o`` out. :func:`stream_cycles` is the unit's exact cycle model (plain arithmetic, no component);
:func:`stream_unit` refuses a layer the unit cannot run (one line, before any component exists) and returns the
unit with its input port names and its cycle model, so the RTL check, the benches and the tests build them
alike. Flatten layers have no hardware (:func:`has_stream_unit` is False).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.lib import wiring

from sparsyn.sw.qmodel import AddLayer, AvgPoolLayer, MaxPoolLayer

#: The layer kinds that run on a stream unit.
STREAM_KINDS = ("maxpool", "avgpool", "add")


@dataclass
class StreamUnit:
    """A built stream unit of one layer.

    Attributes
    ----------
    layer : the layer it runs.
    unit : the component (ports ``clk``, ``rst``, ``inputs`` and ``o``).
    inputs : its input stream ports, in the order of the layer's source tensors.
    cycles : cycles of one tensor from the first input handshake to the last output handshake (both counted),
        with every input valid and ``o.ready`` held high, from an idle unit.
    """
    layer: object
    unit: wiring.Component
    inputs: tuple[str, ...]
    cycles: int


def has_stream_unit(layer) -> bool:
    """Whether ``layer`` runs on a stream unit (max-pool, average-pool, add)."""
    return isinstance(layer, (MaxPoolLayer, AvgPoolLayer, AddLayer))


def stream_cycles(layer) -> int:
    """The exact cycle model of ``layer``'s stream unit: one tensor from the first input handshake to the last
    output handshake (both counted), every input valid each cycle and ``o.ready`` held high, from an idle unit."""
    from .pools import is_pool, pool_cycles
    if isinstance(layer, AddLayer):
        from .add import add_cycles
        return add_cycles(layer)
    if is_pool(layer):
        # the pools' cycle models count from the last input handshake, C*H*W - 1 cycles after the first one
        c, h, w = layer.in_shape
        return c * h * w + pool_cycles(layer)
    raise TypeError(f"layer {layer.name} is a {layer.kind}; stream units run {', '.join(STREAM_KINDS)} layers")


def stream_unit(layer, max_elements: int | None = None) -> StreamUnit:
    """The stream unit of ``layer`` (refused with one line when the unit cannot run it). ``max_elements``: the
    image buffer a max-pool unit may use (default its own limit; a simulation may allow more)."""
    from .pools import check_pool, is_pool, pool_unit
    if isinstance(layer, AddLayer):
        from .add import AddUnit, check_add
        check_add(layer)
        return StreamUnit(layer, AddUnit(layer), ("a", "b"), stream_cycles(layer))
    if is_pool(layer):
        if isinstance(layer, MaxPoolLayer) and max_elements is not None:
            from .maxpool import check_maxpool
            check_maxpool(layer, max_elements=max_elements)
        else:
            check_pool(layer)
        return StreamUnit(layer, pool_unit(layer), ("i",), stream_cycles(layer))
    raise TypeError(f"layer {layer.name} is a {layer.kind}; stream units run {', '.join(STREAM_KINDS)} layers")
