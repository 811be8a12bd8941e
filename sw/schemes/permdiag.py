"""``permdiag``: PermDNN permuted-diagonal FC layers on an index-free engine (papers.md §4).

Compression (:meth:`PermDiagScheme.prepare`, float model, in place; structure math in
:mod:`..perm_diag`): every Linear layer (and, with ``convs=1``, every 1x1 conv of stride 1 without
padding) is cut into p x p blocks, each a permuted diagonal — row i of block l nonzero only at column
``(i + k_l) mod p``. ``init=project`` (default) projects the trained matrix (per block the k_l keeping
the most squared magnitude) and fine-tunes ``epochs`` epochs with the structure fixed;
``init=scratch`` re-initialises the whole model, draws random offsets and trains ``epochs`` epochs with
the structure from the start. Other layers (kh x kw convs) stay dense int8 on the shared array. The
integer model is symmetric int8 per output channel (zeros stay zero, the structure survives).

**Ragged edges**: N and K are padded with zero rows / columns up to multiples of p (``pad=1``, default;
``pad=0`` refuses a layer p does not divide). A padded block is a permuted diagonal like the others;
its diagonal entries in padded rows are stored as zeros, those in padded columns are never read.

**ROM format** (the engine's memories, :mod:`sparsyn.hw.permdiag_engine`; BR x BC = ceil(N/p) x ceil(K/p)
blocks; the engine has P PEs of M multipliers, U = P*M lanes, lane u = PE ``u // M``, multiplier
``u % M``; block row ``bi`` is handled by lane ``bi mod U`` in slot ``t = bi // U``, T = ceil(BR/U) slots):

=========== ========== ================================ ===================================
ROM         kind       word                             depth
=========== ========== ================================ ===================================
weights     weights    U x int8: lane u = w[r, j] with   T*K   (address t*K + j)
                       r = bi*p + (j mod p - k) mod p
offsets     index      U x ceil(log2 p) bits: k of       T*BC  (address t*BC + bj)
                       block (bi, bj), bj = j div p
bias        constants  int32                             N
requant     constants  {mult: 15, shift: 6}              N
=========== ========== ================================ ===================================

For every nonzero input ``x_j`` each lane reads the weight of its block row at address ``t*K + j`` and
the block's offset at ``t*BC + j div p``, and accumulates into row ``(j mod p - k) mod p`` of that block:
addresses come from arithmetic on (j, k_l), there is no per-weight index. Stored weights = T*U*K int8
(N*K/p plus the padding and any idle lanes when U does not divide BR), offsets = T*U*BC*ceil(log2 p)
bits: compression = p up to the offset bits (the report computes it from the stored bits).

Every memory has at least 2 words (pad words are zero and counted).
"""
from __future__ import annotations

import numpy as np

from ..array_format import ACC_BITS, MIN_DEPTH, RequantConst, bits_for_range, check_constants, word
from ..errors import SparsynError
from ..qmodel import QuantLayer
from ..rom import to_signed, to_unsigned
from .base import Option, PackedLayer, Rom, Scheme, parse_bool, parse_layer_ints

WEIGHT_BITS = 8
#: Largest block size the engine is generated for.
MAX_P = 256
#: PEs the automatic choice (``pes=0``) uses at most.
AUTO_PES = 4
#: ROM name -> kind.
ROMS = {"weights": "weights", "offsets": "index", "bias": "constants", "requant": "constants"}


def parse_layer_p(value) -> dict[str, int]:
    """``"fc1=8,fc2=4"`` (or a dict) -> ``{"fc1": 8, "fc2": 4}``; malformed text refused in one line."""
    return parse_layer_ints(value, scheme="permdiag", option="layer_p", what="p", example="layer_p=fc1=8,fc2=4")


parse_layer_p.__name__ = "NAME=P,..."


def _range_check(lo: int, hi: int, what: str, example: str):
    return lambda v: None if lo <= v <= hi else f"{what} must be in {lo}..{hi}, e.g. {example}"


def offset_bits(p: int) -> int:
    """Bits of one block offset k (0 .. p-1): ceil(log2 p)."""
    return bits_for_range(p)


