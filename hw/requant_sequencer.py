"""The requant sequencer: a finished section's accumulators -> int8 outputs, one value per cycle."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import AccumulatorBuffer, AccumulatorRead
from .const_mul import times_constant
from .layouts import ACT_BITS, RequantConst
from .memories import rom_memory, rom_offsets, rom_read_port
from .per_layer import LayerSelect, as_list
from .requant import RequantUnit

if TYPE_CHECKING:
    from .plan import LayerPlan


def job_layout(plans) -> data.StructLayout:
    """The pass-table layout wide enough for every layer of ``plans`` (one plan: its own)."""
    from .layouts import pass_info
    return pass_info(max(p.sections for p in plans), plans[0].array.cols)


def requant_job(pass_layout: data.StructLayout) -> data.StructLayout:
    """One job: which section (its channels' requant constants), how many real channels, which bank."""
    return data.StructLayout({"section": pass_layout["section"].shape,
                              "channels": pass_layout["channels"].shape,
                              "bank": 1})


class RequantSequencer(wiring.Component):
    """Requantizes one section at a time, in the background of the next section's passes.

    A ``job`` (section s, its real channels n <= C, accumulator bank b) is accepted while the
    sequencer is idle (``job.ready = ~busy``). It then reads bank b channel by channel (channel-major:
    all Ho*Wo pixels of channel c, then channel c+1), takes channel ``s*C + c``'s multiplier and shift
    from the requant constants ROM, and sends ``y = requant(acc)`` (a :class:`RequantUnit`) on ``o``:
    the section's N*Ho*Wo outputs in CHW order, one per cycle.

    Latency :attr:`latency` = ``AccumulatorBuffer.read_latency + RequantUnit.latency`` = 8 cycles
    from a value's accumulator read to its ``o``; a job keeps the sequencer busy for
    ``n*Ho*Wo + latency`` cycles from the cycle after it was accepted (the last value is on ``o`` in
    the last busy cycle). Throughput: one output value per cycle; ``o`` has no back-pressure.

    Parameters
    ----------
    plan : LayerPlan, or a list of them sharing the sequencer (``layer`` input: the active one; the
        constants memory holds every layer's ``requant`` ROM end to end)
        Ho*Wo, C, ReLU, the pass-table layout and the ``requant`` ROM.

    Attributes
    ----------
    job : In(stream.Signature(StructLayout({section, channels, bank})))
    busy : Out(1)
    acc : Out(AccumulatorRead(pixels=Ho*Wo, cols=C))
        Connects to :attr:`AccumulatorBuffer.read`.
    o : Out(stream.Signature(signed(8), always_ready=True))
    rom_memories : dict
        ``{"requant": Memory}``, initialised from the layer's ``requant`` ROM.
    """

    #: Cycles from a value's accumulator read to its output: accumulator read, requant unit.
    latency = AccumulatorBuffer.read_latency + RequantUnit.latency

    def __init__(self, plan: LayerPlan | list):
        self.plans = plans = as_list(plan)
        self.pixels, self.cols = max(p.layer.pixels for p in plans), plans[0].array.cols
        #: word offset of each layer's requant ROM in the (shared) constants memory
        self.requant_base = rom_offsets([p.packed.roms["requant"] for p in plans])
        self.rom_memories = {"requant": rom_memory(*[p.packed.roms["requant"] for p in plans])}
        super().__init__({
            **({"layer": In(range(len(plans)))} if len(plans) > 1 else {}),
            "job": In(stream.Signature(requant_job(job_layout(plans)))),
            "busy": Out(1),
            "acc": Out(AccumulatorRead(pixels=self.pixels, cols=self.cols)),
            "o": Out(stream.Signature(signed(ACT_BITS), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        C, plans = self.cols, self.plans
        sel = LayerSelect(m, self.layer if len(plans) > 1 else None, plans, self)
        P = sel([p.layer.pixels for p in plans], name="pixels")
        relus = {bool(p.layer.relu) for p in plans}
        m.submodules.rqmem = rqmem = self.rom_memories["requant"]
        m.submodules.requant = rq = RequantUnit(relus.pop() if len(relus) == 1 else None)
        if rq.relu is None:
            m.d.comb += rq.relu_in.eq(sel.flag([p.layer.relu for p in plans], name="relu"))
        # a synchronous read (block RAM; a small table: an asynchronous read into a register): the constants come one
        # cycle after the address, one of the read_latency cycles the accumulator word takes
        rq_rd = rom_read_port(m, rqmem, "requant")
        job = Signal.like(self.job.payload)
        # issuing: values left to read (counted by rq_p / rq_ch: no channels x pixels multiply on the accept
        # path); then drain: the cycles from the last read until its value is on ``o`` (the last busy cycle)
        issuing = Signal()
        drain = Signal(range(self.latency))
        rq_p = Signal(range(max(self.pixels, 2)))
        rq_ch = Signal(range(max(C, 2)))
        issue = Signal()

        # issue: accumulator address and constants address out; the word comes read_latency cycles later, and with
        # it the channel and the constants (read one cycle after the address), delayed as long -> requant unit -> o
        d_valid, d_ch = Signal(), Signal(range(max(C, 2)))
        d_const = Signal(RequantConst)
        m.d.comb += [rq_rd.addr.eq(sel(self.requant_base, name="requant_base") + times_constant(job.section, C)
                                   + rq_ch),
                     self.acc.bank.eq(job.bank), self.acc.pixel.eq(rq_p)]
        valid_, ch_, const_ = issue, rq_ch, rq_rd.data
        for d in range(AccumulatorBuffer.read_latency - 1):
            v, c = Signal(name=f"valid_{d}"), Signal.like(d_ch, name=f"ch_{d}")
            m.d.sync += [v.eq(valid_), c.eq(ch_)]
            valid_, ch_ = v, c
            if d > 0:       # the ROM read is the first of these cycles
                k = Signal(RequantConst, name=f"const_{d}")
                m.d.sync += k.eq(const_)
                const_ = k
        m.d.sync += [d_valid.eq(valid_), d_ch.eq(ch_), d_const.eq(const_)]
        m.d.comb += [rq.i.valid.eq(d_valid), rq.i.payload.acc.eq(self.acc.data[d_ch]),
                     rq.i.payload.mult.eq(d_const.mult), rq.i.payload.shift.eq(d_const.shift)]
        wiring.connect(m, rq.o, wiring.flipped(self.o))

        m.d.comb += issue.eq(self.busy & issuing)
        with m.If(self.busy & ~issuing):
            with m.If(drain == 0):
                m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += drain.eq(drain - 1)
        with m.If(issue):
            with m.If(rq_p == P - 1):
                m.d.sync += [rq_p.eq(0), rq_ch.eq(rq_ch + 1)]
                with m.If(rq_ch == job.channels - 1):
                    m.d.sync += issuing.eq(0)
            with m.Else():
                m.d.sync += rq_p.eq(rq_p + 1)

        m.d.comb += self.job.ready.eq(~self.busy)
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += [self.busy.eq(1), rq_p.eq(0), rq_ch.eq(0), job.eq(self.job.payload),
                         issuing.eq(self.job.payload.channels != 0), drain.eq(self.latency - 1)]
        return m
