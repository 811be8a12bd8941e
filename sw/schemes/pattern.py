"""``pattern``: PCNN pattern pruning with Sparsity Pattern Mask (SPM) indices (papers.md §3).

Compression (:meth:`PatternScheme.prepare`, float model, in place; :mod:`..pattern_prune`): every
kh x kw kernel of a conv layer keeps exactly ``n`` weights, at the positions of one of the layer's
``patterns`` (P) masks. The pattern set is the P most frequent top-n masks of the layer, refined by
alternating assignment / re-centring rounds (each round keeps at least as much squared magnitude);
each kernel is projected onto the pattern keeping the most of it. The kept count steps down from
kh*kw to n over ``prune_steps`` steps, each followed by masked fine-tuning (accuracy logged per step).
``connectivity`` = f additionally zeroes the fraction f of kernels with the least kept magnitude:
they carry the reserved **zero id** and cost neither multiplies nor (when a whole array row's kernels
are zero) cycles.

1x1 kernels and Linear layers have no spatial kernel: there the group is a fixed-length vector of
``nm_m`` consecutive input channels keeping ``nm_n`` (N:M sparsity, e.g. 2:4) — the same patterns,
ids and PE over a channel group instead of a window. ``vectors=dense`` leaves such layers dense int8,
``vectors=refuse`` refuses them (one line naming the layer).

Integer model: symmetric int8 per output channel (zeros stay zero, so every kernel keeps its pattern).

**SPM format** (the shared array's memories, :mod:`..array_format`, with the ``window`` feed for
kernels and the ``channels`` feed for vectors): one array-row slot per (section, input channel /
channel group) that has at least one nonzero kernel; the PE entry of output channel o is
``{id, w[0..n-1]}`` — the pattern id (low bits, stored in the ``ids`` ROM, kind index) and the n
kept int8 weights in ascending position order (``weights`` ROM). The layer's pattern table (ROM
``patterns``, kind table) holds per id the n kept positions (``ceil(log2 G)`` bits each, ascending).
The row descriptor (``lanes`` ROM, index) names the input channel (window) or channel group whose G
inputs the row's PEs see. Stored bits per kernel: ``ceil(log2(P [+1]))`` id bits + ``8n`` weight bits.

PE (:mod:`sparsyn.hw.schemes.pattern`): the table decodes the id into n positions, n G:1 activation
muxes, n multipliers and an adder tree; the zero id forces the product to 0. Every kernel takes the
same cycles. ``mults`` = M < n builds M multipliers instead, time-multiplexed over ceil(n/M) cycles per
window (the ROMs do not change; the artefact records M because the engine's timing depends on it).
"""
from __future__ import annotations

from math import comb

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..array_format import MIN_DEPTH, bits_for_range
from ..errors import SparsynError
from ..qmodel import QuantLayer
from ..rom import to_signed, to_unsigned
from ..schedule import ArrayConfig, Slot, TileProgram
from .base import Option, PackedLayer, Rom, Scheme, parse_layer_ints

#: Largest kernel window / channel group the PE is generated for (lanes G).
MAX_GROUP = 49
#: Largest pattern table (ids) a PE decodes.
MAX_PATTERNS = 64
WEIGHT_BITS = 8


def parse_layer_n(value) -> dict[str, int]:
    """``"conv1=5,conv2=3"`` (or a dict) -> ``{"conv1": 5, "conv2": 3}``; malformed text refused in one line."""
    return parse_layer_ints(value, scheme="pattern", option="layer_n", what="n", example="layer_n=conv1=5,conv2=3")


parse_layer_n.__name__ = "NAME=N,..."


