"""The plain-data plan of the permuted-diagonal engine: fit checks, geometry and its exact cycle model.

:class:`PermDiagPlan` has the public face every engine plan shares (:class:`~sparsyn.hw.plan.EnginePlan`):
``layer``, ``packed``, ``engine``, ``array`` (P PEs of M multipliers as ``ArrayConfig(P, 1, M)``),
``in_elements``, ``out_elements``, ``rom_bits``, ``model`` and ``cycles(x)`` — here exact *per image*,
because zero inputs are skipped.

Cycle model (:func:`permdiag_cycles`, exact for :class:`~sparsyn.hw.permdiag_engine.PermDiagEngine`; every
latency read from the component that owns it), with z = the image's nonzero inputs, T = slots (block rows
per lane), N*HW outputs::

    total = 1                         the registered start
          + 1                         ARM: the nonzero count is final, "another entry?" registered
          + z*T                       COMPUTE: one (nonzero input, slot) per cycle
          + 1                         the cycle that sees the last one issued
          + flush                     entry read + address stage + ROM read + PE pipeline - 2 (the last write lands)
          + N*HW                      DRAIN: one output row/pixel read per cycle
          + drain_latency             PE read + lane select + requant unit + 1 (publish after the last write)

The position of the nonzeros does not matter (the nonzero buffer compacts them while the input loads).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer
from sparsyn.sw.schemes.permdiag import check_roms

from .nonzero_buffer import NonzeroBuffer
from .permdiag_pe import PermDiagPE
from .plan import EngineLimits, LayerPlanBase, check_limits
from .requant import RequantUnit

#: ``start`` is registered before the FSM sees it.
START_REGISTER = 1
#: The ARM state between ``start`` and the first issue (the nonzero count of an input loaded in the cycle before
#: ``start`` is final one cycle after it).
ARM_CYCLES = 1
#: The registered weight / offset ROM address computation between the entry read and the ROM read.
ADDRESS_STAGE = 1
#: Read latency of the weight / offset / constant ROMs (block RAM read ports).
ROM_LATENCY = 1
#: Cycles from a drain read to the RequantUnit's input: PE accumulator read, lane select + bias register.
DRAIN_FRONT = 2


def flush_cycles() -> int:
    """FLUSH after the cycle that saw the last issue, until the last accumulator write has landed: the entry read,
    the registered address computation, the ROM read and the PE pipeline, less the issue and detect cycles."""
    return NonzeroBuffer.read_latency + ADDRESS_STAGE + ROM_LATENCY + PermDiagPE.latency - 2


def drain_latency() -> int:
    """From the last drain read to done: the value reaches the output buffer after the PE read, the lane
    select and the requant unit; ``done`` / publish follow in the next cycle."""
    return DRAIN_FRONT + RequantUnit.latency + 1


def permdiag_cycles(nonzeros: int, slots: int, outputs: int) -> int:
    """Cycles from ``start`` to ``done`` for an image with ``nonzeros`` nonzero inputs."""
    return START_REGISTER + ARM_CYCLES + nonzeros * slots + 1 + flush_cycles() + outputs + drain_latency()


@dataclass
class PermDiagPlan(LayerPlanBase):
    """The plain-data plan of one :class:`~sparsyn.hw.permdiag_engine.PermDiagEngine` (see the module
    docstring). ``meta`` is the packed layer's geometry (p, block rows / columns, PEs, multipliers, lanes,
    slots, offset bits)."""
    layer: QuantLayer
    packed: PackedLayer
    limits: EngineLimits
    meta: dict
    model: dict = field(default_factory=dict)
    engine: type | None = None

    @property
    def array(self) -> ArrayConfig:
        """The compute resources: P PEs x M multipliers (``ArrayConfig(P, 1, M)``)."""
        return ArrayConfig(self.meta["pes"], 1, self.meta["mults"])

    @property
    def acc_depth(self) -> int:
        """Accumulator words per multiplier: its T block rows x p rows x HW pixels."""
        return self.meta["slots"] * self.meta["p"] * self.layer.pixels

    def nonzeros(self, x) -> int:
        x = np.asarray(x).reshape(-1)
        if x.size != self.in_elements:
            raise SparsynError(f"layer {self.layer.name} takes {self.in_elements} inputs, got {x.size}")
        return int(np.count_nonzero(x))

    def cycles(self, x=None) -> int:
        """Exact cycles from ``start`` to ``done`` for input ``x`` (flat CHW ints); without ``x`` the worst case
        (every input nonzero)."""
        z = self.in_elements if x is None else self.nonzeros(x)
        return permdiag_cycles(z, self.meta["slots"], self.out_elements)

    def useful_macs(self, x) -> int:
        """Multiply-accumulates with a nonzero weight and a nonzero input for image ``x``."""
        x = np.asarray(x).reshape(self.layer.in_shape[0], -1)
        per_channel = np.count_nonzero(self.layer.weight, axis=0)            # nonzero weights per input channel
        return int((per_channel[:, None] * (x != 0)).sum())


def check_permdiag_fits(layer: QuantLayer, meta: dict, limits: EngineLimits) -> None:
    """Refuse (one line, naming the limit and the fix) a layer the engine's buffers cannot hold."""
    pixels = layer.pixels
    checks = [
        ("nonzero buffer", layer.in_shape[0] * pixels, limits.act_elements, "input elements (the zero-skip engine "
         "buffers a whole input)", "use a smaller input or raise EngineLimits.act_elements"),
        ("accumulators", meta["slots"] * meta["p"] * pixels, limits.acc_words, "words per multiplier (T*p*HW)",
         "use more pes / mults or raise EngineLimits.acc_words"),
        ("weight memory", meta["slots"] * meta["k"], limits.weight_depth, "words (T*K)",
         "use more pes / mults, a larger p, or raise EngineLimits.weight_depth"),
        ("output buffer", layer.n * pixels, limits.out_elements, "elements (N*HW)",
         "use fewer outputs or raise EngineLimits.out_elements"),
    ]
    check_limits(layer, checks, "permdiag engine's")


