"""The sequenced model engine: ONE datapath (array, activation feeder, accumulator, requant, output
buffer) and one set of pool units (max-pool, average-pool) reused layer after layer, under a small sequencer.

Where the :class:`~sparsyn.hw.model_engine.ModelEngine` builds a LayerEngine per layer, this engine builds
the LayerEngine's components once, for the list of the model's layer plans (:mod:`.per_layer`): its memories
are as large as the largest layer needs and hold every layer's ROM words end to end (weights, lane
descriptors, pass tables, bias, requant constants — the manifest's ROM files, word for word, at the offsets
:attr:`SequencedPlan.rom_offsets` lists), its array has one PE datapath per distinct kind the layers use
(:mod:`.shared_product`), and the per-layer geometry is selected by the active layer.

Sequencer (per image)::

    IDLE --start--> RUN layer 0 --done--> XFER: its outputs, through the pool units of the pools that
    follow it, into the datapath's input buffer (now with the next layer's geometry) --> START the next
    layer --> RUN ... --> after the last layer: done, its outputs (through trailing pools) on ``act_out``

Latency: the same as the ModelEngine's, :func:`sparsyn.hw.cycles.model_cycles` ``["total"]`` (each layer's
own total plus one cycle to see its ``done``; per hand-over one cycle per element, the pools' time and
one start cycle) — the datapath runs every layer with exactly that layer's FSM timing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Cat, Const, Fragment, Module, Mux, Signal
from amaranth.lib import wiring

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import AvgPoolLayer, MaxPoolLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig

from .cycles import utilization
from .descriptor import DescriptorScope, DescriptorTable, descriptor_memory, descriptor_scope, record_descriptor
from .engine import LayerEngine, engine_signature
from .engines import build_engine
from .memories import rom_offsets
from .model_engine import ModelPlan, plan_model
from .mux import mux_tree
from .per_layer import LayerSelect
from .plan import EngineLimits, LayerPlan, with_phases
from .pools import POOL_KINDS, pool_unit
from .shared_product import datapath_kinds



@dataclass
class SequencedPlan:
    """Plain-data plan of a :class:`SequencedEngine`.

    model : QuantModel; layers : the compute layers' plans in order (LayerPlans run on the shared datapath; a
    layer whose scheme brings its own engine, e.g. PermDNN's, keeps its plan and engine, dispatched by the
    sequencer); pools : per compute layer, the pool layers (max, average) that follow it; array : R x C with the most
    lanes any layer's PE takes; cycle_model : the exact cycle model (:func:`~sparsyn.hw.cycles.model_cycles` plus
    useful MACs, ``mac_units`` — every multiply-accumulate unit of the design, the engines of layers with their own
    included —, the utilization of them over the whole network and ``datapaths``, the PE datapath kinds of the
    shared array).
    """
    model: QuantModel
    layers: list[LayerPlan]
    pools: list[list[MaxPoolLayer | AvgPoolLayer]]
    array: ArrayConfig
    cycle_model: dict
    base: ModelPlan = field(repr=False, default=None)
    #: the per-layer descriptor table (:mod:`.descriptor`): the manifest's, or recorded from the design
    descriptor: DescriptorTable | None = field(repr=False, default=None)

    @property
    def steps(self) -> list[str]:
        """The compute layers' names in order: the descriptor table's words."""
        return [p.layer.name for p in self.layers]

    @property
    def step_aliases(self) -> dict[str, int]:
        """Each pool layer -> the step of the compute layer it follows."""
        return {pool.name: i for i, pools in enumerate(self.pools) for pool in pools}

    @property
    def in_elements(self) -> int:
        return self.layers[0].in_elements

    @property
    def out_elements(self) -> int:
        return self.base.segments[-1].out_elements

    @property
    def shared(self) -> list[LayerPlan]:
        """The plans of the layers on the shared datapath, in order."""
        return [p for p in self.layers if isinstance(p, LayerPlan)]

    @property
    def rom_offsets(self) -> dict[str, dict[str, int]]:
        """ROM name -> layer name -> first word of that layer's ROM in the shared memory of that name."""
        out = {}
        shared = self.shared
        for name in shared[0].packed.roms:
            if name in shared[0].packed.meta.get("tables", {}):
                continue
            roms = [p.packed.roms[name] for p in shared]
            out[name] = dict(zip((p.layer.name for p in shared), rom_offsets(roms)))
        return out

    @property
    def rom_bits(self) -> int:
        """Bits of every memory the engine initialises (= the manifest's ROM bits of the model, the
        descriptor table included)."""
        return sum(p.rom_bits for p in self.layers) + (self.descriptor.bits if self.descriptor else 0)

    def cycles(self, x=None) -> int:
        return self.base.cycles(x)