def lane_plan(block_rows: int, pes: int, mults: int) -> tuple[int, int, int]:
    """(P, U, T): PEs, lanes (P*M) and slots (ceil(BR/U)) of a layer with ``block_rows`` block rows.
    ``pes=0`` chooses P: the fewest slots with at most :data:`AUTO_PES` PEs, then the fewest PEs that
    still cover the block rows in that many slots (no idle lane when that is possible)."""
    if pes == 0:
        t = -(-block_rows // (AUTO_PES * mults))
        pes = -(-block_rows // (t * mults))
    u = pes * mults
    return pes, u, -(-block_rows // u)


class PermDiagScheme(Scheme):
    name = "permdiag"
    hardware = "sparsyn.hw.schemes.permdiag"
    engine = "permdiag"
    summary = "PermDNN permuted-diagonal p x p blocks (FC / 1x1), index-free engine skipping zero inputs"
    options = {
        "p": Option(4, f"block size p (2 .. {MAX_P}, at most the layer's N and K): compression ~p", int,
                    _range_check(2, MAX_P, "p", "p=4")),
        "layer_p": Option({}, "per-layer p, e.g. layer_p=fc1=8,fc2=4 (default: p)", parse_layer_p),
        "pad": Option(True, "pad N and K with zero rows / columns up to multiples of p (0: refuse a layer p does "
                            "not divide)", parse_bool),
        "convs": Option(False, "also compress 1x1 convs (stride 1, no padding); kh x kw convs always stay dense",
                        parse_bool),
        "init": Option("project", "project = project the trained matrix then fine-tune; scratch = re-initialise "
                                  "the model and train with the structure from the start", str,
                       lambda v: None if v in ("project", "scratch") else "init must be project or scratch"),
        "epochs": Option(10, "training epochs with the structure fixed (fine-tuning, or the whole training for "
                             "init=scratch)", int, _range_check(0, 1000, "epochs", "epochs=10")),
        "lr": Option(3e-3, "Adam learning rate", float,
                     lambda v: None if 0 < v < 1 else "lr must be in (0, 1), e.g. lr=0.003"),
        "seed": Option(0, "training / random-offset seed", int),
        "pes": Option(0, f"PEs P of the engine (0 = auto: at most {AUTO_PES}, no idle lane when possible)", int,
                      _range_check(0, 64, "pes", "pes=4")),
        "mults": Option(1, "multipliers per PE (block rows it does per cycle)", int,
                        _range_check(1, 16, "mults", "mults=2")),
    }

    def __init__(self, **opts):
        super().__init__(**opts)
        self.history: dict = {}
        self.progress: bool | None = None

    # ---- which layers -------------------------------------------------------------------------
    def layer_p(self, name: str) -> int:
        return int(self.opts["layer_p"].get(name, self.opts["p"]))

    def applies_to(self, index: int, layer_kind: str, n_layers: int, kernel=(1, 1)) -> bool:
        """Linear layers; 1x1 convs with ``convs=1``; never a kh x kw conv (kept dense int8)."""
        if layer_kind == "linear":
            return True
        return bool(self.opts["convs"]) and tuple(kernel) == (1, 1)

    def check_layer(self, name: str, kind: str, n: int, k: int, kernel=(1, 1), stride: int = 1,
                    padding: int = 0) -> int:
        """The layer's p, after refusing (one line) what the structure or the engine cannot take."""
        p = self.layer_p(name)
        where = f"layer_p={name}={p}" if name in self.opts["layer_p"] else f"p={p}"
        if kind == "conv" and tuple(kernel) != (1, 1):
            fix = "drop it from layer_p (it stays dense int8)" if name in self.opts["layer_p"] else \
                "pack it with the dense scheme"
            raise SparsynError(f"layer {name} is a {kernel[0]}x{kernel[1]} conv; permdiag compresses FC and 1x1 "
                               f"layers only: {fix}")
        if kind == "conv" and (stride, padding) != (1, 0):
            raise SparsynError(f"layer {name} is a 1x1 conv with stride {stride} / padding {padding}; the "
                               "permdiag engine runs 1x1 convs of stride 1 without padding: set convs=0 to keep "
                               "it dense")
        if not 2 <= p <= MAX_P:
            raise SparsynError(f"option {where}: p must be in 2..{MAX_P}")
        if p > min(n, k):
            raise SparsynError(f"option {where} is larger than layer {name} ({n} x {k}): a p x p block must fit "
                               f"the matrix; choose p <= {min(n, k)}")
        if not self.opts["pad"] and (n % p or k % p):
            raise SparsynError(f"option {where} does not divide layer {name} ({n} x {k}) and pad=0; choose a p "
                               "dividing both or set pad=1 (zero rows / columns up to a multiple of p)")
        return p

    def _targets(self, model, data):
        from ..importer import import_model
        from ..prune import compute_layers
        layers = [l for l in import_model(model, data.input_shape) if l.kind in ("conv", "linear")]
        unknown = sorted(set(self.opts["layer_p"]) - {l.name for l in layers})
        if unknown:
            raise SparsynError(f"option layer_p names {unknown[0]!r}, which is not a conv/linear layer of the model; "
                               f"its layers are: {', '.join(l.name for l in layers)}")
        mods = dict(compute_layers(model, data.input_shape))
        out = []
        for l in layers:
            named = l.name in self.opts["layer_p"]
            if not (named or self.applies_to(0, l.kind, len(layers), l.kernel)):
                continue
            if l.groups > 1 and tuple(l.kernel) == (1, 1):   # its module holds the compact N x 1 weights
                raise SparsynError(f"layer {l.name} is a depthwise 1x1 conv; permdiag compresses Linear and regular "
                                   "1x1 layers: set convs=0 to keep it dense")
            n, k = l.weight.shape
            p = self.check_layer(l.name, l.kind, n, k, l.kernel, l.stride, l.padding)
            out.append((l.name, mods[l.name], p))
        if not out:
            raise SparsynError("the model has no Linear (or, with convs=1, 1x1 conv) layer for permdiag; use "
                               "another scheme")
        return out

    # ---- compressor -----------------------------------------------------------------------------
    def prepare(self, model, data, log=print):
        import torch

        from ..perm_diag import diagonal_mask, project, random_structure
        from ..train import accuracy, train
        targets = self._targets(model, data)        # refusals before any training
        o = self.opts
        progress = (log is print) if self.progress is None else self.progress
        rng = np.random.default_rng(o["seed"])
        if o["init"] == "scratch":
            torch.manual_seed(o["seed"])
            for mod in model.modules():
                if mod is not model and hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
        masks = {}
        params = {id(p): name for name, p in model.named_parameters()}
        for name, mod, p in targets:
            w = mod.weight.data.reshape(mod.weight.shape[0], -1)
            if o["init"] == "scratch":
                _, mask = random_structure(rng, *w.shape, p)
            else:
                _, offsets = project(w.numpy(), p)
                mask = diagonal_mask(*w.shape, p, offsets)
            m = torch.as_tensor(mask, dtype=mod.weight.dtype).reshape(mod.weight.shape)
            with torch.no_grad():
                mod.weight.mul_(m)
            masks[params[id(mod.weight)]] = m
        acc0 = accuracy(model, data.test_x, data.test_y)
        what = ", ".join(f"{name} p={p}" for name, _, p in targets)
        log(f"   permdiag: {what}; {'random offsets' if o['init'] == 'scratch' else 'projected'}: {acc0:.2f} %")
        acc = train(model, data, epochs=o["epochs"], lr=o["lr"], masks=masks, seed=o["seed"],
                    desc="permdiag train" if o["init"] == "scratch" else "permdiag fine-tune",
                    progress=progress) if o["epochs"] else acc0
        log(f"   permdiag: after {o['epochs']} epochs with the structure fixed: {acc:.2f} %")
        self.history = {"layers": {name: p for name, _, p in targets}, "init": o["init"],
                        "accuracy_structured": acc0, "accuracy_trained": acc}
        return model

    def quantize_weights(self, index: int, w: np.ndarray):
        from .base import quantize_int8_per_channel
        return quantize_int8_per_channel(w, WEIGHT_BITS)

    # ---- ROM format -----------------------------------------------------------------------------
    def pack(self, layer: QuantLayer) -> PackedLayer:
        from ..perm_diag import diagonal_mask, structure_offsets
        p = self.check_layer(layer.name, layer.kind, layer.n, layer.k, layer.kernel, layer.stride, layer.padding)
        w = np.asarray(layer.weight, dtype=np.int64)
        if w.size and (w.min() < -(1 << (WEIGHT_BITS - 1)) or w.max() >= 1 << (WEIGHT_BITS - 1)):
            raise SparsynError(f"layer {layer.name} holds weights outside int8; re-run 'sparsyn compress'")
        offsets, stray = structure_offsets(w, p)
        if stray is not None:
            raise SparsynError(f"layer {layer.name} is not permuted-diagonal in {p}x{p} blocks (weight [{stray[0]}, "
                               f"{stray[1]}] is off its block's diagonal); compress the model with permdiag p={p}")
        check_constants(layer)
        meta = layer_meta(layer, p, self.opts["pes"], self.opts["mults"])
        n, k, br, bc = meta["n"], meta["k"], meta["block_rows"], meta["block_cols"]
        u, t_slots, ob = meta["lanes"], meta["slots"], meta["offset_bits"]
        # lane-major tables: block row bi = t*U + u (rows past BR are idle lanes: zeros)
        off = np.zeros((t_slots * u, bc), dtype=np.int64)
        off[:br] = offsets
        wpad = np.zeros((t_slots * u * p, k), dtype=np.int64)
        wpad[:n] = w
        j = np.arange(k)
        bi = np.arange(t_slots * u)
        rows = bi[:, None] * p + (j[None, :] % p - off[:, j // p]) % p          # (T*U, K)
        vals = wpad[rows, j[None, :]].reshape(t_slots, u, k)
        weights = _lane_words(np.asarray(to_unsigned(vals.transpose(0, 2, 1), WEIGHT_BITS)).reshape(t_slots * k, u),
                              WEIGHT_BITS)
        offs = _lane_words(off.reshape(t_slots, u, bc).transpose(0, 2, 1).reshape(t_slots * bc, u), ob)
        images = {"weights": (u * WEIGHT_BITS, weights), "offsets": (u * ob, offs),
                  "bias": (ACC_BITS, to_unsigned(layer.bias, ACC_BITS)),
                  "requant": (RequantConst.size, [word(RequantConst, {"mult": int(a), "shift": int(s)})
                                                  for a, s in zip(layer.mult, layer.shift)])}
        roms = {name: Rom(width, _padded(words), ROMS[name]) for name, (width, words) in images.items()}
        kept = int(np.count_nonzero(diagonal_mask(n, k, p, offsets)))
        meta["stats"] = {"p": p, "blocks": br * bc, "diagonal_weights": kept,
                         "stored_weights": t_slots * u * k, "idle_lanes": t_slots * u - br,
                         "pad_rows": br * p - n, "pad_cols": bc * p - k}
        return PackedLayer(self.name, meta, roms)

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        m = check_roms(packed)
        n, k, p, br = m["n"], m["k"], m["p"], m["block_rows"]
        u, t_slots = m["lanes"], m["slots"]
        vals = to_signed(_split_words(packed.roms["weights"].words[:t_slots * k], u, WEIGHT_BITS),
                         WEIGHT_BITS).reshape(t_slots, k, u).transpose(0, 2, 1).reshape(t_slots * u, k)
        off = block_offsets(packed)
        off_all = np.zeros((t_slots * u, m["block_cols"]), dtype=np.int64)
        off_all[:br] = off
        j = np.arange(k)
        rows = np.arange(t_slots * u)[:, None] * p + (j[None, :] % p - off_all[:, j // p]) % p
        w = np.zeros((t_slots * u * p, k), dtype=np.int64)
        w[rows, np.broadcast_to(j, rows.shape)] = vals
        if np.any(w[n:]):
            raise SparsynError("permdiag weights ROM holds nonzero weights for padded rows or idle lanes; the ROM is "
                               "corrupt, re-run 'sparsyn compress'")
        return w[:n]

    @classmethod
    def decode_constants(cls, packed: PackedLayer):
        m = check_roms(packed)
        n = m["n"]
        bias = to_signed(packed.roms["bias"].words[:n], ACC_BITS)
        rq = [RequantConst.from_bits(int(v)) for v in packed.roms["requant"].words[:n]]
        mult = np.array([int(v.mult) for v in rq], dtype=np.int64)
        shift = np.array([int(v.shift) for v in rq], dtype=np.int64)
        from ..requant import MAX_SHIFT
        if np.any(shift < 1) or np.any(shift > MAX_SHIFT):
            raise SparsynError(f"requant ROM holds a shift outside 1..{MAX_SHIFT}; the ROM is corrupt, re-run "
                               "'sparsyn compress'")
        return np.asarray(bias, dtype=np.int64), mult, shift


def layer_meta(layer: QuantLayer, p: int, pes: int, mults: int) -> dict:
    """The plain geometry of a permdiag layer (the ROM format's and the engine's parameters)."""
    br, bc = -(-layer.n // p), -(-layer.k // p)
    pes, u, t_slots = lane_plan(br, pes, mults)
    return {"format": "permdiag", "n": layer.n, "k": layer.k, "in_channels": layer.in_shape[0],
            "pixels": layer.pixels, "kernel": list(layer.kernel), "p": p, "block_rows": br, "block_cols": bc,
            "pes": pes, "mults": mults, "lanes": u, "slots": t_slots, "offset_bits": offset_bits(p),
            "weight_bits": WEIGHT_BITS}


def check_roms(packed: PackedLayer) -> dict:
    """The meta of a permdiag layer after checking every ROM's kind, width and depth (one line on the first
    that differs: a hand-edited or foreign ROM)."""
    m = packed.meta
    if m.get("format") != "permdiag":
        raise SparsynError("layer is not in the permdiag ROM format; re-run 'sparsyn compress'")
    u, t_slots = m["lanes"], m["slots"]
    want = {"weights": (u * WEIGHT_BITS, t_slots * m["k"]), "offsets": (u * m["offset_bits"], t_slots * m["block_cols"]),
            "bias": (ACC_BITS, m["n"]), "requant": (RequantConst.size, m["n"])}
    for name, (width, depth) in want.items():
        rom = packed.roms.get(name)
        if rom is None:
            raise SparsynError(f"permdiag layer has no {name!r} ROM; re-run 'sparsyn compress'")
        if rom.kind != ROMS[name] or rom.width != width or rom.depth != max(depth, MIN_DEPTH):
            raise SparsynError(f"permdiag ROM {name!r} is {rom.kind} {rom.width} bits x {rom.depth}, the layer needs "
                               f"{ROMS[name]} {width} x {max(depth, MIN_DEPTH)}; re-run 'sparsyn compress'")
    extra = sorted(set(packed.roms) - set(want))
    if extra:
        raise SparsynError(f"permdiag layer has an unexpected ROM {extra[0]!r}; re-run 'sparsyn compress'")
    return m


def block_offsets(packed: PackedLayer) -> np.ndarray:
    """The (BR, BC) block offsets k_l held in the ``offsets`` ROM (refuses an offset >= p: corrupt)."""
    m = packed.meta
    u, t_slots, bc, ob = m["lanes"], m["slots"], m["block_cols"], m["offset_bits"]
    off = _split_words(packed.roms["offsets"].words[:t_slots * bc], u, ob).reshape(t_slots, bc, u)
    off = off.transpose(0, 2, 1).reshape(t_slots * u, bc)
    if np.any(off >= m["p"]):
        raise SparsynError(f"permdiag offsets ROM holds an offset >= p={m['p']}; the ROM is corrupt, re-run "
                           "'sparsyn compress'")
    if np.any(off[m["block_rows"]:]):
        raise SparsynError("permdiag offsets ROM holds offsets for idle lanes; the ROM is corrupt, re-run "
                           "'sparsyn compress'")
    return off[:m["block_rows"]]


def _lane_words(values: np.ndarray, width: int) -> list[int]:
    """Rows of U unsigned lane values -> words with lane u at bits [u*width, (u+1)*width)."""
    values = np.asarray(values, dtype=np.int64)
    return [sum(int(v) << (lane * width) for lane, v in enumerate(row)) for row in values]


def _split_words(words, lanes: int, width: int) -> np.ndarray:
    """Inverse of :func:`_lane_words`: (len(words), lanes) unsigned values."""
    mask = (1 << width) - 1
    return np.array([[(int(w) >> (lane * width)) & mask for lane in range(lanes)] for w in words],
                    dtype=np.int64).reshape(len(words), lanes)


def _padded(words: list[int]) -> list[int]:
    return list(words) + [0] * (MIN_DEPTH - len(words))
