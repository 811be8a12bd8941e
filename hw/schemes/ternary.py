"""The ternary adder-array PE datapath: T lanes, each adds, subtracts or skips its activation; no multiplier.

Entry (``TernaryScheme.entry_layout``): T 2-bit codes ``{en, neg}`` (lane l at bits 2l, 2l+1):
``en=0`` skip, ``en=1, neg=0`` add x, ``en=1, neg=1`` subtract x (code 0b10 is skipped, exactly like
``TernaryScheme.entry_coefficients``). The weight scale alpha never reaches the PE: it is folded into
the layer's integer requantization.

Datapath (combinational, latency 0; the shared array registers around it)::

    term_l = en_l ? (neg_l ? ~x_l : x_l) : 0          # ~x = -x - 1: one LUT per bit, no negation adder
    corr   = popcount(en_l & neg_l)                    # the "+1" of every negated lane
    product = adder_tree(term_0 .. term_{T-1}, corr)   # balanced binary tree, ceil(log2(T+1)) levels

No ``*`` appears anywhere, so synthesis infers no multiplier or DSP cell (checked by
``sparsyn.sw.bench_ternary`` on iCE40 and ECP5 netlists).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned

from .base import ACT_BITS, ProductUnit, SchemeHardware


def product_width(tile: int) -> int:
    """Signed width holding ``sum_l |c_l| * |x_l| <= T * 128`` (e.g. 12 bits for T=8)."""
    return (tile * (1 << (ACT_BITS - 1))).bit_length() + 1


def _signed_len(v) -> int:
    """Bits ``v`` needs as a signed number."""
    return len(v) + (not v.shape().signed)


class TernaryProduct(ProductUnit):
    """T-lane ternary adder-array PE datapath (add / subtract / skip per lane, adder tree).

    Parameters
    ----------
    entry_layout : amaranth.lib.data.ArrayLayout
        ``ArrayLayout(StructLayout({"en": 1, "neg": 1}), T)`` from ``TernaryScheme.entry_layout``.
    tile : int
        Lanes T.
    width : int, optional
        Signed width of ``product`` (default :func:`product_width`).

    Latency 0 (combinational), throughput one T-lane tile per cycle; logic depth one LUT level for the
    lane terms plus ``ceil(log2(T+1))`` adders.
    """

    def __init__(self, entry_layout, tile: int, width: int | None = None):
        super().__init__(entry_layout, tile, width or product_width(tile))

    def elaborate(self, platform):
        m = Module()
        level = []
        negs = []
        for lane in range(self.lanes):
            code = self.entry[lane]
            x = self.x[lane]
            term = Signal(signed(ACT_BITS), name=f"term{lane}")
            m.d.comb += term.eq(Mux(code.en, Mux(code.neg, ~x, x), 0))
            level.append(term)
            negs.append(code.en & code.neg)
        corr = Signal(unsigned(max(1, self.lanes.bit_length())), name="corr")
        m.d.comb += corr.eq(sum(negs[1:], negs[0]) if len(negs) > 1 else negs[0])
        level.append(corr)
        depth = 0
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level) - 1, 2):
                a, b = level[i], level[i + 1]
                width = min(self.product_width, max(_signed_len(a), _signed_len(b)) + 1)
                # keep: one carry-chain adder per node (yosys would otherwise merge the tree into a $macc
                # and map it to LUT-based carry-save logic, ~3x the LUTs)
                s = Signal(signed(width), name=f"sum{depth}_{i // 2}", attrs={"keep": 1})
                m.d.comb += s.eq(a + b)
                nxt.append(s)
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
            depth += 1
        m.d.comb += self.product.eq(level[0])
        return m


def ternary_product(packed, position=(0, 0)) -> TernaryProduct:
    """PE datapath for a layer packed by the ``ternary`` scheme."""
    from sparsyn.sw.schemes.ternary import TernaryScheme
    return TernaryProduct(TernaryScheme.entry_layout(packed), TernaryScheme.lanes(packed))


HARDWARE = SchemeHardware(product=ternary_product)
