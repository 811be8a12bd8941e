"""The PE plug-in point: each scheme supplies the combinational datapath of its processing element.

The shared systolic array (``sparsyn.hw.array``) owns the registers (stationary entry, activation
pass-through, partial sum); a scheme only says how one entry and the L activations broadcast
along its row become a product: ``product = sum_l coeff_l(entry) * x[l]`` where ``coeff_l`` is the
software scheme's ``entry_coefficients`` — the bench's model of the PE.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from amaranth.hdl import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.schemes import PackedLayer, get_scheme

ACT_BITS = 8


class ProductUnit(wiring.Component):
    """Combinational PE datapath of a scheme (latency 0; the array registers around it).

    Parameters
    ----------
    entry_layout : amaranth.lib.data.Layout
        The scheme's packed PE entry.
    lanes : int
        Number of int8 activations L broadcast to the PE.
    product_width : int
        Signed width of ``product``; must hold ``sum_l |coeff_l| * 128``.

    layers : int
        Layers sharing the datapath (default 1); more adds the ``layer`` input.
    phases : int
        1 (default): ``product`` is the whole ``sum_l coeff_l * x_l``. P > 1: a time-multiplexed datapath;
        ``product`` is the part of the sum for ``phase`` (the parts of phases 0 .. P-1 add up to it).

    Attributes
    ----------
    entry : In(entry_layout)
    x : In(ArrayLayout(signed(8), lanes))
    phase : In(range(phases)) (only when phases > 1)
    layer : In(range(layers)) (only when layers > 1: a datapath shared by several layers)
    product : Out(signed(product_width))
    """

    #: Cycles one activation vector is held to compute its whole product (a time-multiplexed datapath
    #: computes a part of it in each phase 0 .. phases-1, selected by its ``phase`` input).
    phases = 1
    #: The datapath registers its own ``product`` (latency 1): a pipelined PE then adds no product register.
    registered = False

    def __init__(self, entry_layout, lanes: int, product_width: int, phases: int = 1, layers: int = 1):
        self.lanes = lanes
        self.product_width = product_width
        self.phases = int(phases)
        members = {
            # a datapath shared by several layers (see sparsyn.hw.shared_product) selects by the active layer
            **({"layer": In(range(layers))} if layers > 1 else {}),
            "entry": In(entry_layout),
            "x": In(data.ArrayLayout(signed(ACT_BITS), lanes)),
            "product": Out(signed(product_width)),
        }
        if self.phases > 1:
            members["phase"] = In(range(self.phases))
        super().__init__(members)


@dataclass(frozen=True)
class SchemeHardware:
    """A scheme's hardware spec (``HARDWARE`` in the module its software spec names).

    product : ``factory(packed, position) -> ProductUnit`` — the PE datapath of one PE; ``position`` is
        its ``(row, col)`` in the array (a scheme may specialise PEs by position; the layer's constants
        are in ``packed``).
    engine : the engine component class (default :class:`~sparsyn.hw.engine.LayerEngine`). It has a
        classmethod ``plan(layer, packed, limits) -> plan`` (plain data, the fit check and the exact
        cycle model; see :class:`~sparsyn.hw.plan.EnginePlan`) and is constructed as ``engine(plan)``.
    """
    product: Callable[..., ProductUnit] | None = None
    engine: type | None = None


def scheme_hardware(name: str) -> SchemeHardware:
    """The hardware spec of scheme ``name`` (imports the module its software spec names, loudly)."""
    scheme = get_scheme(name)
    if not scheme.hardware:
        raise SparsynError(f"scheme {name!r} has no hardware yet (its spec names no hardware module); "
                           "it can be compressed but not generated or simulated")
    try:
        mod = importlib.import_module(scheme.hardware)
    except ModuleNotFoundError as err:
        if err.name == scheme.hardware:
            raise SparsynError(f"scheme {name!r} names hardware module {scheme.hardware}, which does not exist; "
                               "fix the scheme's 'hardware' attribute") from None
        raise
    spec = getattr(mod, "HARDWARE", None)
    if not isinstance(spec, SchemeHardware):
        raise SparsynError(f"hardware module {scheme.hardware} of scheme {name!r} defines no HARDWARE = "
                           "SchemeHardware(...)")
    return spec


def make_product(packed: PackedLayer, position: tuple[int, int] = (0, 0)) -> ProductUnit:
    """The PE datapath at ``position`` for a packed layer, from whichever scheme packed it."""
    spec = scheme_hardware(packed.scheme)
    if spec.product is None:
        raise SparsynError(f"scheme {packed.scheme!r} has no PE datapath (its engine does not use the shared array)")
    return spec.product(packed, position)
