"""``sparsyn bench --models``: the MLPerf Tiny reference networks (:mod:`sparsyn.sw.zoo`) per scheme and array —
stored bits by kind, a memory-level fit on the iCE40UP5K / ECP5-25F / ECP5-85F, whole-network cycles per inference,
MAC utilization and latency at the board bench's timed Fmax — beside published anchors, in one run on the zoo's
synthetic data (accuracy is not the point here: structure and cost are).

Per network and configuration (:data:`CONFIGS`: the arrays the board bench measured to fit the iCE40UP5K, and 4x4
for the ECP5) the network is compressed as ``sparsyn compress --model zoo:NAME`` does (its manifest is kept in the
output folder); a configuration a scheme refuses (an option that does not fit the array or a layer) is a row with
its one-line reason, followed by one retry with options sized for the layers too small for it
(:func:`fallback_options`).

**Cycles** (exact cycle models, no simulation): the sequenced engine's plan
(:func:`sparsyn.hw.sequenced_engine.plan_sequenced`, ``engine = sequenced``) when the network is a chain and it
plans; else the per-layer ModelEngine's (:func:`sparsyn.hw.model_engine.plan_model`, ``model``); else (a branching
network: no engine runs graphs yet) the **layer sum** (``layer-sum``): every compute layer's own cycle model
(:func:`sparsyn.hw.engines.plan_layer`) plus one cycle to see its ``done``, one hand-over per compute layer but the
last (its output elements, one per cycle, the pools after it, one start cycle: :func:`sparsyn.hw.cycles.model_cycles`,
as the model engines count them) and each residual add's stream (:func:`sparsyn.hw.add.add_cycles`). On a chain the
layer sum equals the ModelEngine's model. A layer on the permuted-diagonal engine skips zero inputs: its figure is
the worst case (every input nonzero). The engines' default buffer limits (:class:`~sparsyn.hw.plan.EngineLimits`,
sized for the digits on a UP5K) are lifted here: the memory-level fit below decides what fits.

**Utilization** = useful (nonzero-weight) MACs / (MAC units x cycles); MAC units = the shared array's R x C PEs
times the most MACs per cycle any layer's PE does, plus the MAC units of engines that layers bring (permdiag), as
the sequenced engine counts them.

**Memory-level fit** (logic, DSPs and routing are not synthesized here; for an array of at most
:data:`FIT_BOARD_PES` PEs the UP5K column is the iCEBreaker inference top's own memory check instead,
:func:`board_fit`): the stored bits (weights, index, tables,
constants, the descriptor table) plus the engine's buffers (:func:`buffer_bits`) against the device's block RAM
(:data:`sparsyn.boards.devices.DEVICES`). On the iCE40UP5K the shared weight memory and the activation scratch (the
output buffer) may go to SPRAM (the board's ``--weights`` / ``--scratch``), every other memory is in EBR. Bits only:
the rounding of each memory to whole blocks is not counted.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.report import format_table, json_text, write_json

from .devices import DEVICES

#: The four full-size MLPerf Tiny networks of the zoo (``--quick``: their ``-tiny`` variants).
NETWORKS = ("ic-resnet8", "kws-dscnn", "vww-mobilenet", "ad-autoencoder")

#: What the benchmark compresses per network: (scheme, array, options). The first group are the arrays the board
#: bench measured to fit the iCE40UP5K (boards/infer_bench.BOARD_CONFIGS["icebreaker"]) and tight on 1x3 with the
#: first layer pruned too (DS-CNN's design point on the iCEBreaker, README), the second 4x4 for the ECP5. permdiag
#: runs twice: its default compresses FC layers only (the convs stay dense int8); ``convs=1`` also puts the 1x1 convs
#: on its engine (skipped for a network without 1x1 convs).
CONFIGS = (
    ("dense", "2x2", {}),
    ("packcnn", "2x2", {}),
    ("tight", "1x2", {"alpha": 2}),
    ("tight", "1x3", {"alpha": 2, "dense_first": 0}),
    ("ternary", "1x1", {}),
    ("permdiag", "1x1", {"p": 4}),
    ("permdiag", "1x1", {"p": 4, "convs": 1}),
    ("pattern", "1x2", {"mults": 1}),
    ("dense", "4x4", {}),
    ("packcnn", "4x4", {}),
    ("tight", "4x4", {"alpha": 4}),
    ("ternary", "4x4", {}),
    ("permdiag", "4x4", {"p": 4}),
    ("permdiag", "4x4", {"p": 4, "convs": 1}),
    ("pattern", "4x4", {}),
)
#: Configurations of :data:`CONFIGS` that are one design point on their array: ``--array`` does not carry their options
#: to another array.
POINTS = {("tight", "1x3")}

#: ``--training short``: fewer pruning steps and training epochs per scheme. The structure options (density,
#: alpha, tile, pattern count, p) and the packing search (tight's annealing) stay, so the stored bits and the cycles
#: keep their meaning; the accuracy does not (it is not the point of this benchmark: synthetic data).
SHORT_TRAINING = {"packcnn": {"prune_steps": 1, "finetune_epochs": 1},
                  "tight": {"prune_steps": 1, "finetune_epochs": 1},
                  "ternary": {"penalty_epochs": 2, "finetune_epochs": 2},
                  "permdiag": {"epochs": 2}, "pattern": {"prune_steps": 2, "finetune_epochs": 1}}
#: ``--quick``: the short training and a short annealing (the figures of a quick run are for tests).
QUICK_TRAINING = {**SHORT_TRAINING, "tight": {**SHORT_TRAINING["tight"], "anneal_steps": 20}}
#: ``--training`` -> the options each scheme's compression gets on top of the configuration's.
TRAINING = {"full": {}, "short": SHORT_TRAINING}

#: Devices of the fit columns: column -> part (:data:`sparsyn.boards.devices.DEVICES`).
TARGETS = {"up5k": "iCE40UP5K", "ecp5_25f": "LFE5U-25F", "ecp5_85f": "LFE5U-85F"}

#: The board the ``up5k`` column is checked on (its inference top's memory check, :func:`board_fit`), for arrays of
#: at most :data:`FIT_BOARD_PES` PEs (the UP5K has 8 DSPs; larger arrays get the memory-level estimate only).
FIT_BOARD = "icebreaker"
FIT_BOARD_PES = 4

#: Cycles per inference of the CFU-Playground KWS accelerator (the ``vs_cfu`` column: its cycles / ours).
CFU_KWS_CYCLES = 25.2e6

#: Published figures printed beside ours (as quoted in issue 15; the sources named per row).
ANCHORS = [
    {"network": "kws-dscnn", "design": "VexRiscv + CFU (kws_micro_accel)", "platform": "iCE40UP5K",
     "figure": "25.2 M cycles / inference", "cycles": CFU_KWS_CYCLES,
     "resources": "5241/5280 LC, 14/30 EBR, 8/8 DSP",
     "source": "google/CFU-Playground proj/kws_micro_accel (Keyword Spotting micro-accelerator, 2021)"},
    {"network": "kws-dscnn", "design": "fpgaConvNet (INT8)", "platform": "Zynq XC7Z007S", "figure": "4.21 ms",
     "latency_ms": 4.21, "resources": "13 k LUT, 55 DSP", "source": "MLPerf Tiny v1.1 results, fpgaConvNet"},
    {"network": "ic-resnet8", "design": "fpgaConvNet (INT8)", "platform": "Zynq XC7Z010", "figure": "3.15 ms",
     "latency_ms": 3.15, "resources": "16 k LUT, 78 DSP", "source": "MLPerf Tiny v1.1 results, fpgaConvNet"},
    {"network": "ic-resnet8", "design": "hls4ml (ResNet-like)", "platform": "Pynq-Z2 (XC7Z020)",
     "figure": "27.3 ms (v0.7) -> 7.64 ms (v1.0)", "latency_ms": 7.64, "resources": None,
     "source": "MLPerf Tiny v0.7 / v1.0 results, hls4ml; Borras et al., arXiv:2206.11791"},
    {"network": "ad-autoencoder", "design": "hls4ml (AD08)", "platform": "Pynq-Z2 (XC7Z020)", "figure": "18.7 us",
     "latency_ms": 0.0187, "resources": None,
     "source": "MLPerf Tiny v0.7 / v1.0 results, hls4ml; Borras et al., arXiv:2206.11791"},
]

#: Marker file of the output folder (``work/bench/models``; :mod:`sparsyn.sw.outdir`).
MARKER = ".sparsyn-model-bench"

#: Table columns (JSON rows hold every figure in bits / cycles; the table prints kbit = 1024 bits).
TABLE_COLUMNS = ["network", "config", "train", "engine", "w_kb", "idx_kb", "tab_kb", "const_kb", "desc_kb", "stored_kb",
                 "buf_kb", "up5k_ebr_kb", "up5k", "ecp5_25f", "ecp5_85f", "cycles", "mac_units", "util", "fmax_mhz",
                 "latency_ms", "vs_cfu", "int_acc"]

NOTES = [
    "fits: memory-level only (stored bits + engine buffers vs block RAM; UP5K: EBR, with the shared weight memory "
    "and the activation scratch allowed in SPRAM); logic, DSPs and routing are not synthesized here; bits, not whole "
    "blocks",
    f"up5k '(board)' (arrays of at most {FIT_BOARD_PES} PEs): the memory check of the {FIT_BOARD} inference top "
    "itself, as 'sparsyn build' makes it: the engine the board runs (default buffer limits), its automatic "
    "placement (weights in EBR, SPRAM or the pass store; scratch and activation buffer in EBR or SPRAM) and the "
    "block census of the elaborated core; why not, below",
    f"up5k_ebr_kb: what must be in the UP5K's EBR ({DEVICES[TARGETS['up5k']].bram_bits // 1024} kbit) with the "
    "shared weight memory and the scratch in SPRAM",
    "buf_kb: activation input buffer (its copies: R*L for the im2col feed, R for the window / channel feeds), output "
    "buffer (scratch), accumulators, the nonzero buffers / accumulators of permdiag engines, and tensors a branch "
    "holds for a residual add",
    "engine: sequenced = the sequenced engine's exact cycle model; model = the per-layer ModelEngine's; layer-sum = "
    "the layers' own models + hand-overs + adds (a branching network: no engine runs graphs yet); permdiag layers: "
    "worst case (every input nonzero)",
    "util = nonzero-weight MACs / (MAC units x cycles)",
    "train: full = each scheme's default training; short = fewer pruning steps and epochs (--training short, "
    "SHORT_TRAINING), the same structure options and packing search: stored bits and cycles keep their meaning",
    "fmax_mhz: timed Fmax of the digits model's inference top with the same scheme / array / options from the last "
    "'sparsyn bench --boards' (work/bench/boards/board-bench.json); a larger model's memories may move it; "
    "'-' = not built",
    f"vs_cfu = {CFU_KWS_CYCLES / 1e6:.1f} M (CFU-Playground kws_micro_accel on the iCE40UP5K) / our cycles",
    "int_acc: top-1 (%) of the integer model on the synthetic test split (a sanity check, not a result; '-' for the "
    "autoencoder: its reconstruction errors are in the JSON)",
]


# ---------------------------------------------------------------------------------------------------- plain data

def config_label(scheme: str, array: str, options: dict) -> str:
    """``"tight 1x2 alpha=2"`` (a per-layer option as ``layer_p=fc=2``, as ``--opt`` spells it)."""
    def value(v):
        return ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else v
    return " ".join([scheme, array, *(f"{k}={value(v)}" for k, v in options.items())])


def weight_layers(network: str) -> list[dict]:
    """The conv / linear layers of the zoo network (imported untrained): name, kind, kernel, N, K, groups."""
    from sparsyn.sw.importer import import_model
    from sparsyn.sw.zoo import build_zoo_model, zoo_entry
    return [{"name": l.name, "kind": l.kind, "kernel": tuple(l.kernel), "n": l.weight.shape[0],
             "k": l.weight.shape[1], "groups": l.groups}
            for l in import_model(build_zoo_model(network), zoo_entry(network).input_shape)
            if getattr(l, "weight", None) is not None]


def fallback_options(scheme: str, options: dict, layers: list[dict]) -> dict | None:
    """Options to try after ``options`` were refused, for the layers too small for them (VWW's 2-output
    classifier): permdiag ``layer_p`` = min(N, K) for such a layer it compresses, packcnn ``layer_alpha`` = N where
    N < alpha, tight (one alpha for every layer) the smallest N >= 2. None when nothing changes."""
    out = dict(options)
    if scheme == "permdiag":
        p = options.get("p", 4)
        small = {l["name"]: min(l["n"], l["k"]) for l in layers if min(l["n"], l["k"]) < p
                 and (l["kind"] == "linear" or (options.get("convs") and l["kernel"] == (1, 1)))}
        if small and min(small.values()) >= 2:
            out["layer_p"] = {**options.get("layer_p", {}), **small}
    elif scheme == "packcnn":
        alpha = options.get("alpha", 4)
        small = {l["name"]: l["n"] for l in layers if l["n"] < alpha}
        if small:
            out["layer_alpha"] = {**options.get("layer_alpha", {}), **small}
    elif scheme == "tight":
        alpha = min([options.get("alpha", 4), *(l["n"] for l in layers if l["n"] >= 2)])
        if alpha >= 2:
            out["alpha"] = alpha
    return out if out != options else None


def network_name(name: str, quick: bool) -> str:
    """The zoo entry a network name runs as (``--quick``: its ``-tiny`` variant); refuses an unknown name."""
    base = name[len("zoo:"):] if name.startswith("zoo:") else name
    if base.endswith("-tiny"):
        base = base[:-len("-tiny")]
    if base not in NETWORKS:
        raise SparsynError(f"unknown network {name!r} for the model benchmark; choose from {', '.join(NETWORKS)} "
                           "(--quick runs their -tiny variants)")
    return base + "-tiny" if quick else base


def select_configs(schemes=None, arrays=None) -> list[tuple[str, str, dict]]:
    """:data:`CONFIGS` restricted to ``schemes`` / ``arrays``; an array the table does not list for a scheme takes
    each option set the table lists for that scheme but its :data:`POINTS` (tight: ``alpha`` = the array's columns,
    at most 4)."""
    from sparsyn.sw.schedule import ArrayConfig
    from sparsyn.sw.schemes import scheme_names
    schemes = list(dict.fromkeys(schemes or dict.fromkeys(s for s, _, _ in CONFIGS)))
    for s in schemes:
        if s not in scheme_names():
            raise SparsynError(f"unknown scheme {s!r}; available schemes: {', '.join(scheme_names())}")
    if not arrays:
        return [c for c in CONFIGS if c[0] in schemes]
    arrays = [str(ArrayConfig.parse(a).rows) + "x" + str(ArrayConfig.parse(a).cols) for a in arrays]
    out = []
    for s in schemes:
        listed = [c for c in CONFIGS if c[0] == s]
        for a in dict.fromkeys(arrays):
            here = [c for c in listed if c[1] == a]
            if here:
                out += here
                continue
            carried = [c for c in listed if (c[0], c[1]) not in POINTS]
            for opts in dict.fromkeys(json.dumps(c[2], sort_keys=True) for c in carried) or ["{}"]:
                o = json.loads(opts)
                if s == "tight":
                    o["alpha"] = min(4, ArrayConfig.parse(a).cols)
                out.append((s, a, o))
    return list({(s, a, json.dumps(o, sort_keys=True)): (s, a, o) for s, a, o in out}.values())


def has_pointwise_convs(network: str) -> bool:
    """Whether the zoo network has a 1x1 Conv2d (permdiag ``convs=1`` changes something)."""
    from torch import nn

    from sparsyn.sw.zoo import build_zoo_model
    return any(isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) for m in build_zoo_model(network).modules())


def unlimited():
    """EngineLimits that refuse nothing for its size: the bench checks memories against the devices instead."""
    from sparsyn.hw.plan import EngineLimits
    big = 1 << 30
    return EngineLimits(act_elements=big, acc_words=big, weight_depth=big, out_elements=big)


def bench_descriptor(model, packed, array):
    """The sequenced engine's descriptor table for ``compress`` (as :func:`sparsyn.hw.descriptor.manifest_descriptor`,
    with the buffer limits lifted); None when the model does not run on one datapath."""
    from sparsyn.hw.sequenced_engine import plan_sequenced
    try:
        plan = plan_sequenced(model, packed, array, unlimited())
    except SparsynError:
        return None
    return plan.descriptor if plan.descriptor.fields else None


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def layer_plans(model, packed, array) -> dict:
    """Every compute layer's plan on its scheme's engine (buffer limits lifted), by layer name."""
    from sparsyn.hw.engines import plan_layer
    return {l.name: plan_layer(l, packed[l.name], array, unlimited()) for l in model.compute_layers}


def mac_units(plans) -> int:
    """The shared array's R x C PEs x the most MACs per cycle of any layer's PE, plus the MAC units of the engines
    layers bring (as :func:`sparsyn.hw.sequenced_engine.plan_sequenced` counts them)."""
    from sparsyn.hw.plan import LayerPlan
    shared = [p for p in plans if isinstance(p, LayerPlan)]
    own = sum(p.array.rows * p.array.cols * p.model.get("pe_macs", p.array.lanes)
              for p in plans if not isinstance(p, LayerPlan))
    if not shared:
        return own
    r, c = shared[0].array.rows, shared[0].array.cols
    return r * c * max(p.model.get("pe_macs", p.array.lanes) for p in shared) + own


def layer_sum_cycles(model, plans: dict) -> dict:
    """The layer sum: compute layers (own total + 1), hand-overs (:func:`~sparsyn.hw.cycles.model_cycles`: output
    elements + the pools after the layer + 1, for every compute layer but the last) and residual adds
    (:func:`~sparsyn.hw.add.add_cycles`). Returns ``total``, ``layers``, ``transfer``, ``adds``."""
    from sparsyn.hw.add import add_cycles
    from sparsyn.hw.cycles import model_cycles
    from sparsyn.hw.pools import is_pool, pool_cycles
    from sparsyn.sw.qmodel import AddLayer, QuantLayer
    totals, pools, adds = [], [], 0
    for layer in model.layers:
        if isinstance(layer, QuantLayer):
            totals.append(plans[layer.name].model["total"])
            pools.append((layer.n * layer.pixels, []))
        elif is_pool(layer) and pools:
            pools[-1][1].append(pool_cycles(layer))
        elif isinstance(layer, AddLayer):
            adds += add_cycles(layer)
    cm = model_cycles(totals, pools[:-1])
    return {**cm, "total": cm["total"] + adds, "adds": adds}


def network_cycles(model, packed, array) -> dict:
    """Cycles per inference and utilization of ``model`` on ``array`` (module docstring): ``engine``, ``cycles``,
    ``useful_macs``, ``mac_units``, ``utilization``, ``layers`` (each compute layer's own cycles and useful MACs),
    ``plans`` (by layer), ``refusals`` (why a better engine did not plan) and the sequenced plan when it planned."""
    from sparsyn.hw.cycles import utilization
    from sparsyn.hw.model_engine import plan_model
    from sparsyn.hw.sequenced_engine import plan_sequenced
    plans = layer_plans(model, packed, array)
    out = {"refusals": {}, "sequenced_plan": None}
    engine = None
    if model.is_chain:
        try:
            seq = plan_sequenced(model, packed, array, unlimited())
            engine, cm = "sequenced", seq.cycle_model
            out["sequenced_plan"] = seq
            plans = {p.layer.name: p for p in seq.layers}       # with the shared datapath's phases
        except SparsynError as err:
            out["refusals"]["sequenced"] = str(err)
        if engine is None:
            try:
                cm, engine = plan_model(model, packed, array, unlimited()).cycle_model, "model"
            except SparsynError as err:
                out["refusals"]["model"] = str(err)
    else:
        out["refusals"]["sequenced"] = out["refusals"]["model"] = "a branching network (residual adds)"
    if engine is None:
        cm, engine = layer_sum_cycles(model, plans), "layer-sum"
    ordered = [plans[l.name] for l in model.compute_layers]
    macs = sum(p.model["useful_macs"] for p in ordered)
    units = mac_units(ordered)
    total = int(cm["total"])
    out.update(engine=engine, cycles=total, useful_macs=int(macs), mac_units=units,
               utilization=utilization(macs, 1, 1, total, units), plans=plans,
               worst_case=any(callable(getattr(p, "useful_macs", None)) for p in ordered),
               layers=[{"layer": p.layer.name, "kind": p.layer.kind, "engine": p.engine.__name__,
                        "cycles": int(p.model["total"]), "useful_macs": int(p.model["useful_macs"])} for p in ordered])
    return out


def buffer_bits(model, plans: dict) -> dict:
    """Bits of the engine's buffers (module docstring): ``input`` (the activation input buffer with its copies:
    R x L for the im2col ``lanes`` feed, R for the ``window`` / ``channels`` feeds, per feed kind the largest layer
    input), ``scratch`` (the output buffer: the largest layer output), ``accumulator`` (banks x the most pixels x C
    x 32 bit), ``own`` (each permdiag engine's nonzero buffer, accumulators and output buffer), ``branch`` (the most
    tensors held across a layer for a later residual add), all int8 activations."""
    from amaranth.hdl import Shape

    from sparsyn.hw.layouts import ACC_BITS, ACT_BITS
    from sparsyn.hw.nonzero_buffer import nonzero_entry
    from sparsyn.hw.plan import LayerPlan
    ordered = [plans[l.name] for l in model.compute_layers]
    shared = [p for p in ordered if isinstance(p, LayerPlan)]
    by_feed: dict[str, int] = {}
    for p in shared:
        copies = p.array.rows * (p.array.lanes if p.feed == "lanes" else 1)
        by_feed[p.feed] = max(by_feed.get(p.feed, 0), p.in_elements * ACT_BITS * copies)
    scratch = max((p.out_elements for p in shared), default=0) * ACT_BITS
    acc = 0
    if shared:
        banks = 2 if any(p.sections > 1 for p in shared) else 1
        acc = banks * max(p.layer.pixels for p in shared) * shared[0].array.cols * ACC_BITS
    own = 0
    for p in ordered:
        if isinstance(p, LayerPlan):
            continue
        m = p.meta
        entry = Shape.cast(nonzero_entry(m["in_channels"], p.layer.pixels, m["p"])).width
        own += (p.in_elements * entry + m["pes"] * m["mults"] * p.acc_depth * ACC_BITS
                + p.out_elements * ACT_BITS)
    return {"input": sum(by_feed.values()), "scratch": scratch, "accumulator": acc, "own": own,
            "branch": branch_bits(model)}


def branch_bits(model) -> int:
    """The most int8 activation bits held across one layer for a later layer other than the next (a residual
    branch); 0 for a chain."""
    from sparsyn.hw.layouts import ACT_BITS
    from sparsyn.sw.qmodel import MODEL_INPUT
    names = [l.name for l in model.layers]
    last_use = {}
    for i in range(len(model.layers)):
        for src in model.sources(i):
            last_use[src] = i
    size = {MODEL_INPUT: _size(model.input_shape), **{l.name: _size(l.out_shape) for l in model.layers}}
    most = 0
    for i in range(len(model.layers)):
        reads = set(model.sources(i))
        held = [t for t, j in last_use.items() if j > i and t not in reads and t != names[i]
                and (t == MODEL_INPUT or names.index(t) < i)]
        most = max(most, sum(size[t] for t in held))
    return most * ACT_BITS


def device_fit(device, stored: dict, buffers: dict, spram_weights: int) -> dict:
    """Whether the memories fit ``device`` (:class:`~sparsyn.boards.devices.Device`): ``fits`` and where the
    movable memories go (``placement``), ``need`` / ``have`` bits. On a device with SPRAM the shared weight
    memory (``spram_weights`` bits) and the scratch may each move there; everything else is block RAM
    (``block_ram_need``: the bits that cannot leave it, against ``block_ram_have``)."""
    total = stored["stored_bits"] + sum(buffers.values())
    options = [("block RAM", 0)]
    if device.spram_bits:
        options += [("weights in SPRAM", spram_weights), ("scratch in SPRAM", buffers["scratch"]),
                    ("weights + scratch in SPRAM", spram_weights + buffers["scratch"])]
    where = next((w for w, moved in options if total - moved <= device.bram_bits and moved <= device.spram_bits),
                 None)
    return {"fits": where is not None, "placement": where, "need": total,
            "have": device.bram_bits + device.spram_bits,
            "block_ram_need": total - (spram_weights + buffers["scratch"] if device.spram_bits else 0),
            "block_ram_have": device.bram_bits}


def board_fit(manifest: Path, board: str = FIT_BOARD) -> dict:
    """The memory check of ``board``'s inference top for ``manifest``, as ``sparsyn build`` / ``infer`` make it:
    the engine the board would run (:func:`~sparsyn.boards.infer.plan_engine`, the default engine limits), its
    automatic placement of the weights (EBR, SPRAM or the pass store), scratch and activation buffer, and the
    block RAM / SPRAM census of the elaborated core. ``fits`` and ``placement`` / ``ebr`` / ``spram``, or the
    board's one-line ``reason``. Logic is not synthesized."""
    from .fit import check_fit, memory_census
    from .infer import inference_design
    from .platforms import get_board
    b = get_board(board)
    try:
        d = inference_design(manifest, board, log=lambda *a: None)
        est = check_fit(b.dev, memory_census(d.core()), where=f"the {b.device} on {b.name}")
    except SparsynError as err:
        return {"board": board, "fits": False, "reason": str(err)}
    return {"board": board, "fits": True, "engine": d.engine_kind,
            "placement": {"weights": d.weights_in, "scratch": d.scratch, "acts": d.acts},
            "ebr": est["bram_blocks"], "ebr_available": est["bram_blocks_available"],
            "spram": est["spram_blocks"], "spram_available": est["spram_blocks_available"]}


