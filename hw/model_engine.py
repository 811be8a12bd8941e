"""ModelEngine: a whole network as a chain of LayerEngines and pool units behind one interface.

Stages run one after another (no overlap between layers): the first LayerEngine computes from its
input buffer, then its ``act_out`` streams through the following pool units (max-pool, average-pool:
:mod:`.pools`; if any) into the next
LayerEngine's ``act_in``, which is then started, and so on. ``done`` rises when the last LayerEngine
is done; its outputs (through any trailing pools) are read from ``act_out``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import MODEL_INPUT, AvgPoolLayer, FlattenLayer, MaxPoolLayer, QuantLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig

from .cycles import model_cycles, utilization
from .engine import engine_signature
from .engines import build_engine, plan_layer
from .plan import EngineLimits
from .pools import check_pool, is_pool, pool_cycles, pool_unit


def _size(shape) -> int:
    return shape[0] * shape[1] * shape[2]


@dataclass
class SegmentPlan:
    """One layer engine's plan and the pool layers (max or average) that follow it (before the next engine)."""
    engine: object
    pools: list[MaxPoolLayer | AvgPoolLayer] = field(default_factory=list)

    @property
    def out_elements(self) -> int:
        return _size(self.pools[-1].out_shape if self.pools else self.engine.layer.out_shape)


@dataclass
class ModelPlan:
    """Plain-data plan of a :class:`ModelEngine`: the segments and the exact cycle model."""
    model: QuantModel
    segments: list[SegmentPlan]
    cycle_model: dict

    def cycles(self, x=None) -> int:
        """Cycles from start to done for input ``x`` (flat CHW ints): every engine's own per-image model
        fed with the golden model's activations; without ``x``, the data-independent total."""
        return self.cycle_model["total"] if x is None else _model_total(self, x)


def _model_total(plan: ModelPlan, x) -> int:
    import numpy as np
    import torch

    from sparsyn.sw.golden import run_golden
    outs = run_golden(plan.model, torch.as_tensor(np.asarray(x, dtype=np.int64)).reshape(1, *plan.model.input_shape))
    by_name = {l.name: o for l, o in zip(plan.model.layers, outs)}
    index = {l.name: i for i, l in enumerate(plan.model.layers)}
    totals = []
    for seg in plan.segments:
        i = index[seg.engine.layer.name]
        layer_in = x if i == 0 else by_name[plan.model.layers[i - 1].name].reshape(-1)
        totals.append(seg.engine.cycles(np.asarray(layer_in).reshape(-1)))
    return model_cycles(totals, handovers(plan.segments))["total"]


def handovers(segments) -> list:
    """Per hand-over: (elements leaving the engine, each following pool's cycles after its last input)."""
    return [(s.engine.layer.n * s.engine.layer.pixels, [pool_cycles(p) for p in s.pools]) for s in segments[:-1]]


def check_chain(model: QuantModel) -> None:
    """Refuse (one line) a graph: the whole-model engines stream each layer's output into the next layer."""
    for i, layer in enumerate(model.layers):
        srcs = model.sources(i)
        if srcs != ((model.layers[i - 1].name,) if i else (MODEL_INPUT,)):
            what = f"adds {srcs[0]!r} and {srcs[1]!r}" if len(srcs) > 1 else f"reads {srcs[0]!r}, not the layer before it"
            raise SparsynError(f"model {model.name} is a graph (layer {layer.name} {what}); the whole-model engines "
                               "run a chain of layers, each streaming into the next: check a graph layer by layer "
                               "with 'sparsyn sim'")


def plan_model(model: QuantModel, packed: dict, array: ArrayConfig | None = None,
               limits: EngineLimits = EngineLimits()) -> ModelPlan:
    """Plan every layer of ``model`` (one line on the first refusal; nothing is constructed)."""
    check_chain(model)
    segments: list[SegmentPlan] = []
    size = _size(model.input_shape)
    for layer in model.layers:
        if _size(layer.in_shape) != size:
            raise SparsynError(f"layer {layer.name} takes {_size(layer.in_shape)} inputs but the previous "
                               f"layer gives {size}; the manifest is inconsistent, re-run 'sparsyn compress'")
        size = _size(layer.out_shape)
        if isinstance(layer, QuantLayer):
            if layer.name not in packed:
                raise SparsynError(f"layer {layer.name} has no packed weights; re-run 'sparsyn compress'")
            segments.append(SegmentPlan(plan_layer(layer, packed[layer.name], array, limits)))
        elif is_pool(layer):
            if not segments:
                raise SparsynError(f"model {model.name} starts with {layer.kind} {layer.name}; the ModelEngine "
                                   "needs a conv/linear first layer (pool the input in software)")
            check_pool(layer)
            segments[-1].pools.append(layer)
        elif not isinstance(layer, FlattenLayer):
            raise SparsynError(f"layer {layer.name} of kind {layer.kind} has no hardware unit")
    if not segments:
        raise SparsynError(f"model {model.name} has no conv/linear layer to run")
    cm = model_cycles([s.engine.model["total"] for s in segments], handovers(segments))
    macs = sum(s.engine.model["useful_macs"] for s in segments)
    # one array's MAC lanes (the widest layer's PE) over the whole run, transfers included
    arr = segments[0].engine.array
    lanes = max(s.engine.model.get("pe_macs", s.engine.array.lanes) for s in segments)
    cm.update(useful_macs=macs, utilization=utilization(macs, arr.rows, arr.cols, cm["total"], lanes))
    return ModelPlan(model, segments, cm)