def check_group_options(g: int, n: int, p: int, what: str = "kernel", names=("n", "patterns")) -> None:
    """Refuse (one line, naming the option and its valid range) n or P that a group of G weights cannot have."""
    if g > MAX_GROUP:
        raise SparsynError(f"a {what} of {g} weights is larger than the pattern PE is generated for "
                           f"(at most {MAX_GROUP}); keep this layer dense (vectors=dense) or use a smaller kernel")
    if not 1 <= n < g:
        sep = "" if names[0].endswith("=") else "="
        raise SparsynError(f"option {names[0]}{sep}{n} must be in 1..{g - 1} for a {what} of {g} weights")
    most = min(comb(g, n), MAX_PATTERNS)
    if not 1 <= p <= most:
        raise SparsynError(f"option {names[1]}={p} must be in 1..{most} for a {what} of {g} weights keeping {n} "
                           f"(C({g},{n}) = {comb(g, n)} patterns; the PE decodes at most {MAX_PATTERNS})")


class PatternScheme(Scheme):
    name = "pattern"
    hardware = "sparsyn.hw.schemes.pattern"
    summary = "PCNN pattern pruning: n of kh*kw per kernel from P patterns, SPM ids, pattern-decode PEs"
    options = {
        "n": Option(4, "weights kept per kh x kw kernel (1 .. kh*kw-1)", int),
        "layer_n": Option({}, "per-layer n, e.g. layer_n=conv1=5,conv2=3 (default: n)", parse_layer_n),
        "patterns": Option(8, "patterns P per layer (1 .. C(kh*kw, n), at most 64)", int),
        "vectors": Option("nm", "1x1 / Linear layers: nm = N:M vectors of nm_m input channels keeping nm_n, "
                                "dense = leave int8, refuse = refuse such a layer", str,
                          lambda v: None if v in ("nm", "dense", "refuse") else "vectors must be nm, dense or refuse"),
        "nm_m": Option(4, "N:M group length m for 1x1 / Linear layers (2 .. 49)", int,
                       lambda v: None if 2 <= v <= MAX_GROUP else f"nm_m must be in 2..{MAX_GROUP}, e.g. nm_m=4"),
        "nm_n": Option(2, "weights kept per N:M group (1 .. m-1)", int),
        "nm_patterns": Option(6, "patterns per 1x1 / Linear layer (2:4 has C(4,2) = 6)", int),
        "mults": Option(0, "multipliers per PE (0 = n, one window per cycle; fewer = time-multiplexed, "
                           "ceil(n/mults) cycles per window)", int,
                        lambda v: None if 0 <= v <= 64 else "mults must be in 0..64 (0 = n)"),
        "connectivity": Option(0.0, "fraction of kernels pruned whole (reserved zero id), in [0, 1)", float,
                               lambda v: None if 0 <= v < 1 else "connectivity must be in [0, 1), e.g. 0.2"),
        "prune_steps": Option(5, "pruning steps from kh*kw down to n kept (each followed by fine-tuning)", int,
                              lambda v: None if 1 <= v <= 50 else "prune_steps must be in 1..50"),
        "finetune_epochs": Option(10, "masked fine-tuning epochs after each pruning step", int,
                                  lambda v: None if 0 <= v <= 1000 else "finetune_epochs must be in 0..1000"),
        "rounds": Option(5, "pattern-set refinement rounds (assign / re-centre)", int,
                         lambda v: None if 0 <= v <= 100 else "rounds must be in 0..100"),
        "lr": Option(3e-3, "Adam learning rate of the fine-tuning", float,
                     lambda v: None if 0 < v < 1 else "lr must be in (0, 1), e.g. lr=0.003"),
        "seed": Option(0, "fine-tuning seed", int),
    }

    def __init__(self, **opts):
        super().__init__(**opts)
        #: layer name -> pattern table (bool P' x G) chosen by :meth:`prepare`.
        self.tables: dict[str, np.ndarray] = {}
        #: layer name -> whether its zero id is reserved (connectivity pruning ran on it).
        self.zero_id: dict[str, bool] = {}
        self.history: dict = {}
        self.progress: bool | None = None

    # ---- which layers, which groups --------------------------------------------------------
    @staticmethod
    def group_mode(kernel) -> str:
        """``kernel`` (a kh x kw window, kh*kw > 1) or ``vector`` (1x1 kernel / Linear: channel groups)."""
        kh, kw = kernel
        return "kernel" if kh * kw > 1 else "vector"

    def layer_spec(self, name: str, kernel) -> dict:
        """mode, group size G, kept n and patterns P of a layer (refuses what the options do not allow)."""
        mode = self.group_mode(kernel)
        o = self.opts
        if mode == "kernel":
            g = kernel[0] * kernel[1]
            n = o["layer_n"].get(name, o["n"])
            names = (f"layer_n={name}=", "patterns") if name in o["layer_n"] else ("n", "patterns")
            check_group_options(g, n, o["patterns"], f"{kernel[0]}x{kernel[1]} kernel", names)
            return {"name": name, "mode": mode, "g": g, "n": n, "p": o["patterns"], "m": g}
        if o["vectors"] == "refuse":
            raise SparsynError(f"layer {name} has no spatial kernel (1x1 / Linear) and vectors=refuse; set "
                               "vectors=nm (N:M channel groups) or vectors=dense (keep it int8)")
        m = o["nm_m"]
        check_group_options(m, o["nm_n"], o["nm_patterns"], f"channel group of nm_m={m}", ("nm_n", "nm_patterns"))
        return {"name": name, "mode": mode, "g": m, "n": o["nm_n"], "p": o["nm_patterns"], "m": m}

    def applies_to(self, index: int, layer_kind: str, n_layers: int, kernel=(1, 1)) -> bool:
        """Every conv / Linear layer, except 1x1 / Linear ones with ``vectors=dense`` (kept int8)."""
        return self._applies(kernel)

    def _applies(self, layer_kernel) -> bool:
        return not (self.group_mode(layer_kernel) == "vector" and self.opts["vectors"] == "dense")

    def _targets(self, model, data):
        from ..importer import import_model
        layers = [l for l in import_model(model, data.input_shape) if l.kind in ("conv", "linear")]
        unknown = sorted(set(self.opts["layer_n"]) - {l.name for l in layers})
        if unknown:
            raise SparsynError(f"option layer_n names {unknown[0]!r}, which is not a conv/linear layer of the model; "
                               f"its layers are: {', '.join(l.name for l in layers)}")
        out = []
        for l in layers:
            if self._applies(l.kernel):
                out.append(self.layer_spec(l.name, l.kernel))
        return out

    def prepare(self, model, data, log=print):
        from ..pattern_prune import prune_patterns
        targets = self._targets(model, data)     # refuses options a layer cannot have, before any training
        progress = (log is print) if self.progress is None else self.progress
        o = self.opts
        tables, _, history = prune_patterns(model, data, targets, steps=o["prune_steps"],
                                            epochs=o["finetune_epochs"], lr=o["lr"],
                                            connectivity=o["connectivity"], seed=o["seed"], rounds=o["rounds"],
                                            log=log, progress=progress)
        self.tables = {name: np.asarray(t, dtype=bool) for name, t in tables.items()}
        self.zero_id = {t["name"]: o["connectivity"] > 0 for t in targets}
        self.history = history
        return model

    def quantize_weights(self, index: int, w: np.ndarray):
        from .base import quantize_int8_per_channel
        return quantize_int8_per_channel(w, WEIGHT_BITS)

    # ---- ROM format -----------------------------------------------------------------------------
    def schedule(self, layer: QuantLayer):
        if not self._applies(layer.kernel):
            raise SparsynError(f"layer {layer.name} is 1x1 / Linear and vectors=dense keeps it int8; pack it with "
                               "the dense scheme")
        spec = self.layer_spec(layer.name, layer.kernel)
        g, n = spec["g"], spec["n"]
        w = np.asarray(layer.weight, dtype=np.int64)
        if w.size and (w.min() < -(1 << (WEIGHT_BITS - 1)) or w.max() >= 1 << (WEIGHT_BITS - 1)):
            raise SparsynError(f"layer {layer.name} holds weights outside int8; re-run 'sparsyn compress'")
        groups = group_matrix(w, g)                          # (N, J, G)
        table = self.layer_table(layer, spec)
        zero_id = self.zero_id.get(layer.name, False)
        if table.shape[1] != g or np.any(table.sum(axis=1) != n):
            raise SparsynError(f"layer {layer.name}: its pattern table does not keep {n} of {g}; re-run "
                               "'sparsyn compress'")
        if len(table) > spec["p"]:
            raise SparsynError(f"layer {layer.name} uses {len(table)} patterns, more than patterns={spec['p']}; "
                               "re-run 'sparsyn compress'")
        ids = assign_ids(groups, table, zero_id, layer.name)   # (N, J); len(table) = zero id
        positions = [np.flatnonzero(row) for row in table]
        p_real = len(table)
        id_bits = bits_for_range(p_real + int(zero_id))
        c = self.array.cols
        n_out, j_groups = ids.shape
        sections = []
        for s in range(-(-n_out // c)):
            slots = []
            for j in range(j_groups):
                cols = range(s * c, min((s + 1) * c, n_out))
                if not any(groups[o, j].any() for o in cols):
                    continue      # every kernel of this row is zero: no slot, no cycles, no ROM word
                entries = []
                for col in range(c):
                    o = s * c + col
                    if o >= n_out:
                        entries.append(p_real if zero_id else 0)
                        continue
                    pid = int(ids[o, j])
                    vals = [0] * n if pid == p_real else [int(v) for v in groups[o, j][positions[pid]]]
                    entries.append(entry_word(pid, vals, id_bits))
                if spec["mode"] == "kernel":
                    lane_k = tuple(j * g + i for i in range(g))
                else:
                    lane_k = tuple(j * g + i if j * g + i < layer.k else -1 for i in range(g))
                slots.append(Slot(lane_k, tuple(entries)))
            sections.append(slots)
        if not any(sections):
            raise SparsynError(f"layer {layer.name}: every kernel is zero, the model would be dead; lower "
                               "connectivity or keep the layer dense")
        program = TileProgram(ArrayConfig(self.array.rows, c, g), layer.n, layer.k, id_bits + n * WEIGHT_BITS,
                              sections)
        kernels = int(ids.size)
        zero = int(np.sum(ids == p_real))
        stats = {"kernels": kernels, "zero_kernels": zero, "patterns": p_real, "mode": spec["mode"],
                 "usage": [int(np.sum(ids == i)) for i in range(p_real)], "slots": program.slot_count,
                 "dense_slots": -(-n_out // c) * j_groups,
                 "spm_bits": kernels * id_bits + (kernels - zero) * n * WEIGHT_BITS,
                 "id_bits_total": kernels * id_bits}
        meta = {"feed": "window" if spec["mode"] == "kernel" else "channels", "group": g, "keep": n,
                "mults": min(n, self.opts["mults"] or n),
                "patterns": p_real, "zero_id": bool(zero_id), "index_bits": id_bits, "weight_bits": WEIGHT_BITS,
                "tables": {"patterns": "table"}, "stats": stats}
        return program, meta

    def layer_table(self, layer: QuantLayer, spec: dict) -> np.ndarray:
        """The layer's pattern table: the one :meth:`prepare` chose, or one derived from its integer weights
        (a layer pruned elsewhere, e.g. a test layer)."""
        table = self.tables.get(layer.name)
        if table is None:
            groups = group_matrix(np.asarray(layer.weight, np.int64), spec["g"]).reshape(-1, spec["g"])
            table = derive_table(groups, spec["n"], spec["p"], layer.name)
        return np.asarray(table, dtype=bool)

    def pack(self, layer: QuantLayer) -> PackedLayer:
        packed = super().pack(layer)
        table = self.layer_table(layer, self.layer_spec(layer.name, layer.kernel))
        packed.roms["patterns"] = pattern_rom(table)
        self.decode(packed)            # the table ROM and the ids it is read with must agree
        return packed

    @classmethod
    def table(cls, packed: PackedLayer) -> list[tuple[int, ...]]:
        """The pattern table ROM decoded: per id its n kept positions (ascending, < G); refuses a corrupt one."""
        m = packed.meta
        rom = packed.roms.get("patterns")
        g, n, p = m["group"], m["keep"], m["patterns"]
        pb = bits_for_range(g)
        if rom is None or rom.kind != "table" or rom.width != n * pb or rom.depth != max(MIN_DEPTH, p):
            raise SparsynError(f"the pattern table ROM of this layer is missing or not {p} x {n * pb} bits; "
                               "re-run 'sparsyn compress'")
        out = []
        for i, word in enumerate(rom.words[:p]):
            pos = tuple((int(word) >> (j * pb)) & ((1 << pb) - 1) for j in range(n))
            if any(b <= a for a, b in zip(pos, pos[1:])) or pos[-1] >= g:
                raise SparsynError(f"pattern table word {i} {pos} is not {n} ascending positions below {g}; the ROM "
                                   "is corrupt, re-run 'sparsyn compress'")
            out.append(pos)
        return out

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        cls.table(packed)
        return super().decode(packed)

    @classmethod
    def stats(cls, packed: PackedLayer, layer: QuantLayer) -> dict:
        return {**super().stats(packed, layer), "pattern_table_bits": packed.roms["patterns"].bits}

    # ---- PE model -------------------------------------------------------------------------------
    @classmethod
    def lanes(cls, packed: PackedLayer) -> int:
        return packed.meta["group"]

    @classmethod
    def pe_macs(cls, packed: PackedLayer) -> int:
        """The PE's multipliers: n (the kept weights, whatever the window size), or ``mults`` when fewer."""
        return min(packed.meta["keep"], packed.meta.get("mults") or packed.meta["keep"])

    @classmethod
    def pe_phases(cls, packed: PackedLayer) -> int:
        """ceil(n / mults): cycles the PE spends on each window."""
        return -(-packed.meta["keep"] // cls.pe_macs(packed))

    @classmethod
    def entry_layout(cls, packed: PackedLayer):
        m = packed.meta
        return data.StructLayout({"id": unsigned(m["index_bits"]),
                                  "w": data.ArrayLayout(signed(m["weight_bits"]), m["keep"])})

    @classmethod
    def entry_coefficients(cls, packed: PackedLayer, entry: int) -> tuple[int, ...]:
        return tuple(int(v) for v in cls.coefficients(packed, [entry])[0])

    @classmethod
    def coefficients(cls, packed: PackedLayer, words) -> np.ndarray:
        """Per entry: lane ``table[id][j]`` gets weight ``w[j]``; the zero id (and only it) gives zeros; an id
        past the table is refused."""
        m = packed.meta
        table = cls.table(packed)
        ib, n, wb, g = m["index_bits"], m["keep"], m["weight_bits"], m["group"]
        p = len(table)
        words = np.asarray([int(w) for w in words], dtype=np.int64)
        ids = words & ((1 << ib) - 1)
        bad = (ids > p) | ((ids == p) & (not m["zero_id"]))
        if np.any(bad):
            raise SparsynError(f"a PE entry holds pattern id {int(ids[bad][0])}, past the layer's {p} patterns"
                               f"{' and zero id' if m['zero_id'] else ''}; the ROM is corrupt, re-run 'sparsyn compress'")
        vals = to_signed((words.reshape(-1, 1) >> (ib + wb * np.arange(n))) & ((1 << wb) - 1), wb)
        out = np.zeros((len(words), g), dtype=np.int64)
        pos = np.asarray(table + [tuple(range(n))], dtype=np.int64)       # the zero id's row is masked below
        live = ids < p
        rows = np.flatnonzero(live)
        np.add.at(out, (rows[:, None], pos[ids[live]]), vals[live])
        return out


def entry_word(pid: int, weights, id_bits: int) -> int:
    """``{id, w[0..n-1]}`` -> the PE entry (id in the low bits, then the int8 weights)."""
    bits = int(pid)
    for j, v in enumerate(to_unsigned(np.asarray(weights, dtype=np.int64), WEIGHT_BITS)):
        bits |= int(v) << (id_bits + WEIGHT_BITS * j)
    return bits


def group_matrix(w: np.ndarray, g: int) -> np.ndarray:
    """N x K integer weights -> (N, ceil(K/G), G) groups: :func:`~..pattern_prune.group_view`'s vector view
    (a partial last group padded with zeros). For a kh x kw conv K = C*G, so group j is input channel j's
    kernel; for 1x1 / Linear group j is inputs ``j*G .. j*G+G-1``."""
    from ..pattern_prune import group_view
    w = np.asarray(w, dtype=np.int64)
    return group_view(w, "vector", g).reshape(w.shape[0], -1, g)


def assign_ids(groups: np.ndarray, table: np.ndarray, zero_id: bool, name: str) -> np.ndarray:
    """(N, J, G) integer groups -> pattern ids (N, J): the first pattern containing each group's support
    (all-zero groups: the zero id if reserved, else 0). Refuses a group no pattern covers."""
    n, j, g = groups.shape
    support = groups.reshape(-1, g) != 0
    covered = ~(support[:, None, :] & ~table[None, :, :]).any(axis=2)     # (M, P)
    empty = ~support.any(axis=1)
    ids = np.where(covered.any(axis=1), covered.argmax(axis=1), -1)
    ids[empty] = len(table) if zero_id else 0
    if np.any(ids < 0):
        bad = int(np.flatnonzero(ids < 0)[0])
        raise SparsynError(f"layer {name}: kernel {bad // j} x group {bad % j} has nonzeros at "
                           f"{np.flatnonzero(support[bad]).tolist()}, which no pattern of the layer keeps; only layers "
                           "pruned by the pattern scheme can be packed as pattern")
    return ids.reshape(n, j)


def derive_table(groups: np.ndarray, n: int, p: int, name: str) -> np.ndarray:
    """A pattern table for integer groups pruned elsewhere (e.g. a random test layer): the distinct supports
    of exactly n nonzeros, most frequent first, plus completions of smaller supports; refuses a group with more
    than n nonzeros or a layer needing more than ``p`` patterns."""
    g = groups.shape[1]
    support = groups != 0
    counts = support.sum(axis=1)
    if np.any(counts > n):
        raise SparsynError(f"layer {name} has a group with {int(counts.max())} nonzeros, more than n={n}; only layers "
                           "pruned by the pattern scheme can be packed as pattern")
    full, freq = np.unique(support[counts == n], axis=0, return_counts=True)
    table = [tuple(r) for r in full[np.argsort(-freq, kind="stable")]]
    for s in support[(counts < n) & (counts > 0)]:
        if any(all(t[i] or not s[i] for i in range(g)) for t in table):
            continue
        row = s.copy()
        for i in range(g):
            if row.sum() == n:
                break
            row[i] = True
        table.append(tuple(row))
    if not table:
        table = [tuple([True] * n + [False] * (g - n))]
    if len(table) > p:
        raise SparsynError(f"layer {name} needs {len(table)} patterns, more than patterns={p}; raise patterns or "
                           "compress the layer with the pattern scheme")
    return np.asarray(table, dtype=bool)


def pattern_rom(table: np.ndarray) -> Rom:
    """The pattern table ROM: per id the n kept positions, ascending, ``ceil(log2 G)`` bits each."""
    p, g = table.shape
    n = int(table[0].sum())
    pb = bits_for_range(g)
    words = [sum(int(pos) << (j * pb) for j, pos in enumerate(np.flatnonzero(row))) for row in table]
    return Rom(n * pb, words + [0] * (MIN_DEPTH - len(words)), "table")