def plan_sequenced(model: QuantModel, packed: dict, array: ArrayConfig | None = None,
                   limits: EngineLimits = EngineLimits(), descriptor: DescriptorTable | None = None) -> SequencedPlan:
    """Plan ``model`` on one shared datapath; refuses (one line) what the sequenced engine cannot share.

    ``descriptor``: the manifest's descriptor table; it must be exactly the table of this design (refused in one
    line naming the first difference otherwise). Without one the plan records it (:func:`.descriptor.record_descriptor`).
    """
    base = plan_model(model, packed, array, limits)
    every = [s.engine for s in base.segments]
    plans = [p for p in every if isinstance(p, LayerPlan)]        # the layers on the shared datapath
    if not plans:
        raise SparsynError(f"model {model.name} has no layer on the shared array; its engines run it directly")
    feeds = {p.feed for p in plans}
    if len(feeds) > 1 and not all(p.packed.meta.get("implicit_rows") for p in plans):
        raise SparsynError(f"model {model.name}: its layers use the row feeds {sorted(feeds)}, some with lane "
                           "descriptor ROMs; one datapath shares several feeds only when every layer's rows are "
                           "implicit (window / channels feeds); compress every layer with one scheme")
    kernels = {tuple(p.layer.kernel) for p in plans if p.feed == "window"}
    if len(kernels) > 1:
        raise SparsynError(f"model {model.name}: its window-fed layers have kernels {sorted(kernels)}; one window "
                           "feeder shifts one kernel size; use the per-layer ModelEngine")
    # a time-multiplexed PE datapath (pattern with fewer multipliers than kept weights) holds each step for its
    # phases; on one array every layer holds its steps for the most phases any layer's datapath needs
    phases = max(p.phases for p in plans)
    if any(p.phases != phases for p in plans):
        plans = [with_phases(p, phases) for p in plans]
        shared = iter(plans)
        every = [next(shared) if isinstance(p, LayerPlan) else p for p in every]
        from .cycles import model_cycles
        from .model_engine import handovers
        for seg, p in zip(base.segments, every):
            seg.engine = p
        base.cycle_model.update(model_cycles([s.engine.model["total"] for s in base.segments],
                                             handovers(base.segments)))
    shapes = {(p.array.rows, p.array.cols) for p in plans}
    if len(shapes) > 1:
        raise SparsynError(f"model {model.name}: its layers were packed for different arrays {sorted(shapes)}; "
                           "re-run 'sparsyn compress'")
    r, c = shapes.pop()
    arr = ArrayConfig(r, c, max(p.array.lanes for p in plans))
    cm = dict(base.cycle_model)
    # the physical limit: every multiply-accumulate unit of the design — the shared array's R x C PEs of the most
    # MACs per cycle any layer's PE does, plus those of the engines the layers with their own bring
    lanes = max(p.model.get("pe_macs", p.array.lanes) for p in plans)
    own = sum(p.array.rows * p.array.cols * p.model.get("pe_macs", p.array.lanes)
              for p in every if not isinstance(p, LayerPlan))
    cm["mac_units"] = r * c * lanes + own
    cm["utilization"] = utilization(cm["useful_macs"], 1, 1, cm["total"], cm["mac_units"])
    cm["datapaths"] = len(datapath_kinds([p.packed for p in plans])[0])
    plan = SequencedPlan(model, every, [list(s.pools) for s in base.segments], arr, cm, base)
    recorded = record_descriptor(plan)
    if descriptor is not None:
        diff = descriptor.first_difference(recorded)
        if diff is not None:
            raise SparsynError(f"the manifest's descriptor table does not belong to this design: {diff}; "
                               "re-run 'sparsyn compress'")
    plan.descriptor = descriptor if descriptor is not None else recorded
    return plan


