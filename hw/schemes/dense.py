"""Dense int8 PE datapath: ``product = weight * x[0]`` (one signed 8x8 multiply)."""
from __future__ import annotations

from amaranth.hdl import Module

from sparsyn.sw.schemes import get_scheme

from ..layouts import ACT_BITS
from .base import ProductUnit, SchemeHardware


class DenseProduct(ProductUnit):
    """``product = entry.weight * x[0]``; latency 0 (combinational), width weight_bits + 8."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.product.eq(self.entry.weight * self.x[0])
        return m


def dense_product(packed, position=(0, 0)) -> DenseProduct:
    bits = packed.meta["weight_bits"]
    return DenseProduct(get_scheme("dense").entry_layout(packed), 1, bits + ACT_BITS)


HARDWARE = SchemeHardware(product=dense_product)
