"""The PE plug-in point: each scheme supplies the combinational datapath of its processing element.

The shared systolic array (``sparsyn.hw.array``) owns the registers (stationary entry, activation
pass-through, partial sum); a scheme only says how one entry and the L activations broadcast
along its row become a product: ``product = sum_l coeff_l(entry) * x[l]`` where ``coeff_l`` is the
software scheme's ``entry_coefficients`` — the bench's model of the PE.
"""
from __future__ import annotations

from typing import Callable

from amaranth.hdl import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

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

    Attributes
    ----------
    entry : In(entry_layout)
    x : In(ArrayLayout(signed(8), lanes))
    product : Out(signed(product_width))
    """

    def __init__(self, entry_layout, lanes: int, product_width: int):
        self.lanes = lanes
        self.product_width = product_width
        super().__init__({
            "entry": In(entry_layout),
            "x": In(data.ArrayLayout(signed(ACT_BITS), lanes)),
            "product": Out(signed(product_width)),
        })


_PRODUCTS: dict[str, Callable[[PackedLayer], ProductUnit]] = {}


def register_product(scheme_name: str):
    """Decorator: ``factory(packed) -> ProductUnit`` builds the PE datapath for scheme ``scheme_name``."""
    def wrap(factory):
        _PRODUCTS[scheme_name] = factory
        return factory
    return wrap


def make_product(packed: PackedLayer) -> ProductUnit:
    """The PE datapath for a packed layer, from whichever scheme packed it."""
    from . import _load_all  # noqa: F401  (imports every hw scheme module)
    if packed.scheme not in _PRODUCTS:
        get_scheme(packed.scheme)  # unknown scheme names fail with the list of known ones
        raise NotImplementedError(f"scheme {packed.scheme!r} has no hardware PE yet")
    return _PRODUCTS[packed.scheme](packed)
