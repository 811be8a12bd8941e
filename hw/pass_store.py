"""The pass store: the weight, lane-descriptor and pass-table ROMs of a 1-row array in one SPRAM, one record per pass.

On a weight-stationary array with one row every pass reads one word of each of the three ROMs (its PE entries, its
lane descriptor, its pass-table entry), a pass lasts at least :func:`~.cycles.pass_period` cycles, and a SPRAM
reads a 16-bit word per cycle. So the three ROMs fit in one SPRAM as records: layer ``i``'s pass ``k`` is the
``words[i]`` 16-bit words at ``base[i] + k * words[i]`` holding, from bit 0, its weights word, its lanes word and
its pass-table word (each the layer's own ROM width). The host loads the words over the link
(:func:`~.spram.spram_image`, 16 bits a word) like a SPRAM weight store.

:class:`PassStore` prefetches the records of the running layer into a ring of :data:`RECORDS` registers, reading
one word per cycle whenever the record it fetches is no more than ``RECORDS - 1`` passes ahead of the current one,
and answers the control's reads of the three ROMs from the ring with a block RAM's one-cycle latency. The control
reads a record at most one pass ahead (a pass's lane descriptor during the previous pass), so the prefetch never
stalls it when every pass is at least ``words`` cycles long and a layer's first ``RECORDS`` records are read
during the hand-over before it starts (:func:`pass_store_layout` checks both): the cycle counts are those of the
ROMs in block RAM.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.errors import SparsynError

from .spram import SPRAM_DEPTH, SpramStore

#: Records held ahead in the prefetch ring (a power of two: the ring slot is the pass index's low bits).
RECORDS = 4


@dataclass
class PassStoreLayout:
    """Where each layer's records are in the pass store (plain data).

    ``names``: the ROMs in a record, low bits first (``weights``, [``lanes``,] ``passes``); per layer: ``widths``
    (bits of each ROM's word, by name), ``words`` (16-bit words per record), ``base`` (its first word),
    ``passes`` (records); ``image``: every word, in address order."""
    names: tuple
    widths: list
    words: list
    base: list
    passes: list
    image: list

    @property
    def depth(self) -> int:
        return len(self.image)

    @property
    def record_bits(self) -> int:
        return 16 * max(self.words)

    def offset(self, layer: int, name: str) -> int:
        """The first bit of ROM ``name``'s word in layer ``layer``'s record."""
        at = 0
        for n in self.names:
            if n == name:
                return at
            at += self.widths[layer][n]
        raise KeyError(name)


def pass_store_layout(plans) -> PassStoreLayout:
    """The pass store of the layers sharing a control (one-line refusals of what it cannot hold or keep up with)."""
    from . import cycles as cyc
    from .feeders import feeder_class
    p0 = plans[0]
    if p0.array.rows != 1:
        raise SparsynError(f"--weights passstore needs a 1-row array (one weights word per pass), not "
                           f"{p0.array.rows}x{p0.array.cols}; use --weights spram or ebr")
    if p0.packed.meta.get("index_bits", 0):
        raise SparsynError("--weights passstore cannot hold split PE entries (an ids ROM); use --weights spram or ebr")
    names = ("weights",) + (() if p0.packed.meta.get("implicit_rows") else ("lanes",)) + ("passes",)
    widths, words, base, passes, image = [], [], [], [], []
    for i, p in enumerate(plans):
        roms = {n: p.packed.roms[n] for n in names}
        n = len(p.passes)
        if roms["weights"].depth != n or ("lanes" in roms and roms["lanes"].depth != n) or roms["passes"].depth < n:
            raise SparsynError(f"layer {p.layer.name}: its ROMs do not have one word per pass; use --weights spram")
        w = {k: r.width for k, r in roms.items()}
        bits = sum(w.values())
        nw = -(-bits // 16)
        steps = p.steps * p.phases
        period = min(cyc.pass_period(1, p.array.cols, steps),
                     cyc.last_pass_cycles(1, p.array.cols, steps, feeder_class(p.feed).latency))
        if nw > period:
            raise SparsynError(f"layer {p.layer.name}: a pass of {period} cycles is shorter than its {nw}-word pass "
                               "record; use --weights spram")
        if i and p.in_elements < RECORDS * nw + 2:
            raise SparsynError(f"layer {p.layer.name}: its hand-over ({p.in_elements} inputs) is too short to "
                               f"prefetch {RECORDS} pass records; use --weights spram")
        widths.append(w)
        words.append(nw)
        base.append(len(image))
        passes.append(n)
        for k in range(n):
            rec, at = 0, 0
            for name in names:
                rec |= roms[name].words[k] << at
                at += w[name]
            image += [(rec >> (16 * j)) & 0xFFFF for j in range(nw)]
    if len(image) > SPRAM_DEPTH:
        raise SparsynError(f"the pass store needs {len(image)} words, a SPRAM has {SPRAM_DEPTH}; "
                           "use --weights spram or ebr")
    return PassStoreLayout(names, widths, words, base, passes, image)


def pass_store_shape(plans) -> tuple[list[int], int, int]:
    """Like :func:`~.control.weight_store_shape` for the pass store: its words, their width (16) and the byte-address
    bits of the store on the link."""
    words = pass_store_layout(plans).image
    return words, 16, max(1, (max(len(words) * 2, 2) - 1).bit_length())


class PassStore(wiring.Component):
    """The pass store's SPRAM, its prefetcher and the control's three ROM read ports.

    Latency: ``<name>_data`` holds the word at ROM address ``<name>_addr`` (the address in the ROM the control
    would read, layers end to end as :func:`~.memories.rom_offsets`) one cycle later, provided the record of that
    pass is in the ring (see the module docstring). The prefetch restarts at the layer's first record when the
    layer changes, when the control goes idle and on a host write.

    Parameters
    ----------
    layout : PassStoreLayout
    rom_base : dict — name -> each layer's first word in that ROM (the control's ``rom_base``).
    rom_width : dict — name -> the widest layer's word of that ROM.

    Attributes
    ----------
    layer : In (only with more than one layer); busy : In(1); head : In — the control's busy and current pass.
    <name>_addr : In; <name>_data : Out(rom_width[name]) — for each ROM name.
    w_addr : In; w_data : In(8); w_en : In(1) — host byte writes (the :func:`~.spram.spram_image` of the words).
    """

    def __init__(self, layout: PassStoreLayout, rom_base: dict, rom_width: dict):
        self.layout, self.rom_base = layout, rom_base
        self.store = SpramStore(16, layout.depth)
        n = len(layout.passes)
        most = max(layout.passes)
        members = {**({"layer": In(range(n))} if n > 1 else {}), "busy": In(1), "head": In(range(most + 2))}
        for name in layout.names:
            depth = rom_base[name][-1] + most + 2
            members[f"{name}_addr"] = In(range(depth))
            members[f"{name}_data"] = Out(rom_width[name])
        members.update({"w_addr": In(self.store.signature.members["w_addr"].shape), "w_data": In(8), "w_en": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        lay = self.layout
        n = len(lay.passes)
        m.submodules.store = store = self.store
        m.d.comb += [store.w_addr.eq(self.w_addr), store.w_data.eq(self.w_data), store.w_en.eq(self.w_en)]
        layer = self.layer if n > 1 else None

        def pick(values, shape, name):
            """A per-layer constant by the current layer."""
            s = Signal(shape, name=name)
            if layer is None:
                m.d.comb += s.eq(values[0])
            else:
                with m.Switch(layer):
                    for i, v in enumerate(values):
                        with m.Case(i):
                            m.d.comb += s.eq(v)
            return s

        most = max(lay.passes)
        words = pick([w - 1 for w in lay.words], range(max(lay.words)), "record_last_word")
        passes = pick(lay.passes, range(most + 1), "record_count")
        first = pick(lay.base, range(max(lay.depth, 2)), "record_base")

        # restart: on a new layer, when the control goes idle, on a host write (and after reset)
        layer_q = Signal.like(layer) if layer is not None else None
        busy_q, fresh = Signal(), Signal(init=1)
        restart = Signal()
        m.d.sync += [busy_q.eq(self.busy), fresh.eq(0)]
        cond = fresh | self.w_en | (busy_q & ~self.busy)
        if layer is not None:
            m.d.sync += layer_q.eq(layer)
            cond = cond | (layer_q != layer)
        m.d.comb += restart.eq(cond)

        f = Signal(range(most + RECORDS + 1))            # the record being fetched
        w = Signal(range(max(lay.words)))                # its next word
        raddr = Signal(range(max(lay.depth, 2)))         # that word's address
        head = Mux(self.busy, self.head, 0)
        issue = Signal()
        m.d.comb += [issue.eq(~restart & (f < passes) & (f < head + RECORDS)), store.r_addr.eq(raddr)]
        with m.If(restart):
            m.d.sync += [f.eq(0), w.eq(0), raddr.eq(first)]
        with m.Elif(issue):
            m.d.sync += [raddr.eq(raddr + 1), w.eq(Mux(w == words, 0, w + 1))]
            with m.If(w == words):
                m.d.sync += f.eq(f + 1)
        # the word read arrives one cycle later: into its record's slot of the ring
        got, slot, part = Signal(), Signal(range(RECORDS)), Signal.like(w)
        m.d.sync += [got.eq(issue), slot.eq(f[:(RECORDS - 1).bit_length()]), part.eq(w)]
        ring = [Signal(lay.record_bits, name=f"record_{r}") for r in range(RECORDS)]
        for r in range(RECORDS):
            for j in range(max(lay.words)):
                with m.If(got & (slot == r) & (part == j)):
                    m.d.sync += ring[r][16 * j:16 * (j + 1)].eq(store.r_data)

        # the read ports: the field of the record of the address's pass, registered (a block RAM's latency)
        for name in lay.names:
            addr, data = getattr(self, f"{name}_addr"), getattr(self, f"{name}_data")
            base = pick(self.rom_base[name], range(max(self.rom_base[name]) + 1), f"{name}_rom_base")
            idx = Signal(range(RECORDS), name=f"{name}_slot")
            m.d.comb += idx.eq((addr - base)[:(RECORDS - 1).bit_length()])
            rec = Signal(lay.record_bits, name=f"{name}_record")
            with m.Switch(idx):
                for r in range(RECORDS):
                    with m.Case(r):
                        m.d.comb += rec.eq(ring[r])
            fields = [rec[lay.offset(i, name):lay.offset(i, name) + lay.widths[i][name]] for i in range(n)]
            if layer is None:
                m.d.sync += data.eq(fields[0])
            else:
                with m.Switch(layer):
                    for i in range(n):
                        with m.Case(i):
                            m.d.sync += data.eq(fields[i])
        return m
