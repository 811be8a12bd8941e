"""The sequenced model engine: ONE datapath (array, activation feeder, accumulator, requant, output
buffer) and one set of max-pool units reused layer after layer, under a small sequencer.

Where the :class:`~sparsyn.hw.model_engine.ModelEngine` builds a LayerEngine per layer, this engine builds
the LayerEngine's components once, for the list of the model's layer plans (:mod:`.per_layer`): its memories
are as large as the largest layer needs and hold every layer's ROM words end to end (weights, lane
descriptors, pass tables, bias, requant constants — the manifest's ROM files, word for word, at the offsets
:attr:`SequencedPlan.rom_offsets` lists), its array has one PE datapath per distinct kind the layers use
(:mod:`.shared_product`), and the per-layer geometry is selected by the active layer.

Sequencer (per image)::

    IDLE --start--> RUN layer 0 --done--> XFER: its outputs, through the max-pool units of the pools that
    follow it, into the datapath's input buffer (now with the next layer's geometry) --> START the next
    layer --> RUN ... --> after the last layer: done, its outputs (through trailing pools) on ``act_out``

Latency: the same as the ModelEngine's, :func:`sparsyn.hw.cycles.model_cycles` ``["total"]`` (each layer's
own total plus one cycle to see its ``done``; per hand-over one cycle per element, the pools' scan time and
one start cycle) — the datapath runs every layer with exactly that layer's FSM timing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import MaxPoolLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig

from .cycles import utilization
from .engine import LayerEngine, engine_signature
from .maxpool import MaxPoolUnit
from .memories import rom_offsets
from .model_engine import ModelPlan, plan_model
from .per_layer import LayerSelect
from .plan import EngineLimits, LayerPlan
from .shared_product import datapath_kinds

#: The row feeds whose feeder can be shared by layers of different geometry.
SHARED_FEEDS = ("lanes",)


@dataclass
class SequencedPlan:
    """Plain-data plan of a :class:`SequencedEngine`.

    model : QuantModel; layers : the compute layers' LayerPlans in order; pools : per compute layer, the
    max-pool layers that follow it; array : R x C with the most lanes any layer's PE takes;
    cycle_model : the exact cycle model (:func:`~sparsyn.hw.cycles.model_cycles` plus useful MACs and the
    utilization of the shared array); kinds : the distinct PE datapaths (one packed layer each) and per
    layer its kind.
    """
    model: QuantModel
    layers: list[LayerPlan]
    pools: list[list[MaxPoolLayer]]
    array: ArrayConfig
    cycle_model: dict
    base: ModelPlan = field(repr=False, default=None)

    @property
    def in_elements(self) -> int:
        return self.layers[0].in_elements

    @property
    def out_elements(self) -> int:
        return self.base.segments[-1].out_elements

    @property
    def rom_offsets(self) -> dict[str, dict[str, int]]:
        """ROM name -> layer name -> first word of that layer's ROM in the shared memory of that name."""
        out = {}
        for name in self.layers[0].packed.roms:
            if name in self.layers[0].packed.meta.get("tables", {}):
                continue
            roms = [p.packed.roms[name] for p in self.layers]
            out[name] = dict(zip((p.layer.name for p in self.layers), rom_offsets(roms)))
        return out

    @property
    def rom_bits(self) -> int:
        """Bits of every memory the engine initialises (= the manifest's ROM bits of the model)."""
        return sum(p.rom_bits for p in self.layers)

    def cycles(self, x=None) -> int:
        return self.base.cycles(x)


def plan_sequenced(model: QuantModel, packed: dict, array: ArrayConfig | None = None,
                   limits: EngineLimits = EngineLimits()) -> SequencedPlan:
    """Plan ``model`` on one shared datapath; refuses (one line) what the sequenced engine cannot share."""
    base = plan_model(model, packed, array, limits)
    plans = [s.engine for s in base.segments]
    for p in plans:
        if not isinstance(p, LayerPlan):
            raise SparsynError(f"layer {p.layer.name} ({p.packed.scheme}) runs on its own engine, which the "
                               "sequenced model engine does not dispatch yet; use the per-layer ModelEngine")
    feeds = {p.feed for p in plans}
    if len(feeds) > 1 or not feeds <= set(SHARED_FEEDS):
        raise SparsynError(f"model {model.name}: its layers use the row feeds {sorted(feeds)}; the sequenced engine "
                           f"shares the {', '.join(SHARED_FEEDS)} feed only so far; use the per-layer ModelEngine")
    phases = {p.phases for p in plans}
    if len(phases) > 1:
        raise SparsynError(f"model {model.name}: its layers hold each step for {sorted(phases)} cycles; one shared "
                           "array needs the same PE phases in every layer (compress with one setting)")
    shapes = {(p.array.rows, p.array.cols) for p in plans}
    if len(shapes) > 1:
        raise SparsynError(f"model {model.name}: its layers were packed for different arrays {sorted(shapes)}; "
                           "re-run 'sparsyn compress'")
    r, c = shapes.pop()
    arr = ArrayConfig(r, c, max(p.array.lanes for p in plans))
    cm = dict(base.cycle_model)
    lanes = max(p.model.get("pe_macs", p.array.lanes) for p in plans)
    cm["utilization"] = utilization(cm["useful_macs"], r, c, cm["total"], lanes)
    cm["datapaths"] = len(datapath_kinds([p.packed for p in plans])[0])
    return SequencedPlan(model, plans, [list(s.pools) for s in base.segments], arr, cm, base)


