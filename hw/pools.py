"""The pool units of the model engines, by the kind of pool: max-pool (:mod:`.maxpool`) and average-pool
(:mod:`.avgpool`).

Between two compute layers a model engine streams the activations through the pools that follow the first
one; each pool runs on the unit of its kind. :func:`check_pool` refuses (one line) a pool no unit can run,
:func:`pool_cycles` is its exact hand-over time (from its last input handshake to its last output handshake,
``o.ready`` high) and :func:`pool_unit` builds the unit for one pool or for several of one kind sharing it.
"""
from __future__ import annotations

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import AvgPoolLayer, MaxPoolLayer

from .avgpool import AvgPoolUnit, avgpool_cycles, check_avgpool
from .maxpool import MaxPoolUnit, check_maxpool, maxpool_cycles
from .per_layer import as_list

#: pool layer class -> (kind, unit class, check, cycles), in the order the engines build their units
POOL_UNITS = {
    MaxPoolLayer: ("maxpool", MaxPoolUnit, check_maxpool, maxpool_cycles),
    AvgPoolLayer: ("avgpool", AvgPoolUnit, check_avgpool, avgpool_cycles),
}

#: The pool kinds a model engine runs, in the order the engines build their units.
POOL_KINDS = tuple(kind for kind, *_ in POOL_UNITS.values())


def is_pool(layer) -> bool:
    """Whether ``layer`` is a pool a model engine runs between its compute layers."""
    return type(layer) in POOL_UNITS


def _entry(layer):
    try:
        return POOL_UNITS[type(layer)]
    except KeyError:
        raise SparsynError(f"layer {layer.name} of kind {layer.kind} is not a pool; the engines pool with "
                           f"{', '.join(POOL_KINDS)} units") from None


def check_pool(layer) -> None:
    """Refuse (one line) a pool its unit cannot run; call before constructing the unit."""
    _entry(layer)[2](layer)


def pool_cycles(layer) -> int:
    """Cycles from the pool unit's last input handshake to its last output handshake, ``o.ready`` held high."""
    return _entry(layer)[3](layer)


def pool_unit(layers):
    """The unit running ``layers`` (one pool, or a list of pools of one kind sharing the unit)."""
    layers = as_list(layers)
    kinds = {_entry(l)[0] for l in layers}
    if len(kinds) != 1:
        raise ValueError(f"one pool unit runs pools of one kind, not {sorted(kinds)}")
    return _entry(layers[0])[1](layers if len(layers) > 1 else layers[0])