def plan_permdiag_layer(layer: QuantLayer, packed: PackedLayer, limits: EngineLimits = EngineLimits()) -> PermDiagPlan:
    """The plan of a permdiag layer; refuses (one line) foreign ROMs, a layer of another shape, a layer the
    engine does not run (kh x kw convs, strided / padded 1x1 convs) or one that does not fit ``limits``."""
    if layer.kind == "conv" and tuple(layer.kernel) != (1, 1):
        raise SparsynError(f"layer {layer.name} is a {layer.kernel[0]}x{layer.kernel[1]} conv; the permdiag engine "
                           "runs FC and 1x1 layers only")
    if layer.kind == "conv" and (layer.stride, layer.padding) != (1, 0):
        raise SparsynError(f"layer {layer.name} is a 1x1 conv with stride {layer.stride} / padding {layer.padding}; "
                           "the permdiag engine runs 1x1 convs of stride 1 without padding")
    m = check_roms(packed)
    if (m["n"], m["k"], m["pixels"]) != (layer.n, layer.k, layer.pixels):
        raise SparsynError(f"layer {layer.name}: its ROMs were packed for another layer shape; re-run 'sparsyn "
                           "compress'")
    check_permdiag_fits(layer, m, limits)
    plan = PermDiagPlan(layer, packed, limits, dict(m))
    z = plan.in_elements
    total = plan.cycles()
    macs = int(np.count_nonzero(layer.weight)) * layer.pixels
    lanes = m["lanes"]
    plan.model = {"total": total, "per_nonzero": m["slots"], "fixed": permdiag_cycles(0, m["slots"], plan.out_elements),
                  "compute": z * m["slots"], "drain": plan.out_elements, "flush": flush_cycles(),
                  "drain_latency": drain_latency(), "useful_macs": macs, "pe_macs": m["mults"],
                  "lanes": lanes, "slots": m["slots"], "utilization": macs / (lanes * total) if total else 0.0}
    return plan
