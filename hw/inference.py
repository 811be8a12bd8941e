"""The board's inference design without pins: an engine behind the UART host link.

The host writes an input image into the INPUT region, sends RUN, and reads the logits from the OUTPUT region
(:mod:`sparsyn.sw.link_protocol`). On RUN the core streams the input memory into the engine's ``act_in``,
starts it, and after ``done`` drains ``act_out`` into the output memory; the reply to RUN carries the engine's
own cycle count (start to done: what :func:`sparsyn.hw.cycles.model_cycles` predicts).
"""
from __future__ import annotations

import operator

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsyn.sw.link_protocol import Identity, Region

from .host_link import HostLink

#: Region ids of the inference core (the IDENTIFY reply lists them with their sizes): the input image, the
#: outputs, and — when the weights live in SPRAM — the weight store the host loads before the first RUN.
REGION_INPUT, REGION_OUTPUT, REGION_WEIGHTS = 1, 2, 3


def inference_regions(in_elements: int, out_elements: int, weight_bytes: int = 0) -> tuple[Region, ...]:
    return ((Region(REGION_INPUT, in_elements, writable=True, readable=True),
             Region(REGION_OUTPUT, out_elements, writable=False, readable=True))
            + ((Region(REGION_WEIGHTS, weight_bytes, writable=True, readable=False),) if weight_bytes else ()))


def inference_identity(*, design_hash: bytes, model_hash: bytes, array, in_elements: int, out_elements: int,
                       max_payload: int = 256, weight_bytes: int = 0) -> Identity:
    """The IDENTIFY reply of an inference core (what :class:`InferenceCore` answers and the host expects)."""
    return Identity(design_hash=bytes(design_hash)[:8].ljust(8, b"\0"), rows=array.rows, cols=array.cols,
                    lanes=array.lanes, model_hash=bytes(model_hash)[:8].ljust(8, b"\0"), max_payload=max_payload,
                    regions=inference_regions(in_elements, out_elements, weight_bytes))


class InferenceCore(wiring.Component):
    """An engine (the :func:`~sparsyn.hw.engine.engine_signature` interface) behind a :class:`HostLink`.

    Latency of a RUN: ``in_elements + 1`` cycles to stream the input, the engine's cycles from start to done,
    ``out_elements + 1`` to drain the outputs (plus the link's reply). Throughput: one image per RUN.

    Parameters
    ----------
    engine : wiring.Component with ``act_in``, ``start``, ``busy``, ``done``, ``cycles``, ``act_out`` and the
        ``in_elements`` / ``out_elements`` properties.
    identity : Identity — the IDENTIFY reply (:func:`inference_identity`).
    divisor : int — clock cycles per UART bit.

    Attributes
    ----------
    rx : In(1); tx : Out(1) — the UART pins.
    running : Out(1) — a RUN is in progress (for an LED).
    runs : Out(16) — RUNs completed since reset (wraps).
    """

    def __init__(self, engine, identity: Identity, *, divisor: int, timeout_cycles: int | None = None):
        self.engine = engine
        self.identity = identity
        self.divisor = operator.index(divisor)
        self.timeout_cycles = timeout_cycles
        self.in_elements, self.out_elements = engine.in_elements, engine.out_elements
        self.weight_bytes = len(engine.weight_image) if "weights_load" in engine.signature.members else 0
        if identity.regions != inference_regions(self.in_elements, self.out_elements, self.weight_bytes):
            raise ValueError("the identity's regions are not this engine's input / output / weight store sizes")
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "running": Out(1), "runs": Out(16)})

    def elaborate(self, platform):
        m = Module()
        eng = self.engine
        n_in, n_out = self.in_elements, self.out_elements
        m.submodules.engine = eng
        m.submodules.link = link = HostLink(divisor=self.divisor, identity=self.identity.encode(),
                                            regions=self.identity.regions, max_payload=self.identity.max_payload,
                                            timeout_cycles=self.timeout_cycles)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]

        m.submodules.in_mem = in_mem = Memory(shape=unsigned(8), depth=max(n_in, 2), init=[])
        m.submodules.out_mem = out_mem = Memory(shape=unsigned(8), depth=max(n_out, 2), init=[])
        # one read port on the input: the RUN's load streams it, otherwise the host may read it back (one block RAM)
        in_wr, in_rd = in_mem.write_port(), in_mem.read_port()
        out_wr, out_rd = out_mem.write_port(), out_mem.read_port()

        # ---- the host's bus: writes into the input, reads of input / output ---------------------------------------
        bus = link.bus
        if self.weight_bytes:
            m.d.comb += [eng.weights_load.addr.eq(bus.addr), eng.weights_load.data.eq(bus.w_data),
                         eng.weights_load.en.eq(bus.w_en & (bus.region == REGION_WEIGHTS))]
        m.d.comb += [in_wr.addr.eq(bus.addr), in_wr.data.eq(bus.w_data),
                     in_wr.en.eq(bus.w_en & (bus.region == REGION_INPUT)),
                     in_rd.addr.eq(bus.addr), out_rd.addr.eq(bus.addr)]
        from_output = Signal()
        with m.If(bus.r_en):
            m.d.sync += from_output.eq(bus.region == REGION_OUTPUT)
        m.d.comb += bus.r_data.eq(Mux(from_output, out_rd.data, in_rd.data))

        # ---- RUN: input memory -> engine -> output memory ---------------------------------------------------------
        ptr = Signal(range(max(n_in, n_out) + 1))
        valid = Signal()                     # in_rd.data holds element ptr-1 for act_in
        busy, done = Signal(), Signal()
        m.d.comb += [link.busy.eq(busy), link.done.eq(done), link.cycles.eq(eng.cycles), self.running.eq(busy)]
        m.d.comb += [eng.act_in.payload.eq(in_rd.data), eng.act_in.valid.eq(valid)]
        m.d.comb += [out_wr.addr.eq(ptr), out_wr.data.eq(eng.act_out.payload)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(link.run):
                    m.d.sync += [busy.eq(1), done.eq(0), ptr.eq(0), valid.eq(0)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                # a read is issued whenever the element in flight is taken (or none is)
                advance = ~valid | eng.act_in.ready
                m.d.comb += [in_rd.addr.eq(ptr), in_rd.en.eq(advance)]
                with m.If(advance):
                    m.d.sync += valid.eq(ptr < n_in)
                    with m.If(ptr < n_in):
                        m.d.sync += ptr.eq(ptr + 1)
                    with m.Elif(~valid):
                        m.next = "START"
            with m.State("START"):
                m.d.comb += eng.start.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(eng.done):
                    m.d.sync += ptr.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [eng.act_out.ready.eq(1), out_wr.en.eq(eng.act_out.valid)]
                with m.If(eng.act_out.valid):
                    m.d.sync += ptr.eq(ptr + 1)
                    with m.If(ptr == n_out - 1):
                        m.d.sync += [busy.eq(0), done.eq(1), self.runs.eq(self.runs + 1)]
                        m.next = "IDLE"
        return m