class SequencedEngine(wiring.Component):
    """A whole network on one shared datapath, with the engine interface (act_in, start, busy, done,
    cycles, act_out) of :func:`~sparsyn.hw.engine.engine_signature` (see the module docstring for the
    sequencer and the latency).

    Parameters
    ----------
    plan : SequencedPlan (from :func:`plan_sequenced`)

    Attributes
    ----------
    datapath : LayerEngine — the shared datapath (its memories: ``datapath.rom_memories`` after elaboration).
    cycle_model : dict — :attr:`SequencedPlan.cycle_model`.
    """

    def __init__(self, plan: SequencedPlan):
        self.plan = plan
        self.model = plan.model
        self.cycle_model = plan.cycle_model
        self.datapath = LayerEngine(plan.layers)
        depth = max((len(p) for p in plan.pools), default=0)
        #: unit j runs the j-th pool after any layer: its pools, and per layer the index among them (or None)
        self.unit_pools = [[p[j] for p in plan.pools if len(p) > j] for j in range(depth)]
        self.units = [MaxPoolUnit(pools) for pools in self.unit_pools]
        super().__init__(engine_signature())

    @property
    def in_elements(self) -> int:
        return self.plan.in_elements

    @property
    def out_elements(self) -> int:
        return self.plan.out_elements

    def elaborate(self, platform):
        m = Module()
        plan, dp = self.plan, self.datapath
        n = len(plan.layers)
        m.submodules.datapath = dp
        for j, unit in enumerate(self.units):
            m.submodules[f"pool{j}"] = unit

        seg = Signal(range(max(n, 2)))         # the layer being run / handed over / read out
        busy, done, xfer = Signal(), Signal(), Signal()
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # the datapath's geometry: the running layer; in a hand-over already the next (its input is written)
        cur = Signal(range(max(n, 2)))
        if n > 1:
            m.d.comb += dp.layer_index.eq(cur)

        # ---- routing of the segment ``seg``: datapath outputs -> its pools -> next layer's input / act_out ------
        def link(src, dst, gate):
            m.d.comb += dst.payload.eq(src.payload)
            if gate is None:
                m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
            else:
                m.d.comb += [dst.valid.eq(src.valid & gate), src.ready.eq(dst.ready & gate)]

        with m.Switch(seg):
            for i, pools in enumerate(plan.pools):
                with m.Case(i):
                    src, last = dp.act_out, i == n - 1
                    for j, pool in enumerate(pools):
                        unit = self.units[j]
                        if len(self.unit_pools[j]) > 1:
                            m.d.comb += unit.layer_index.eq(self.unit_pools[j].index(pool))
                        link(src, unit.i, None if last or src is not dp.act_out else xfer)
                        src = unit.o
                    link(src, self.act_out if last else dp.act_in,
                         None if last or src is not dp.act_out else xfer)
        # the first layer's input from outside, while idle
        with m.If(~busy):
            m.d.comb += [dp.act_in.payload.eq(self.act_in.payload), dp.act_in.valid.eq(self.act_in.valid),
                         self.act_in.ready.eq(dp.act_in.ready)]

        sel = LayerSelect(m, seg if n > 1 else None, n)
        n_next = sel([plan.layers[i + 1].in_elements if i + 1 < n else 1 for i in range(n)], name="next_inputs")
        count = Signal(range(max(p.in_elements for p in plan.layers) + 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += dp.start.eq(1)
                    m.d.sync += [busy.eq(1), done.eq(0), self.cycles.eq(0), seg.eq(0), cur.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(dp.done):
                    with m.If(seg == n - 1):
                        # the input of the next image is written with layer 0's geometry
                        m.d.sync += [busy.eq(0), done.eq(1), cur.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [count.eq(0), cur.eq(cur + 1)]
                        m.next = "XFER"
            with m.State("XFER"):
                m.d.comb += xfer.eq(1)
                with m.If(dp.act_in.valid & dp.act_in.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == n_next - 1):
                        m.next = "START"
            with m.State("START"):
                m.d.comb += dp.start.eq(1)
                m.d.sync += seg.eq(seg + 1)
                m.next = "RUN"
        return m
