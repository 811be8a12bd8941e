"""The SPM pattern-decode PE datapath of the ``pattern`` scheme (PCNN, papers.md §3).

Entry (``PatternScheme.entry_layout``): ``{id, w[0..n-1]}`` — a pattern id and the kernel's n kept
int8 weights. The L = G lanes are the G inputs of the row's group (a channel's kh x kw window, or
G consecutive channels for 1x1 / Linear layers).

Datapath (combinational, latency 0; the shared array registers around it)::

    pos_j   = TABLE[id][j]            j = 0..n-1   # the layer's pattern table (ROM ``patterns``)
    x_sel_j = x[pos_j]                             # n G:1 activation multiplexers
    product = sum_j w_j * x_sel_j                  # n signed 8x8 multipliers, adder tree

With ``mults`` = M < n multipliers the datapath is time-multiplexed over ceil(n/M) phases (the PE holds
each window that many cycles and adds the parts, see :class:`~sparsyn.hw.pe.ProcessingElement`).
    product = 0 when id is the reserved zero id    # a connectivity-pruned kernel

The pattern table is the layer's ``patterns`` ROM word for word: P words of n positions. It is read by
every PE in every cycle, so it is not a block RAM but the PE's id decoder (a LUT ROM initialised from
those words); its bits are counted once, as the ROM file's. Every kernel takes the same cycle, whatever
its pattern.
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned

from sparsyn.sw.array_format import bits_for_range

from ..mux import mux_tree
from .base import ACT_BITS, ProductUnit, SchemeHardware


def product_width(keep: int, weight_bits: int = 8) -> int:
    """Signed width of ``sum_j w_j * x_j`` over n terms (|w*x| <= 2**(wb-1) * 128)."""
    return weight_bits + ACT_BITS + max(0, (keep - 1).bit_length())


class PatternProduct(ProductUnit):
    """The SPM pattern-decode PE datapath: id -> n positions -> n activation selects -> n MACs.

    Parameters
    ----------
    entry_layout : StructLayout ``{id, w: ArrayLayout(signed(wb), n)}``.
    group : int
        Lanes G (the kh*kw window or the channel-group length).
    table : list of tuples
        Per pattern id its n lane positions (the ``patterns`` ROM, decoded).
    zero_id : bool
        Id ``len(table)`` is the reserved all-zero kernel (product 0).

    mults : int, optional
        Multipliers M (default n). With M < n the datapath is time-multiplexed: ``phases`` = ceil(n/M),
        phase k multiplies kept weights k*M .. k*M+M-1 (its ``product`` is their part of the sum).

    Latency 0 (combinational), throughput one group of G activations per ``phases`` cycles; M multipliers.
    """

    def __init__(self, entry_layout, group: int, table, zero_id: bool, weight_bits: int = 8,
                 mults: int | None = None):
        self.table = [tuple(int(p) for p in row) for row in table]
        self.keep = len(self.table[0])
        self.zero_id = bool(zero_id)
        #: Multipliers M (<= n); the n products take ceil(n / M) phases.
        self.mults = min(self.keep, mults or self.keep)
        phases = -(-self.keep // self.mults)
        super().__init__(entry_layout, group, product_width(self.mults, weight_bits), phases)

    def elaborate(self, platform):
        m = Module()
        pb = bits_for_range(self.lanes)
        ids = len(self.table) + int(self.zero_id)
        wb = self.entry.w[0].shape().width
        positions = []
        for j in range(self.keep):
            # the table column j as a constant ROM indexed by the id (the zero id reads position 0)
            column = [Const(row[j], unsigned(pb)) for row in self.table + [self.table[0]] * (ids - len(self.table))]
            pos = Signal(unsigned(pb), name=f"pos{j}")
            m.d.comb += pos.eq(mux_tree(self.entry.id, column))
            positions.append(pos)
        terms = []
        for i in range(self.mults):
            # multiplier i takes kept weight j = phase*M + i (0 past the last one)
            js = [k * self.mults + i for k in range(self.phases)]
            w_i = Signal(signed(wb), name=f"w_sel{i}")
            pos_i = Signal(unsigned(pb), name=f"pos_sel{i}")
            if self.phases == 1:
                m.d.comb += [w_i.eq(self.entry.w[i]), pos_i.eq(positions[i])]
            else:
                m.d.comb += [w_i.eq(mux_tree(self.phase, [self.entry.w[j] if j < self.keep else Const(0, signed(wb))
                                                          for j in js])),
                             pos_i.eq(mux_tree(self.phase, [positions[j] if j < self.keep else Const(0, unsigned(pb))
                                                            for j in js]))]
            x_sel = Signal(signed(ACT_BITS), name=f"x_sel{i}")
            m.d.comb += x_sel.eq(mux_tree(pos_i, [self.x[lane] for lane in range(self.lanes)]))
            prod = Signal(signed(wb + ACT_BITS), name=f"prod{i}")
            m.d.comb += prod.eq(w_i * x_sel)
            terms.append(prod)
        level, depth = terms, 0
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level) - 1, 2):
                a, b = level[i], level[i + 1]
                s = Signal(signed(min(self.product_width, max(len(a), len(b)) + 1)), name=f"sum{depth}_{i // 2}")
                m.d.comb += s.eq(a + b)
                nxt.append(s)
            if len(level) % 2:
                nxt.append(level[-1])
            level, depth = nxt, depth + 1
        if self.zero_id:
            m.d.comb += self.product.eq(Mux(self.entry.id == len(self.table), 0, level[0]))
        else:
            m.d.comb += self.product.eq(level[0])
        return m


def pattern_product(packed, position=(0, 0)) -> PatternProduct:
    """PE datapath for a layer packed by the ``pattern`` scheme (its table read from the ``patterns`` ROM)."""
    from sparsyn.sw.schemes.pattern import PatternScheme
    m = packed.meta
    return PatternProduct(PatternScheme.entry_layout(packed), m["group"], PatternScheme.table(packed),
                          m["zero_id"], m["weight_bits"], m.get("mults"))


HARDWARE = SchemeHardware(product=pattern_product)