@dataclass
class Segment:
    """One layer engine and the pool units that follow it (before the next engine)."""
    engine: object
    pools: list = field(default_factory=list)


class ModelEngine(wiring.Component):
    """The whole network with the LayerEngine interface (act_in, start, busy, done, cycles, act_out).

    Latency: :func:`sparsyn.hw.cycles.model_cycles` ``["total"]`` cycles from start to done:
    every layer's own total plus one cycle to see its ``done``, and per hand-over the transfer of the
    activations (one element per cycle, plus each pool unit's time after its last input) and one start cycle.

    Parameters
    ----------
    plan : ModelPlan (from :func:`plan_model`)
    """

    def __init__(self, plan: ModelPlan):
        self.plan = plan
        self.model = plan.model
        self.segments = [Segment(build_engine(s.engine), [pool_unit(p) for p in s.pools]) for s in plan.segments]
        self.cycle_model = plan.cycle_model
        super().__init__(engine_signature())

    @property
    def in_elements(self) -> int:
        return _size(self.model.input_shape)

    @property
    def out_elements(self) -> int:
        return self.plan.segments[-1].out_elements

    def elaborate(self, platform):
        m = Module()
        segs = self.segments
        for i, seg in enumerate(segs):
            m.submodules[f"layer{i}_{seg.engine.layer.name}"] = seg.engine
            for j, pool in enumerate(seg.pools):
                m.submodules[f"pool{i}_{j}_{pool.layer.name}"] = pool

        busy, done = Signal(), Signal()
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        first = segs[0].engine
        m.d.comb += [first.act_in.payload.eq(self.act_in.payload),
                     first.act_in.valid.eq(self.act_in.valid & ~busy),
                     self.act_in.ready.eq(first.act_in.ready & ~busy)]

        # hand-over chains: engine.act_out -> pools -> next engine's act_in (gated) or act_out (last)
        xfer = [Signal(name=f"xfer_{i}") for i in range(len(segs))]
        for i, seg in enumerate(segs):
            sink = segs[i + 1].engine.act_in if i + 1 < len(segs) else self.act_out
            src, gated = seg.engine.act_out, i + 1 < len(segs)
            for pool in seg.pools:
                self._link(m, src, pool.i, xfer[i] if gated and src is seg.engine.act_out else None)
                src = pool.o
            self._link(m, src, sink, xfer[i] if gated and src is seg.engine.act_out else None)

        count = Signal(range(max(max(_size(s.engine.layer.in_shape) for s in segs), 2) + 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += first.start.eq(1)
                    m.d.sync += [busy.eq(1), done.eq(0), self.cycles.eq(0)]
                    m.next = "RUN0"
            for i, seg in enumerate(segs):
                with m.State(f"RUN{i}"):
                    with m.If(seg.engine.done):
                        if i + 1 == len(segs):
                            m.d.sync += [busy.eq(0), done.eq(1)]
                            m.next = "IDLE"
                        else:
                            m.d.sync += count.eq(0)
                            m.next = f"XFER{i}"
                if i + 1 < len(segs):
                    nxt = segs[i + 1].engine
                    n_in = _size(nxt.layer.in_shape)
                    with m.State(f"XFER{i}"):
                        m.d.comb += xfer[i].eq(1)
                        with m.If(nxt.act_in.valid & nxt.act_in.ready):
                            m.d.sync += count.eq(count + 1)
                            with m.If(count == n_in - 1):
                                m.next = f"START{i + 1}"
                    with m.State(f"START{i + 1}"):
                        m.d.comb += nxt.start.eq(1)
                        m.next = f"RUN{i + 1}"
        return m

    @staticmethod
    def _link(m, src, dst, gate):
        """Connect two streams; with ``gate``, the handshake only happens while the gate is high."""
        m.d.comb += dst.payload.eq(src.payload)
        if gate is None:
            m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
        else:
            m.d.comb += [dst.valid.eq(src.valid & gate), src.ready.eq(dst.ready & gate)]
