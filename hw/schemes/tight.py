"""Column-combining PE datapaths for ``packcnn`` and ``tight`` (same PE, the schemes differ only in grouping).

* :class:`MuxProduct` — entry ``{weight: signed(8), sel}``: an alpha:1 multiplexer picks the
  ``sel``-th of the group's alpha broadcast activations, then one signed 8x8 multiply::

      product = weight * x[sel]

* :class:`SubwordProduct` — entry ``{sub: signed(4), shift: 1, sel}`` (subword-level pruning): the
  same mux, a signed 4x8 multiply and a shift by 0 or 4 bits::

      product = (sub * x[sel]) << (4 * shift)

Both are combinational (latency 0; the shared array's PE registers around them) and accept one
activation vector per cycle. Their software model is ``ColumnCombineScheme.entry_coefficients``.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

from sparsyn.sw.subword import SUB_BITS

from .base import ACT_BITS, ProductUnit, SchemeHardware


class MuxProduct(ProductUnit):
    """alpha:1 input mux + signed ``weight_bits`` x 8 multiply; ``product`` is ``weight_bits + 8`` bits."""

    def __init__(self, entry_layout, alpha: int, weight_bits: int = 8):
        super().__init__(entry_layout, alpha, weight_bits + ACT_BITS)

    def elaborate(self, platform):
        m = Module()
        x_sel = Signal(signed(ACT_BITS))
        m.d.comb += x_sel.eq(self.x[self.entry.sel])
        m.d.comb += self.product.eq(self.entry.weight * x_sel)
        return m


class SubwordProduct(ProductUnit):
    """alpha:1 input mux + signed 4x8 multiply + shift by 0/4; ``product`` is 4 + 8 + 4 = 16 bits."""

    def __init__(self, entry_layout, alpha: int):
        super().__init__(entry_layout, alpha, SUB_BITS + ACT_BITS + 4)

    def elaborate(self, platform):
        m = Module()
        x_sel = Signal(signed(ACT_BITS))
        partial = Signal(signed(SUB_BITS + ACT_BITS))
        m.d.comb += [
            x_sel.eq(self.x[self.entry.sel]),
            partial.eq(self.entry.sub * x_sel),
            self.product.eq(Mux(self.entry.shift, partial << 4, partial)),
        ]
        return m


def column_combine_product(packed, position=(0, 0)) -> ProductUnit:
    """The PE datapath of a ``packcnn`` / ``tight`` packed layer (subword variant when its meta says so)."""
    from sparsyn.sw.packing import entry_layout
    m = packed.meta
    layout = entry_layout(m["alpha"], m["subword"], m["weight_bits"])
    if m["subword"]:
        return SubwordProduct(layout, m["alpha"])
    return MuxProduct(layout, m["alpha"], m["weight_bits"])


#: ``packcnn`` and ``tight`` share this PE (they differ only in how the compressor groups columns).
HARDWARE = SchemeHardware(product=column_combine_product)