def board_fmax(path: Path) -> list[dict]:
    """The timed rows of the last board bench (``board-bench.json``): scheme, array, normalised options, board,
    device, Fmax; [] when there is none."""
    from .infer_bench import BOARD_CONFIGS
    from .platforms import get_board
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for r in doc.get("rows", []):
        if "error" in r or not r.get("all_paths_timed") or not r.get("fmax_mhz"):
            continue
        label, board = r.get("label", ""), r.get("board")
        cfg = BOARD_CONFIGS.get(board, {}).get(label)
        if cfg is None or cfg[0] != r.get("array"):
            continue
        scheme = label.split("-")[0]
        try:
            out.append({"scheme": scheme, "array": cfg[0], "options": normal_options(scheme, cfg[0], cfg[1]),
                        "board": board, "device": get_board(board).device, "fmax_mhz": float(r["fmax_mhz"])})
        except SparsynError:
            continue
    return out


def normal_options(scheme: str, array: str, options: dict) -> dict:
    """The scheme's whole option dict (defaults filled in) for comparing configurations."""
    from sparsyn.sw.schemes import get_scheme
    return dict(get_scheme(scheme)(array=array, **options).opts)


def compare_key(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------------- the run

def measure(manifest: Path, report: dict) -> dict:
    """The figures of one compressed network (its manifest and compress's report)."""
    from sparsyn.hw.plan import LayerPlan
    from sparsyn.sw.manifest import load_manifest, resolve_array

    model, packed, doc = load_manifest(Path(manifest))
    array = resolve_array(doc, None)
    cyc = network_cycles(model, packed, array)
    desc = int(report.get("descriptor_bits", 0) or 0)
    stored = {"weight_bits": report["weight_bits"], "index_bits": report["index_bits"],
              "table_bits": report["table_bits"] - desc, "constant_bits": report["constant_bits"],
              "descriptor_bits": desc, "stored_bits": report["stored_bits"]}
    buffers = buffer_bits(model, cyc["plans"])
    spram_weights = sum(p.packed.bits_by_kind()["weights"] for p in cyc["plans"].values() if isinstance(p, LayerPlan))
    fits = {col: device_fit(DEVICES[part], stored, buffers, spram_weights) for col, part in TARGETS.items()}
    if array.rows * array.cols <= FIT_BOARD_PES:
        fits["up5k"]["board"] = board_fit(Path(manifest))
        fits["up5k"]["fits"] = fits["up5k"]["board"]["fits"]
    return {"chain": model.is_chain, "input_shape": list(model.input_shape),
            "dense_weights": int(report["weights"]), "nonzero": int(report["nonzero"]), **stored,
            "buffer_bits": buffers, "buffers": sum(buffers.values()), "spram_weight_bits": spram_weights,
            **{col: f["fits"] for col, f in fits.items()}, "fit": fits,
            **{k: cyc[k] for k in ("engine", "cycles", "useful_macs", "mac_units", "utilization", "worst_case",
                                    "layers", "refusals")}}


def _row_table(r: dict) -> dict:
    kb = lambda bits: round(bits / 1024, 1)       # noqa: E731
    out = {"network": r["network"], "config": r["config"], "train": "short" if r.get("training") else "full"}
    if "error" in r:
        return out
    out.update(engine=r["engine"], w_kb=kb(r["weight_bits"]), idx_kb=kb(r["index_bits"]), tab_kb=kb(r["table_bits"]),
               const_kb=kb(r["constant_bits"]), desc_kb=kb(r["descriptor_bits"]), stored_kb=kb(r["stored_bits"]),
               buf_kb=kb(r["buffers"]), up5k_ebr_kb=kb(r["fit"]["up5k"]["block_ram_need"]), up5k=_up5k_cell(r),
               ecp5_25f=r["ecp5_25f"], ecp5_85f=r["ecp5_85f"],
               cycles=("<=" if r["worst_case"] else "") + str(r["cycles"]), mac_units=r["mac_units"],
               util=round(r["utilization"], 3), fmax_mhz=r.get("fmax_mhz"),
               latency_ms=None if r.get("latency_ms") is None else round(r["latency_ms"], 3),
               vs_cfu=None if r.get("vs_cfu") is None else f"{r['vs_cfu']:.1f}x",
               int_acc=round(r["accuracy"]["int"], 1) if r.get("accuracy") else None)
    return out


def _up5k_cell(r: dict) -> str:
    """``yes`` / ``no``; checked on the board: ``yes: 23 EBR + 4 SPRAM (board)`` or ``no (board)``."""
    board = r["fit"]["up5k"].get("board")
    if board is None:
        return "yes" if r["up5k"] else "no"
    if board["fits"]:
        return f"yes: {board['ebr']} EBR + {board['spram']} SPRAM (board)"
    return "no (board)"


def format_rows(rows: list[dict]) -> str:
    """The table of every measured row, the refusals (one line each), the anchors and the notes."""
    ok = [_row_table(r) for r in rows if "error" not in r]
    lines = [format_table(ok, TABLE_COLUMNS, title="MLPerf Tiny networks per scheme and array (sparsyn bench --models)")
             if ok else "no configuration was measured"]
    bad = [r for r in rows if "error" in r]
    if bad:
        lines += ["", "refused:"] + [f"  {r['network']} {r['config']}: {r['error']}" for r in bad]
    off = [r for r in rows if "error" not in r and not r["fit"]["up5k"].get("board", {"fits": True})["fits"]]
    if off:
        lines += ["", f"not on the {FIT_BOARD} (its memory check):"] + [
            f"  {r['network']} {r['config']}: {r['fit']['up5k']['board']['reason']}" for r in off]
    lines += ["", format_table(ANCHORS, ["network", "design", "platform", "figure", "resources", "source"],
                               title="anchors (published, not measured here)")]
    lines += ["", "notes:"] + [f"  * {n}" for n in NOTES]
    return "\n".join(lines)


def plot_rows(rows: list[dict], path: Path) -> Path | None:
    """Cycles per inference per configuration, one panel per network (log scale; filled = fits the iCE40UP5K at
    memory level), the CFU-Playground KWS anchor as a line."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nets = list(dict.fromkeys(r["network"] for r in ok))
    fig, axes = plt.subplots(len(nets), 1, figsize=(7.5, 1.2 + 0.32 * max(len(ok) // len(nets), 4) * len(nets)),
                             squeeze=False)
    for ax, net in zip(axes[:, 0], nets):
        sel = [r for r in ok if r["network"] == net]
        ys = range(len(sel))
        ax.barh(list(ys), [r["cycles"] for r in sel],
                color=["tab:green" if r["up5k"] else "tab:gray" for r in sel])
        ax.set_yticks(list(ys), [r["config"] for r in sel], fontsize=7)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{net}: cycles per inference (green: fits the iCE40UP5K, memory level)", fontsize=8)
        if net == "kws-dscnn":                       # the anchor is the full-size network's
            ax.axvline(CFU_KWS_CYCLES, color="k", ls=":", label="CFU-Playground kws_micro_accel 25.2 M")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reusable(dirs, rel: Path, net: str, scheme: str, array: str, run_opts: dict) -> Path | None:
    """The first of the earlier runs' folders ``dirs`` that holds the manifest ``rel`` compressed from the same
    network, scheme, array and options (its ``report.json`` says so); None when none does."""
    want = compare_key(normal_options(scheme, array, run_opts))
    for d in dirs or ():
        src = Path(d) / rel
        try:
            rep = json.loads((src / "report.json").read_text())
        except (OSError, ValueError):
            continue
        if (rep.get("model") in (net, f"zoo:{net}") and rep.get("scheme") == scheme
                and (src / "manifest.json").is_file() and compare_key(rep.get("options", {})) == want):
            return src
    return None


def reused_refusal(dirs, net: str, scheme: str, array: str, opts: dict, training: dict) -> dict | None:
    """The row of a configuration one of the earlier runs ``dirs`` refused (same network, scheme, array, options and
    training: its ``models.json``), or None."""
    for d in dirs or ():
        try:
            rows = json.loads((Path(d) / "models.json").read_text())["rows"]
        except (OSError, ValueError, KeyError):
            continue
        for r in rows:
            if ("error" in r and not r["error"].startswith("internal error") and r.get("network") == net
                    and (r.get("scheme"), r.get("array")) == (scheme, array)
                    and compare_key(r.get("options", {})) == compare_key(opts)
                    and compare_key(r.get("training", {})) == compare_key(training.get(scheme, {}))):
                return {**r, "reused_from": str(Path(d) / "models.json")}
    return None


def run_config(net: str, scheme: str, array: str, opts: dict, stage: Path, training: dict, fmax_rows: list, log,
               progress: bool, reuse=None) -> dict:
    """Compress ``net`` with one configuration into ``stage/manifests/...`` and measure it: its row (a refusal: the
    row with ``error``; an unexpected exception too, marked as a bug, so that one configuration cannot cost the run)."""
    from sparsyn.sw.compress import compress
    label = config_label(scheme, array, opts)
    row = {"network": net, "config": label, "scheme": scheme, "array": array, "options": dict(opts),
           "training": dict(training.get(scheme, {}))}
    run_opts = {**training.get(scheme, {}), **opts}
    rel = Path("manifests") / net / label.replace(" ", "_")
    refused = reused_refusal(reuse, net, scheme, array, opts, training)
    if refused is not None:
        log(f"{net}: {label} refused in an earlier run ({refused['reused_from']}): {refused['error']}")
        return refused
    t0 = time.time()
    try:
        src = reusable(reuse, rel, net, scheme, array, run_opts)
        if src is not None:
            log(f"{net}: {label}: measuring the manifest of an earlier run, {src}")
            shutil.copytree(src, stage / rel)
            report = json.loads((src / "report.json").read_text())
            row["reused_from"] = str(src)
        else:
            log(f"{net}: compressing with {label}")
            report = compress(model=f"zoo:{net}", scheme=scheme, options=run_opts, array=array, out=stage / rel,
                              progress=False, descriptor=bench_descriptor,
                              log=(lambda m: log(f"  {net}: {m}")) if progress else (lambda *a: None))
        row["compress_s"] = round(time.time() - t0, 1)
        row.update(measure(stage / rel, report))
        row.update(manifest=str(rel), accuracy=report.get("accuracy"), reconstruction=report.get("reconstruction"))
    except SparsynError as err:
        log(f"{net}: {label} refused: {err}")
        return {**row, "error": str(err)}
    except Exception as err:
        import traceback
        log(f"{net}: {label} FAILED (a bug, not a refusal):\n{traceback.format_exc()}")
        return {**row, "error": f"internal error {type(err).__name__}: {err}"}
    row.update(latency(row, fmax_rows))
    if net == "kws-dscnn":
        row["vs_cfu"] = CFU_KWS_CYCLES / row["cycles"]
    log(f"{net}: {label}: {row['stored_bits']} stored bits, {row['cycles']} cycles ({row['engine']}), "
        f"fits UP5K / ECP5-25F / ECP5-85F: {row['up5k']} / {row['ecp5_25f']} / {row['ecp5_85f']} "
        f"({row['compress_s']} s)")
    return row


def run_model_bench(networks=None, schemes=None, arrays=None, out=None, *, quick: bool = False,
                    training: str = "full", progress: bool = True, log=None, board_bench=None, reuse=None) -> dict:
    """Compress each of ``networks`` (default: :data:`NETWORKS`; ``quick``: their ``-tiny`` variants with
    :data:`QUICK_TRAINING`; ``training="short"``: the full-size networks with :data:`SHORT_TRAINING`) with each
    configuration of :data:`CONFIGS` (restricted to ``schemes`` / ``arrays``), measure it
    (:func:`measure`) and write ``models.json``, ``models.txt``, ``models.png`` and the manifests into ``out``
    (default ``work/bench/models``; replaced as a whole when the run finishes). ``board_bench``: the board bench's
    JSON for the Fmax (default ``work/bench/boards/board-bench.json``). ``reuse``: output folders of earlier runs; a
    configuration whose manifest one of them holds (same network, scheme, array and options: its ``report.json``)
    is measured from a copy of it instead of compressed again, and one they refused is refused again (after a change
    to the engines or the cycle models; not after a change to a compressor). Returns the JSON document."""
    if training not in TRAINING:
        raise SparsynError(f"--training must be one of {', '.join(TRAINING)}, not {training!r}")
    if quick and training != "full":
        raise SparsynError("--quick already trains short (and anneals short); leave out --training")
    table = QUICK_TRAINING if quick else TRAINING[training]
    for d in reuse or ():
        if not (Path(d) / MARKER).is_file():
            raise SparsynError(f"--reuse {d}: not an output folder of 'sparsyn bench --models' (no {MARKER}); name "
                               "the --out folder of an earlier run")
    from sparsyn.sw.bench_common import BenchLog
    from sparsyn.sw.outdir import check_out, staged_output
    from sparsyn.sw.paths import work_dir
    log = log or BenchLog("models")
    nets = [network_name(n, quick) for n in (networks or NETWORKS)]
    nets = list(dict.fromkeys(nets))
    configs = select_configs(schemes, arrays)
    out = Path(out) if out is not None else work_dir() / "bench" / "models"
    check_out(out, MARKER, command="sparsyn bench --models")          # before any work
    fmax_rows = board_fmax(board_bench if board_bench is not None else work_dir() / "bench" / "boards" /
                           "board-bench.json")
    rows = []
    t_run = time.time()
    with staged_output(out, MARKER, command="sparsyn bench --models") as stage:
        for net in nets:
            pointwise = has_pointwise_convs(net)
            layers = weight_layers(net)
            for scheme, array, opts in configs:
                if scheme == "permdiag" and opts.get("convs") and not pointwise:
                    continue                        # no 1x1 conv: the same as permdiag without convs
                row = run_config(net, scheme, array, opts, stage, table, fmax_rows, log, progress, reuse)
                rows.append(row)
                alt = fallback_options(scheme, opts, layers) if "error" in row else None
                if alt is not None:
                    log(f"{net}: trying {config_label(scheme, array, alt)} instead")
                    rows.append(run_config(net, scheme, array, alt, stage, table, fmax_rows, log, progress, reuse))
        doc = {"networks": nets, "quick": quick, "training": "quick" if quick else training,
               "training_options": table, "configs": [config_label(*c) for c in configs],
               "targets": TARGETS, "rows": rows, "anchors": ANCHORS, "notes": NOTES,
               "board_bench_fmax": fmax_rows, "seconds": round(time.time() - t_run, 1)}
        text = format_rows(rows)
        (stage / "models.txt").write_text(text + "\n")
        png = plot_rows(rows, stage / "models.png")
        doc["plot"] = "models.png" if png else None
        write_json(stage / "models.json", doc)
    print(text, flush=True)
    log(f"wrote {out}/models.json, models.txt" + (", models.png" if doc["plot"] else ""))
    return json.loads(json_text(doc))


def latency(row: dict, fmax_rows: list[dict]) -> dict:
    """The timed Fmax of the board bench row with the same scheme, array and options (the first board listed),
    and the latency ``cycles / Fmax``; ``{}`` when none was built."""
    try:
        key = compare_key(normal_options(row["scheme"], row["array"], row["options"]))
    except SparsynError:
        return {}
    for f in fmax_rows:
        if (f["scheme"], f["array"], compare_key(f["options"])) == (row["scheme"], row["array"], key):
            return {"fmax_mhz": f["fmax_mhz"], "fmax_board": f["board"],
                    "latency_ms": row["cycles"] / (f["fmax_mhz"] * 1e3)}
    return {}
