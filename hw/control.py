"""The LayerEngine's control: the pass FSM and the ROMs that schedule it (weights, lane descriptors, pass table)."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.array_format import row_groups

from .layouts import bits_for_range, weight_word
from .memories import rom_memory, rom_offsets
from .per_layer import LayerSelect, as_list, convert_bits, select_word
from .shared_product import entry_targets
from .requant_sequencer import job_layout, requant_job

if TYPE_CHECKING:
    from .plan import LayerPlan


class ByteWrite(wiring.Signature):
    """A byte write port from the writer's side (the host link loading a memory).

    Parameters
    ----------
    addr_width : int — address bits (>= 1), keyword or positional.

    Interface attributes
    --------------------
    addr : Out(addr_width); data : Out(8); en : Out(1)
    """

    def __init__(self, addr_width: int):
        self._addr_width = operator.index(addr_width)
        if self._addr_width < 1:
            raise ValueError(f"addr_width must be at least 1, not {addr_width!r}")
        super().__init__({"addr": Out(self._addr_width), "data": Out(8), "en": Out(1)})

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, ByteWrite) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"ByteWrite({self._addr_width})"


def weight_store_shape(plans) -> tuple[list[int], int, int]:
    """The weight memory of layers sharing a control: its words (every ``weights`` ROM end to end), its width, and
    the byte-address bits of that memory as a SPRAM weight store (:func:`~.spram.spram_image` layout)."""
    from .spram import spram_banks
    words = [w for p in plans for w in p.packed.roms["weights"].words]
    width = max(p.packed.roms["weights"].width for p in plans)
    return words, width, max(1, (max(len(words) * 2 * spram_banks(width), 2) - 1).bit_length())


class _StoreReadPort:
    """A weight store's read side with a memory read port's names (``addr``, ``data``)."""

    def __init__(self, store):
        self.addr, self.data = store.r_addr, store.r_data


class _PassStorePort:
    """One ROM's read port answered by the pass store (``addr``, ``data``, ``depth``: the ROM's)."""

    def __init__(self, store, name: str):
        self.addr, self.data = getattr(store, f"{name}_addr"), getattr(store, f"{name}_data")
        self.depth = 2 ** len(self.addr) - 1


class LayerControl(wiring.Component):
    """Walks the pass table of one layer per image and drives the datapath.

    FSM (per image)::

        IDLE --start--> per section: LOAD (R + rom_latency: lane descriptors of its first pass)
                         -> STREAM of each pass but the last: ``pass_period`` cycles, no drain (the next
                            pass's weights enter row by row behind the last pixel, its lane descriptors
                            are preloaded into shadow registers)
                         -> STREAM of the last pass: ``last_pass`` cycles (drain into the accumulators)
                         -> [WAIT_REQUANT while the previous section is still being requantized]
                         -> hand the section to the requant side (``job``) and toggle the bank
               --> FINISH (wait for the last requant) --> IDLE with done=1

    A pass STREAMs its steps on ``issue`` in its first ``plan.steps`` cycles (Ho*Wo pixels, or the
    window feeder's column steps). Its PE entries are loaded
    while it streams: row r in its phase r (``load``/``entries`` are registered, so the array takes
    them one cycle later, in step with the activation read), just before its first pixel reaches row r
    and after the previous pass's last pixel left it. Lane descriptors are needed from the pass's
    first issue, so they are read one pass ahead. The ROMs (weights, lanes, pass table) have
    :attr:`rom_latency` = 1 cycle; the LOAD phase takes ``R + rom_latency`` cycles
    (:meth:`load_cycles`).

    ``start`` to ``done``: :func:`sparsyn.hw.cycles.layer_cycles` ``["total"]`` cycles, counted on
    ``cycles``.

    Parameters
    ----------
    plan : LayerPlan
        The array, Ho*Wo, the pass table and the ``weights``/``lanes``/``passes`` ROMs.
    pass_period : int
        Cycles of a pass followed by another pass of its section (>= R + rom_latency: the lane
        preload; >= 2: the pass-table read ahead).
    last_pass : int
        Cycles of a section's last pass (>= 2), up to the last accumulator write.
    weights_in : ``"ebr"`` (default: block RAM initialised from the ``weights`` ROMs), ``"spram"`` (a
        :class:`~.spram.SpramStore` the host loads with the same words over ``weights_load``; read the same way) or
        ``"passstore"`` (a 1-row array: the weights, lanes and passes ROMs as per-pass records in one SPRAM the host
        loads, :class:`~.pass_store.PassStore`; same read latency, same cycles).

    Attributes
    ----------
    start : In(1)
    busy, done : Out(1); cycles : Out(32)
    clear : Out(1)
        ``start`` accepted: the buffers return their pointers to the first element.
    restart, issue : Out(1)
        To the activation feeder: back to the first step / read the current step.
    step_phase, step_last : Out
        With a time-multiplexed PE (``plan.phases`` = T > 1) every step is issued for T consecutive cycles:
        its phase 0 .. T-1, and whether this is its last cycle (the feeder advances then). T = 1: phase 0,
        always last.
    lanes : Out(ArrayLayout(row_lanes, R))
        The current pass's lane descriptors of each array row.
    load : Out(R); entries : Out(weight_word)
        PE row loads and the weight-memory word (registered) for the array.
    info : Out(pass_info)
        The current pass's pass-table entry (section, first, last, channels).
    bank : Out(1)
        The accumulator bank of the section being computed.
    job : Out(stream.Signature(StructLayout({section, channels, bank})))
        A finished section for the requant side.
    requant_busy : In(1)
    publish : Out(1)
        Done: the output buffer may be read.
    weights_load : In(ByteWrite) (only with ``weights_in="spram"``)
        Byte writes into the weight store (:func:`~.spram.spram_image` layout), taken while not busy.
    rom_memories : dict
        ``{"weights", "lanes", "passes"[, "ids"]: Memory}``, initialised from the layer's ROMs; with
        split entries (``index_bits`` > 0) the ``ids`` memory is read at the weights' address and each PE
        entry is ``{ids word's C-th field, weights word's C-th field}`` (index in the low bits).
    """

    #: Read latency of the weight, lane-descriptor and pass-table ROMs.
    rom_latency = 1

    def _first_pass_word(self, p) -> int:
        """The layer's first pass-table word, in the shared pass layout."""
        word = p.packed.roms["passes"].words[0]
        if p.layouts["passes"] == self.pass_layout:
            return word
        src, out = p.layouts["passes"], 0
        for name, field in self.pass_layout:
            sf = src[name]
            out |= ((word >> sf.offset) & ((1 << sf.width) - 1)) << field.offset
        return out

    @classmethod
    def load_cycles(cls, rows: int) -> int:
        """Cycles of the LOAD phase: R lane-descriptor words read, the last one arrives ``rom_latency`` later."""
        return rows + cls.rom_latency

    def __init__(self, plan: LayerPlan | list, *, pass_period, last_pass, weights_in: str = "ebr"):
        self.plans = plans = as_list(plan)
        self.plan = plans[0]
        if weights_in not in ("ebr", "spram", "passstore"):
            raise ValueError(f"weights_in must be 'ebr', 'spram' or 'passstore', not {weights_in!r}")
        #: where the weight memory is: block RAM initialised from the ROM files, or SPRAM the host loads with them
        self.weights_in = weights_in
        #: per layer: cycles of a pass followed by another pass of its section / of a section's last pass
        self.pass_period = [operator.index(v) for v in as_list(pass_period)]
        self.last_pass = [operator.index(v) for v in as_list(last_pass)]
        #: The PE entries' split-off index bits (e.g. pattern ids) are in the ``ids`` ROM, read with the weights.
        self.index_bits = [p.packed.meta.get("index_bits", 0) for p in plans]
        #: No ``lanes`` ROM: row t of a section reads channel / group t (``meta["implicit_rows"]``), counted here.
        self.implicit_rows = bool(plans[0].packed.meta.get("implicit_rows"))
        names = (("weights",) + (() if self.implicit_rows else ("lanes",)) + ("passes",)
                 + (("ids",) if self.index_bits[0] else ()))
        #: name -> the first word of each layer's ROM in that memory (layers sharing the control: end to end)
        self.rom_base = {name: rom_offsets([p.packed.roms[name] for p in plans]) for name in names}
        in_store = {"ebr": (), "spram": ("weights",), "passstore": ("weights", "lanes", "passes")}[weights_in]
        self.rom_memories = {name: rom_memory(*[p.packed.roms[name] for p in plans]) for name in names
                             if name not in in_store}
        #: the weight memory's words (every layer's ``weights`` ROM end to end) and width
        self.weight_words, self.weight_width, store_addr_bits = weight_store_shape(plans)
        if weights_in == "passstore":
            from .pass_store import PassStore, pass_store_layout
            #: the pass store (:mod:`.pass_store`): the host loads ``weight_words`` (its records, 16 bits a word)
            self.pass_store = PassStore(pass_store_layout(plans), {n: self.rom_base[n] for n in names},
                                        {n: max(p.packed.roms[n].width for p in plans) for n in names})
            self.weight_words, self.weight_width = self.pass_store.layout.image, 16
            store_addr_bits = len(self.pass_store.w_addr)
        if weights_in == "spram":
            from .spram import SpramStore
            #: the SPRAM weight store (the host loads ``weight_words`` into it, see :func:`~.spram.spram_image`)
            self.weight_store = SpramStore(self.weight_width, len(self.weight_words))
        R, C = plans[0].array.rows, plans[0].array.cols
        multi = len(plans) > 1
        self.pass_layout = pass_layout = job_layout(plans) if multi else plans[0].layouts["passes"]
        self.lane_layout = plans[0].layouts["lanes"] if not multi else self._shared_lanes(plans)
        #: per layer, the entry layout of the PE datapath that runs it (see sparsyn.hw.shared_product)
        self.entry_targets = entry_targets([p.packed for p in plans]) if multi else [plans[0].entry_layout]
        self.entry_layout = (plans[0].entry_layout if not multi
                             else unsigned(max(Shape.cast(t).width for t in self.entry_targets)))
        super().__init__({
            **({"layer": In(range(len(plans)))} if multi else {}),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
            "clear": Out(1),
            "restart": Out(1),
            "issue": Out(1),
            "step_phase": Out(range(max(plans[0].phases, 2))),
            "step_last": Out(1),
            "lanes": Out(data.ArrayLayout(self.lane_layout, R)),
            "load": Out(R),
            "entries": Out(weight_word(self.entry_layout, C)),
            "info": Out(pass_layout),
            "bank": Out(1),
            "job": Out(stream.Signature(requant_job(pass_layout))),
            "requant_busy": In(1),
            "publish": Out(1),
            **({"weights_load": In(ByteWrite(store_addr_bits))} if weights_in != "ebr" else {}),
        })

    @staticmethod
    def _shared_lanes(plans):
        """The row-descriptor layout of layers sharing the control: the feeder's (one feed), or for layers whose rows
        are implicit (window / channels feeds, maybe both) ``{valid, index}`` wide enough for every layer."""
        from .feeders import feeder_class
        if {p.feed for p in plans} == {plans[0].feed}:
            return feeder_class(plans[0].feed).descriptor(plans)
        if not all(p.packed.meta.get("implicit_rows") for p in plans):
            raise ValueError("layers with explicit lane descriptors cannot share a control with other feeds")
        return data.StructLayout({"valid": 1, "index": bits_for_range(max(row_groups(p.packed.meta) for p in plans))})

    def elaborate(self, platform):
        m = Module()
        plans, plan = self.plans, self.plan
        multi = len(plans) > 1
        sel = LayerSelect(m, self.layer if multi else None, plans, self)
        R, C = plan.array.rows, plan.array.cols
        T = plan.phases          # cycles each step is held (a time-multiplexed PE datapath; else 1)
        # issue cycles per pass (the feeder's steps; = Ho*Wo unless a window scan)
        P = sel([p.steps * T for p in plans], name="issue_steps")
        n_passes = [len(p.passes) for p in plans]
        passes = sel(n_passes, name="passes")
        period = sel(self.pass_period, name="period")
        last_len = sel(self.last_pass, name="last_len")
        load_len = self.load_cycles(R)
        base = {name: sel(v, name=f"{name}_base") for name, v in self.rom_base.items()}

        pstore = None
        if self.weights_in == "passstore":
            m.submodules.pstore = pstore = self.pass_store
            m.d.comb += [pstore.w_addr.eq(self.weights_load.addr), pstore.w_data.eq(self.weights_load.data),
                         pstore.w_en.eq(self.weights_load.en & ~self.busy), pstore.busy.eq(self.busy)]
            if multi:
                m.d.comb += pstore.layer.eq(self.layer)
            wmem = w_rd = _PassStorePort(pstore, "weights")
        elif self.weights_in == "spram":
            m.submodules.wstore = wmem = self.weight_store
            w_rd = _StoreReadPort(wmem)
            m.d.comb += [wmem.w_addr.eq(self.weights_load.addr), wmem.w_data.eq(self.weights_load.data),
                         wmem.w_en.eq(self.weights_load.en & ~self.busy)]
        else:
            m.submodules.wmem = wmem = self.rom_memories["weights"]
            w_rd = wmem.read_port()
        # one spare word at the end: the table is read one pass ahead (see ``info`` below)
        if pstore is not None:
            pt_rd = _PassStorePort(pstore, "passes")
        else:
            m.submodules.ptab = ptab = self.rom_memories["passes"]
            pt_rd = ptab.read_port()

        busy, done, info, bank = self.busy, self.done, self.info, self.bank
        # the phase of the current step (held T cycles); a pass is a whole number of steps, so it is 0 at
        # every pass start
        hold = Signal(range(max(T, 2)))
        m.d.comb += [self.step_phase.eq(hold), self.step_last.eq(hold == T - 1)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        pass_idx = Signal(range(max(n_passes) + 1))
        if pstore is not None:
            m.d.comb += pstore.head.eq(pass_idx)
        waddr = Signal(range(wmem.depth + 1))      # next weight-memory word to read
        w_read, l_read = Signal(), Signal()
        if self.implicit_rows:
            # the row descriptor of row ``laddr`` of the section, one cycle later like a ROM read: valid, then
            # the channel (window feed) / channel group (channels feed) = the row's place in its section
            groups_of = [row_groups(p.packed.meta) for p in plans]
            spans = [-(-g // R) * R for g in groups_of]         # rows of a section
            groups = sel(groups_of, name="row_groups")
            span1 = sel([v - 1 for v in spans], name="span_last")
            laddr = Signal(range(max(max(spans), 2)))            # the next row within its section
            lane_word = Signal(self.lane_layout, name="lane_word")
            m.d.sync += [lane_word.as_value()[0].eq(laddr < groups),
                         lane_word.as_value()[1:].eq(Mux(laddr < groups, laddr, 0))]
            with m.If(l_read):
                m.d.sync += laddr.eq(Mux(laddr == span1, 0, laddr + 1))
        else:
            if pstore is not None:
                lmem = l_rd = _PassStorePort(pstore, "lanes")
            else:
                m.submodules.lmem = lmem = self.rom_memories["lanes"]
                l_rd = lmem.read_port()
            laddr = Signal(range(lmem.depth + 1))      # next lane-memory word to read
            m.d.comb += l_rd.addr.eq(laddr)
            lane_word = (l_rd.data if not multi else
                         select_word(m, self.layer, l_rd.data, [p.layouts["lanes"] for p in plans],
                                     self.lane_layout, name="lane_word"))
            with m.If(l_read):
                m.d.sync += laddr.eq(laddr + 1)
        phase = Signal(range(max(load_len, *self.pass_period, *self.last_pass) + 1))
        # ``info`` (the pass table entry of ``pass_idx``) is a register loaded together with pass_idx
        # from a registered lookup one pass ahead (``pass_nx`` = pass_idx + 1; its entry is on the
        # read port two cycles after it changes, and passes last >= 2 cycles), so the FSM's
        # decisions do not wait for the table decode
        pass_nx = Signal(range(max(n_passes) + 1), init=1)
        m.d.comb += pt_rd.addr.eq(base["passes"] + pass_nx)
        pass_word = (pt_rd.data if not multi else
                     select_word(m, self.layer, pt_rd.data, [p.layouts["passes"] for p in plans], self.pass_layout,
                                 name="pass_word"))

        def next_pass():
            m.d.sync += [pass_idx.eq(pass_nx), pass_nx.eq(pass_nx + 1), info.eq(pass_word)]

        # ---- weights and lane descriptors ----------------------------------------------------------
        # lane descriptors are preloaded into ``lane_next`` during the previous pass (or straight into
        # the row registers in the LOAD phase) and swapped in at the pass start
        lane_regs = [self.lanes[r] for r in range(R)]
        lane_next = [Signal(self.lane_layout, name=f"lanes_next_{r}") for r in range(R)]
        # the PE row loads are registered (with their weight word) to stay in step with the
        # registered activation address: the array sees the FSM's phases one cycle later
        load = Signal(R)
        m.d.comb += w_rd.addr.eq(waddr)
        ids = None
        if self.index_bits[0]:
            m.submodules.imem = imem = self.rom_memories["ids"]
            i_rd = imem.read_port()
            m.d.comb += i_rd.addr.eq(waddr - base["weights"] + base["ids"])
            ids = i_rd.data

        def entries_of(p, ib, target):
            """The layer's weight word (and ids word) as its C PE entries, each converted to the entry layout of the
            datapath that runs the layer (field by field: the same fields, widened) and widened to the shared entry."""
            size = Shape.cast(p.entry_layout).width
            wb, ew = size - ib, Shape.cast(self.entry_layout).width
            cols = []
            for c in range(C):
                e = w_rd.data[c * wb:(c + 1) * wb]
                if ib:
                    e = Cat(ids[c * ib:(c + 1) * ib], e)
                if target != p.entry_layout:
                    e = convert_bits(p.entry_layout, target, e)
                tw = Shape.cast(target).width
                if ew > tw:
                    e = Cat(e, Const(0, ew - tw))
                cols.append(e)
            return Cat(*cols)

        if not multi and not self.index_bits[0]:
            m.d.sync += self.entries.eq(w_rd.data)
        elif not multi:
            m.d.sync += self.entries.as_value().eq(entries_of(plan, self.index_bits[0], plan.entry_layout))
        else:
            with m.Switch(self.layer):
                for i, p in enumerate(plans):
                    with m.Case(i):
                        m.d.sync += self.entries.as_value().eq(entries_of(p, self.index_bits[i],
                                                                          self.entry_targets[i]))
        m.d.sync += self.load.eq(load)
        with m.If(w_read):
            m.d.sync += waddr.eq(waddr + 1)

        # ---- the section hand-over to the requant side ---------------------------------------------
        m.d.comb += [self.job.payload.section.eq(info.section), self.job.payload.channels.eq(info.channels),
                     self.job.payload.bank.eq(bank)]

        def launch_requant():
            """The requant side took the finished section; go on with the next section."""
            m.d.sync += [bank.eq(~bank), phase.eq(0)]
            with m.If(pass_idx == passes - 1):
                m.next = "FINISH"
            with m.Else():
                next_pass()
                m.next = "LOAD"

        # phase == period - 1 (not the section's last pass) / phase == last_len - 1 (its last pass),
        # registered; low outside STREAM (a STREAM phase 0 is never the end: period, last_len >= 2)
        end_pass, end_section = Signal(), Signal()
        m.d.sync += [end_pass.eq(0), end_section.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += self.clear.eq(1)
                    first_word = sel([self._first_pass_word(p) for p in plans], self.pass_layout.size,
                                     name="first_pass")
                    m.d.sync += [busy.eq(1), done.eq(0), self.cycles.eq(0), pass_idx.eq(0), waddr.eq(base["weights"]),
                                 laddr.eq(base["lanes"] if "lanes" in base else 0), phase.eq(0), bank.eq(0),
                                 info.as_value().eq(first_word), pass_nx.eq(1)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                # lane descriptors of the section's first pass straight into the row registers;
                # the last cycle reads the first weight row of that pass
                m.d.comb += l_read.eq(phase < R)
                for r in range(R):
                    with m.If(phase == r + 1):
                        m.d.sync += lane_regs[r].eq(lane_word)
                m.d.sync += phase.eq(phase + 1)
                with m.If(phase == load_len - 1):
                    m.d.comb += [w_read.eq(1), self.restart.eq(1)]
                    m.d.sync += phase.eq(0)
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += self.issue.eq(phase < P)
                if T > 1:
                    with m.If(phase < P):
                        m.d.sync += hold.eq(Mux(hold == T - 1, 0, hold + 1))
                m.d.sync += phase.eq(phase + 1)
                # the pass-end conditions one cycle ahead, registered (phase counts up by one here)
                m.d.sync += [end_pass.eq(~info.last & (phase == period - 2)),
                             end_section.eq(info.last & (phase == last_len - 2))]
                for r in range(R):
                    with m.If(phase == r):
                        m.d.comb += load[r].eq(1)
                with m.If(phase < R - 1):
                    m.d.comb += w_read.eq(1)
                with m.If(info.last):
                    with m.If(end_section):
                        m.d.comb += self.job.valid.eq(1)
                        with m.If(self.job.ready):
                            launch_requant()
                        with m.Else():
                            m.next = "WAIT_REQUANT"
                with m.Else():
                    # preload the next pass's lane descriptors, then hand over without draining
                    m.d.comb += l_read.eq(phase < R)
                    for r in range(R):
                        with m.If(phase == r + 1):
                            m.d.sync += lane_next[r].eq(lane_word)
                    with m.If(end_pass):
                        m.d.comb += w_read.eq(1)
                        m.d.sync += phase.eq(0)
                        next_pass()
                        # a row latched in this very cycle (period == R+1: row R-1) is taken from the
                        # memory port (static: no phase compare on this path)
                        if len(set(self.pass_period)) == 1:
                            m.d.sync += [lane_regs[r].eq(lane_word if r + 1 == self.pass_period[0] - 1
                                                         else lane_next[r]) for r in range(R)]
                        else:
                            m.d.sync += [lane_regs[r].eq(Mux(period == r + 2, lane_word, lane_next[r]))
                                         for r in range(R)]
            with m.State("WAIT_REQUANT"):
                # the previous section is still being requantized from the other bank
                m.d.comb += self.job.valid.eq(1)
                with m.If(self.job.ready):
                    launch_requant()
            with m.State("FINISH"):
                with m.If(~self.requant_busy):
                    m.d.comb += self.publish.eq(1)
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.next = "IDLE"
        return m