class SequencedEngine(wiring.Component):
    """A whole network on one shared datapath, with the engine interface (act_in, start, busy, done,
    cycles, act_out) of :func:`~sparsyn.hw.engine.engine_signature` (see the module docstring for the
    sequencer and the latency).

    Parameters
    ----------
    plan : SequencedPlan (from :func:`plan_sequenced`)
    weights_in : ``"ebr"``, ``"spram"`` or ``"passstore"`` — the shared weight memory (see :class:`~.engine.LayerEngine`).
    scratch : ``"ebr"`` or ``"spram"`` — the activation scratch: the shared output buffer every layer writes and
        the next layer's input is streamed from (a SPRAM for the large activations of a bigger model).
    acts : ``"ebr"`` or ``"spram"`` — the activation buffer copies of the ``lanes`` feed (the running layer's input
        image, one per lane; see :class:`~.engine.LayerEngine`).

    Attributes
    ----------
    datapath : LayerEngine — the shared datapath (its memories: ``datapath.rom_memories`` after elaboration).
    descriptor_rom : Memory or None — the per-layer descriptor table (:mod:`.descriptor`), word for word the
        manifest's ``descriptor.hex`` (after elaboration; None while every per-layer value is a constant).
    cycle_model : dict — :attr:`SequencedPlan.cycle_model`.
    """

    def __init__(self, plan: SequencedPlan, *, weights_in: str = "ebr", scratch: str = "ebr", acts: str = "ebr",
                 record: DescriptorScope | None = None):
        self.plan = plan
        #: a recording scope (:func:`.descriptor.record_descriptor`), else the plan's table is read
        self.record = record
        self.descriptor_rom = None
        self.model = plan.model
        self.cycle_model = plan.cycle_model
        shared = plan.shared
        #: where the shared datapath's weights are: ``"ebr"`` (from the bitstream) or ``"spram"`` (loaded by the host)
        self.weights_in = weights_in
        #: where the activation scratch (the shared output buffer) is: ``"ebr"`` or ``"spram"``
        self.scratch = scratch
        #: where the activation buffer copies are: ``"ebr"`` or ``"spram"``
        self.acts = acts
        self.datapath = LayerEngine(shared if len(shared) > 1 else shared[0], weights_in=weights_in, scratch=scratch,
                                    acts=acts)
        #: the engines of the layers that bring their own (built from their plans, one each)
        self.own = [build_engine(p) for p in plan.layers if not isinstance(p, LayerPlan)]
        # per layer: (engine, index of the layer on the shared datapath or None)
        self.route, k = [], 0
        for p in plan.layers:
            if isinstance(p, LayerPlan):
                self.route.append((self.datapath, shared.index(p)))
            else:
                self.route.append((self.own[k], None))
                k += 1
        depth = max((len(p) for p in plan.pools), default=0)
        #: per pool unit, (j, kind): it runs the j-th pool after any layer when that pool is of its kind (the
        #: max-pool units first, as before average pools existed, so their descriptor fields keep their names)
        self.unit_keys = [(j, kind) for kind in POOL_KINDS for j in range(depth)
                          if any(len(p) > j and p[j].kind == kind for p in plan.pools)]
        #: per pool unit, the pools it runs (``layer_index`` selects among them)
        self.unit_pools = [[p[j] for p in plan.pools if len(p) > j and p[j].kind == kind] for j, kind in self.unit_keys]
        self.units = [pool_unit(pools) for pools in self.unit_pools]
        members = dict(engine_signature().members)
        if weights_in != "ebr":
            members["weights_load"] = self.datapath.signature.members["weights_load"]
        super().__init__(wiring.Signature(members))

    @property
    def weight_image(self) -> bytes:
        """What the host writes into the SPRAM weight store: the ``weights`` ROM words of the shared layers, end to
        end (:func:`~sparsyn.hw.spram.spram_image`)."""
        from .spram import spram_image
        return spram_image(self.datapath.weight_words, self.datapath.weight_width)

    @property
    def in_elements(self) -> int:
        return self.plan.in_elements

    @property
    def out_elements(self) -> int:
        return self.plan.out_elements

    def elaborate(self, platform):
        plan = self.plan
        table = plan.descriptor
        if self.record is not None:
            scope = self.record
        else:
            table = table if table is not None else DescriptorTable(plan.steps, [], [0] * len(plan.steps))
            scope = DescriptorScope(plan.steps, table, descriptor_memory(table) if table.fields else None,
                                    plan.step_aliases)
        # the datapath and the pool units are elaborated here, in the scope: their per-layer values are read
        # from the descriptor table (or recorded into it)
        with descriptor_scope(scope):
            m = self._elaborate(platform)
        if self.record is None and table.fields:
            unread = [f.name for f in table.fields if f.name not in scope.used]
            if unread:
                raise SparsynError(f"the descriptor table's field {unread[0]} is read by no part of the design; "
                                   "re-run 'sparsyn compress'")
            m.submodules.descriptor = self.descriptor_rom = scope.memory
        return m

    @staticmethod
    def _unit_name(j: int, kind: str) -> str:
        """The submodule name of the pool unit (j, kind): ``pool<j>`` for a max-pool unit, ``<kind><j>`` else."""
        return f"pool{j}" if kind == "maxpool" else f"{kind}{j}"

    def _elaborate(self, platform):
        m = Module()
        plan, dp, route = self.plan, self.datapath, self.route
        n, n_shared = len(plan.layers), len(plan.shared)
        m.submodules.datapath = Fragment.get(dp, platform)
        if self.weights_in != "ebr":
            wiring.connect(m, wiring.flipped(self.weights_load), dp.weights_load)
        for k, eng in enumerate(self.own):
            m.submodules[f"engine_{plan.layers[[r[0] for r in route].index(eng)].layer.name}"] = eng
        for (j, kind), unit in zip(self.unit_keys, self.units):
            m.submodules[self._unit_name(j, kind)] = Fragment.get(unit, platform)

        seg = Signal(range(max(n, 2)))         # the layer being run / handed over / read out
        busy, done, xfer = Signal(), Signal(), Signal()
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # the shared datapath's layer: the running one; in a hand-over already the next (its input is written)
        cur = Signal(range(max(n_shared, 2)))
        if n_shared > 1:
            m.d.comb += dp.layer_index.eq(cur)
        sel = LayerSelect(m, seg if n > 1 else None, plan.layers, self)
        first_shared = route[0][1] or 0
        next_shared = sel([(route[i + 1][1] or 0) if i + 1 < n else first_shared for i in range(n)],
                          name="next_shared")

        # ---- routing of the segment ``seg``: its engine's outputs -> its pools -> next engine's input / act_out ------
        # Every stream edge (condition, source, sink, gate) is collected, then each sink's valid / payload and each
        # source's ready are built as expressions (continuous assignments: an ``always @*`` case on ``seg`` would
        # stay X in Icarus while ``seg`` keeps its initial value, see sparsyn.hw.mux.mux_tree).
        at = [Signal(name=f"at_{i}") for i in range(n)]
        m.d.comb += [at[i].eq(seg == i) for i in range(n)]
        edges = []                                   # (condition, source stream, sink stream)
        for i, pools in enumerate(plan.pools):
            eng, last = route[i][0], i == n - 1
            src, cond = eng.act_out, at[i] if last else at[i] & xfer
            for j, pool in enumerate(pools):
                unit = self.units[self.unit_keys.index((j, pool.kind))]
                edges.append((cond, src, unit.i))
                # after a pool unit: the segment's hand-over (busy) or, after the last layer, its read-out
                src, cond = unit.o, at[i] if last else at[i] & busy
            edges.append((cond, src, self.act_out if last else route[i + 1][0].act_in))
        for (j, kind), unit, pools in zip(self.unit_keys, self.units, self.unit_pools):
            if len(pools) > 1:
                m.d.comb += unit.layer_index.eq(sel([pools.index(p[j]) if len(p) > j and p[j].kind == kind else 0
                                                     for p in plan.pools], name=f"{self._unit_name(j, kind)}_layer"))
        first = route[0][0]
        edges.append((~busy, self.act_in, first.act_in))    # the first layer's input from outside, while idle
        sinks, sources = {}, {}
        for cond, src, dst in edges:
            sinks.setdefault(id(dst), (dst, []))[1].append((cond, src))
            sources.setdefault(id(src), (src, []))[1].append((cond, dst))
        for dst, ins in sinks.values():
            payload = ins[-1][1].payload
            for cond, src in reversed(ins[:-1]):
                payload = Mux(cond, src.payload, payload)
            m.d.comb += [dst.payload.eq(payload),
                         dst.valid.eq(Cat(*[cond & src.valid for cond, src in ins]).any())]
        for src, outs in sources.values():
            m.d.comb += src.ready.eq(Cat(*[cond & dst.ready for cond, dst in outs]).any())
        engine_done = Signal()
        m.d.comb += engine_done.eq(mux_tree(seg, [route[i][0].done for i in range(n)]))

        n_next = sel([plan.layers[i + 1].in_elements if i + 1 < n else 1 for i in range(n)], name="next_inputs")
        count = Signal(range(max(p.in_elements for p in plan.layers) + 1))
        next_ready = Signal()
        m.d.comb += next_ready.eq(mux_tree(seg, [route[i + 1][0].act_in.valid & route[i + 1][0].act_in.ready
                                                 for i in range(n - 1)] + [Const(0, 1)]))
        starting = Signal()                          # the START state: start the next layer's engine
        for eng in dict.fromkeys(r[0] for r in route):
            nexts = [i for i in range(n - 1) if route[i + 1][0] is eng]
            go = Cat(*[at[i] for i in nexts]).any() & starting if nexts else Const(0, 1)
            m.d.comb += eng.start.eq(go | ((eng is first) & self.start & ~busy))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), done.eq(0), self.cycles.eq(0), seg.eq(0), cur.eq(first_shared)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(engine_done):
                    with m.If(seg == n - 1):
                        # the input of the next image is written with the first layer's geometry
                        m.d.sync += [busy.eq(0), done.eq(1), cur.eq(first_shared)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += count.eq(0)
                        if n_shared > 1:
                            m.d.sync += cur.eq(next_shared)
                        m.next = "XFER"
            with m.State("XFER"):
                m.d.comb += xfer.eq(1)
                with m.If(next_ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == n_next - 1):
                        m.next = "START"
            with m.State("START"):
                m.d.comb += starting.eq(1)
                m.d.sync += seg.eq(seg + 1)
                m.next = "RUN"
        return m
