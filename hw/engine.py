"""The layer engine: one Conv2d/Linear layer of a manifest, end to end on chip.

A composition of small components, one module per concern, each owning its latency::

    act_in -> activation feeder (feeders.py, by the ROMs' row feed: ActivationBuffer im2col reads,
              KernelWindowFeeder kh x kw windows, ChannelGroupFeeder channel groups; latency 2)
           -> SystolicArray (array.py: R x C PEs; latency R + C + 2 with pipelined PEs)
           -> AccumulatorBuffer (accumulator.py: 1-2 banks of Ho*Wo words of C x int32, read-modify-write,
              bias on a section's first pass; reads 2 ahead, writes 2 after)
           -> RequantSequencer (requant_sequencer.py: one finished section's bank, channel by channel,
              through the RequantUnit; latency 1 + 6)
           -> OutputBuffer (output_buffer.py: N*Ho*Wo int8) -> act_out

    LayerControl (control.py): the pass FSM and its ROMs (weights, lane descriptors, pass table)

Control (FSM, per image)::

    IDLE --start--> per section: LOAD (R+1: lane descriptors of its first pass)
                     -> STREAM of each pass but the last: max(Ho*Wo + C - 1, R + 1, 4) cycles, no drain
                        (the next pass's weights enter row by row behind the last pixel, its lane
                        descriptors are preloaded into shadow registers)
                     -> STREAM of the last pass: Ho*Wo + R + C + 5 (drain into the accumulators)
                     -> [WAIT_REQUANT while the previous section is still being requantized]
                     -> hand the section to the requant sequencer (channels*Ho*Wo + 8 cycles, reading
                        one accumulator bank while the next section accumulates into the other)
           --> FINISH (wait for the last requant) --> IDLE with done=1

Everything layer-specific (geometry, TileProgram, bias, mult, shift, ReLU) is an elaboration-time
constant — or, for a datapath several layers share, one of their constants selected by the running layer
(:mod:`.per_layer`). The analytic model in :mod:`sparsyn.hw.cycles` is exact for this FSM; it reads every
latency from the component that owns it.
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer

from . import cycles as cyc
from .accumulator import AccumulatorBuffer
from .array import SystolicArray
from .control import ByteWrite, LayerControl, weight_store_shape
from .feeders import feeder_class
from .layouts import ACT_BITS
from .output_buffer import OutputBuffer
from .plan import EngineLimits, LayerPlan, plan_array_layer
from .requant_sequencer import RequantSequencer
from .mux import mux_tree
from .per_layer import LayerSelect, as_list
from .shared_product import shared_product_factory


def engine_signature() -> wiring.Signature:
    """The port interface every engine shares (LayerEngine, ModelEngine; what the board self-test drives):
    ``act_in`` stream of int8 in CHW order, ``start`` pulse, ``busy``/``done``, ``cycles`` of the last
    run, ``act_out`` stream of int8 in CHW order (see :class:`LayerEngine` for the protocol)."""
    return wiring.Signature({
        "act_in": In(stream.Signature(signed(ACT_BITS))),
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "cycles": Out(32),
        "act_out": Out(stream.Signature(signed(ACT_BITS))),
    })


class LayerEngine(wiring.Component):
    """Runs one Conv2d/Linear layer per image: ``act_in`` -> ``start`` -> ``done`` -> ``act_out``.

    Latency: :func:`sparsyn.hw.cycles.layer_cycles` ``["total"]`` cycles from the cycle after ``start``
    to ``done`` (the value also appears on ``cycles``). Throughput: one image per
    ``C_in*H*W + total + N*Ho*Wo`` cycles (load, compute and unload are not overlapped).

    Parameters
    ----------
    plan : LayerPlan, or a list of them
        A finished plan (:meth:`LayerEngine.plan`, or :func:`sparsyn.hw.engines.plan_layer`): the layer,
        its ROMs, the array (R x C, the scheme's lanes L) and the cycle model. Construction cannot fail.
        A list: the layers that share this datapath (the sequenced model engine); the ``layer_index`` input
        selects the running one (and, between layers, the one whose input is written), see :mod:`.per_layer`.
    weights_in : ``"ebr"`` (default), ``"spram"`` or ``"passstore"`` (:mod:`.pass_store`, a 1-row array: weights,
        lane descriptors and pass table in one SPRAM the host loads): the weight memory in block RAM from the ROM files, or a
        SPRAM store the host loads through the ``weights_load`` port (:mod:`.spram`).
    scratch : ``"ebr"`` (default) or ``"spram"``: the output buffer (the activation scratch the next layer's input
        is read from) in block RAM or in an iCE40UP SPRAM.
    acts : ``"ebr"`` (default) or ``"spram"``: the activation buffer (the running layer's input image, one copy per
        lane of the ``lanes`` feed, :class:`~.activation.ActivationBuffer`) in block RAM or one iCE40UP SPRAM per
        copy; the other feeds keep their banked images in block RAM.

    Attributes
    ----------
    model : dict
        :func:`sparsyn.hw.cycles.layer_cycles` of the layer (``plan.model``).
    rom_memories : dict[str, Memory]
        ROM name -> the memory initialised from exactly that ROM's words (filled in by elaboration).
    rom_tables : dict[str, list[int]]
        The remaining ROMs (scheme tables, e.g. a pattern table), which the PEs decode as constants.
    act_in : In(stream.Signature(signed(8)))
        Input tensor in CHW order, one element per handshake, accepted while not busy; the write
        pointer resets on ``start`` and after the last element.
    start : In(1)
        One-cycle pulse (ignored while busy); the input must be fully loaded.
    busy, done : Out(1)
        ``done`` is high from completion until the next ``start``.
    cycles : Out(32)
        Cycles spent busy in the last run (held after done).
    act_out : Out(stream.Signature(signed(8)))
        After done: the N*Ho*Wo outputs in CHW order; the read pointer resets on ``start``.
    """

    def __init__(self, plan: LayerPlan | list, *, weights_in: str = "ebr", scratch: str = "ebr", acts: str = "ebr"):
        #: the plans of the layers this datapath runs (one for a LayerEngine of its own; several when the
        #: sequenced model engine reuses it layer after layer, see :mod:`.sequenced_engine`)
        self.plans = as_list(plan)
        self.plan = plan = self.plans[0]
        self.layer, self.packed = plan.layer, plan.packed
        self.array = ArrayConfig(plan.array.rows, plan.array.cols, max(p.array.lanes for p in self.plans))
        self.model = plan.model
        #: name -> the Memory initialised from that ROM (filled in by elaboration)
        self.rom_memories: dict[str, Memory] = {}
        #: name -> words of the scheme tables the PEs decode as constants (a pattern table: read by every PE
        #: in every cycle, so built as each PE's LUT decoder rather than a block RAM), word for word the ROM's
        self.rom_tables: dict[str, list[int]] = {name: list(plan.packed.roms[name].words)
                                                 for name in plan.packed.meta.get("tables", {})}
        self.weights_in = weights_in
        #: where the output buffer is: ``"ebr"`` or ``"spram"`` (:class:`~.output_buffer.OutputBuffer`)
        self.scratch = scratch
        #: where the activation buffer copies are: ``"ebr"`` or ``"spram"`` (:class:`~.activation.ActivationBuffer`)
        self.acts = acts
        S = [p.steps * p.phases for p in self.plans]
        from .feeders import feeder_class
        lat = feeder_class(plan.feed).latency
        R, C = plan.array.rows, plan.array.cols
        self._control_args = dict(pass_period=[cyc.pass_period(R, C, s) for s in S],
                                  last_pass=[cyc.last_pass_cycles(R, C, s, lat) for s in S], weights_in=weights_in)
        #: the weight memory's words (every layer's ``weights`` ROM end to end) and width (the SPRAM image's source)
        self.weight_words, self.weight_width, store_addr_bits = weight_store_shape(self.plans)
        if weights_in == "passstore":
            from .pass_store import pass_store_shape
            self.weight_words, self.weight_width, store_addr_bits = pass_store_shape(self.plans)
        members = dict(engine_signature().members)
        if len(self.plans) > 1:
            members["layer_index"] = In(range(len(self.plans)))
        if weights_in != "ebr":
            members["weights_load"] = In(ByteWrite(store_addr_bits))
        super().__init__(wiring.Signature(members))

    @classmethod
    def plan(cls, layer: QuantLayer, packed: PackedLayer, limits: EngineLimits = EngineLimits()) -> LayerPlan:
        """The plain-data plan of ``layer`` (refuses, in one line, what this engine cannot run)."""
        return plan_array_layer(layer, packed, limits)

    @property
    def in_elements(self) -> int:
        """Elements of one input image on ``act_in``."""
        return self.plan.in_elements

    @property
    def out_elements(self) -> int:
        """Elements of one output image on ``act_out``."""
        return self.plan.out_elements

    def elaborate(self, platform):
        m = Module()
        plans, plan = self.plans, self.plan
        R = plan.array.rows
        one = plans[0] if len(plans) == 1 else plans

        m.submodules.array = arr = SystolicArray(
            self.array, shared_product_factory([p.packed for p in plans]), pipelined=cyc.PIPELINED_PES)
        # one activation feeder per row feed the layers use (usually one), each for its layers
        feeds = list(dict.fromkeys(p.feed for p in plans))
        feeders = {}
        for f in feeds:
            sub = [p for p in plans if p.feed == f]
            store = {"store": self.acts} if f == "lanes" else {}
            feeders[f] = feeder_class(f)(sub if len(sub) > 1 else sub[0], **store)
            m.submodules["act" if len(feeds) == 1 else f"act_{f}"] = feeders[f]
        act = feeders[feeds[0]]
        if len({fd.latency for fd in feeders.values()}) != 1:
            raise ValueError("the feeders of layers sharing a datapath must have the same latency")
        m.submodules.acc = acc = AccumulatorBuffer(one, lead=act.latency + arr.latency)
        m.submodules.requant = rq = RequantSequencer(one)
        m.submodules.output = out = OutputBuffer(one, scratch=self.scratch)
        # a fresh control (and memories) per elaboration: a board build elaborates the design more than once
        m.submodules.control = ctl = LayerControl(plans[0] if len(plans) == 1 else plans, **self._control_args)
        if self.weights_in != "ebr":
            wiring.connect(m, wiring.flipped(self.weights_load), ctl.weights_load)
        for part in (ctl, acc, rq):
            self.rom_memories.update(part.rom_memories)
        if len(plans) > 1:
            m.d.comb += [part.layer.eq(self.layer_index) for part in (arr, acc, rq, ctl)
                         if "layer" in part.signature.members]
            sel = LayerSelect(m, self.layer_index, plans, self)
            for f, fd in feeders.items():
                if "layer" in fd.signature.members:     # its layers' index among themselves
                    sub = [p for p in plans if p.feed == f]
                    m.d.comb += fd.layer.eq(sel([sub.index(p) if p.feed == f else 0 for p in plans],
                                                name=f"{f}_layer"))
            # the outputs are read out after done, while the next layer's input is written (``layer_index``
            # already names that layer): the output buffer keeps the layer that was started
            out_layer = Signal.like(self.layer_index, name="out_layer")
            with m.If(self.start & ~ctl.busy):
                m.d.sync += out_layer.eq(self.layer_index)
            m.d.comb += out.layer.eq(out_layer)

        # ---- the engine's ports --------------------------------------------------------------------
        wiring.connect(m, out.act_out, wiring.flipped(self.act_out))
        m.d.comb += [ctl.start.eq(self.start), self.busy.eq(ctl.busy), self.done.eq(ctl.done),
                     self.cycles.eq(ctl.cycles)]

        # ---- control -> activation feeder(s) -> array -> accumulator buffer ------------------------
        for fd in feeders.values():
            m.d.comb += [fd.busy.eq(ctl.busy), fd.clear.eq(ctl.clear), fd.restart.eq(ctl.restart),
                         fd.issue.eq(ctl.issue), fd.last.eq(ctl.step_last)]
            if len(feeds) == 1:
                m.d.comb += fd.lanes.eq(ctl.lanes)
            else:       # implicit row descriptors {valid, index} -> the feeder's {valid, channel / group}
                for r in range(R):
                    m.d.comb += [fd.lanes[r].as_value()[0].eq(ctl.lanes[r].as_value()[0]),
                                 fd.lanes[r].as_value()[1:].eq(ctl.lanes[r].as_value()[1:])]
        if len(feeds) == 1:
            wiring.connect(m, wiring.flipped(self.act_in), act.act_in)
            x, x_valid, pixel = act.x.payload, act.x.valid, act.pixel
        else:
            # the active layer's feeder takes the input (``layer_index`` names the layer whose input is written)
            # and feeds the array; the others idle
            feed_of = sel([feeds.index(p.feed) for p in plans], name="feed")
            fds = [feeders[f] for f in feeds]
            x = Signal.like(arr.x, name="x")
            x_valid, pixel = Signal(), Signal()
            # Mux trees (continuous assignments), see sparsyn.hw.mux.mux_tree
            for k, fd in enumerate(fds):
                m.d.comb += [fd.act_in.payload.eq(self.act_in.payload),
                             fd.act_in.valid.eq(self.act_in.valid & (feed_of == k))]
            m.d.comb += [self.act_in.ready.eq(mux_tree(feed_of, [fd.act_in.ready for fd in fds])),
                         x_valid.eq(mux_tree(feed_of, [fd.x.valid for fd in fds])),
                         pixel.eq(mux_tree(feed_of, [fd.pixel for fd in fds]))]
            m.d.comb += [x[r][lane].eq(mux_tree(feed_of, [fd.x.payload[r][lane] if lane < fd.signature.lanes
                                                          else Const(0, 8) for fd in fds]))
                         for r in range(R) for lane in range(self.array.lanes)]
        if arr.phases > 1:
            # a held step's phase reaches the array with its activations (the feeder's latency later)
            phase = ctl.step_phase
            for d in range(act.latency):
                reg = Signal.like(ctl.step_phase, name=f"phase_{d}")
                m.d.sync += reg.eq(phase)
                phase = reg
            m.d.comb += arr.phase.eq(phase)
        m.d.comb += [arr.load.eq(ctl.load), arr.entries.eq(ctl.entries), arr.x.eq(x), arr.x_valid.eq(x_valid)]
        m.d.comb += [acc.issue.eq(pixel), acc.first.eq(ctl.info.first), acc.section.eq(ctl.info.section),
                     acc.bank.eq(ctl.bank), acc.clear.eq(ctl.clear),
                     acc.y.payload.eq(arr.y), acc.y.valid.eq(arr.y_valid)]

        # ---- control -> requant sequencer (reads the other accumulator bank) -> output buffer ------
        wiring.connect(m, ctl.job, rq.job)
        m.d.comb += ctl.requant_busy.eq(rq.busy)
        wiring.connect(m, rq.acc, acc.read)
        wiring.connect(m, rq.o, out.i)
        m.d.comb += [out.clear.eq(ctl.clear), out.publish.eq(ctl.publish)]
        return m
