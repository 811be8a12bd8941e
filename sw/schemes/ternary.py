"""``ternary``: PE-wise structured pruning + ternarization with Weight Penalty Clipping (papers.md §2).

Compression flow (:meth:`TernaryScheme.prepare`, float model, in place):

1. **group lasso + WPC** for ``penalty_epochs``: loss = CE + lam * sum_layers R_layer with
   ``R = sum_g min(a_g, theta)`` (``wpc=1``; theta = max(r * mean_g a_g, a_(m)) for ``wpc_mode=target``,
   r * mean_g a_g for ``wpc_mode=mean``; detached, see :mod:`..group_prune` for the exact formula) or the
   plain group lasso ``R = sum_g a_g`` (``wpc=0``, the ablation); ``wpc_warmup=f`` uses the plain group
   lasso for the first fraction f of the penalty steps, then the clip (the clip alone keeps exactly the
   pretrained model's largest groups, see :mod:`..group_prune`);
2. **PE-wise pruning**: per layer the ``round(sparsity * G)`` weakest groups are zeroed and masked. A group
   is (a section of ``cols`` output channels = the array's columns) x (``tile`` consecutive inputs = the
   PE's lanes T), so a pruned group is exactly one array slot the schedule skips;
3. **ternarization** with the straight-through estimator for ``finetune_epochs`` (masked groups frozen):
   ``delta = delta * max|W|``, ``t = sign(w)[|w| >= delta]``, ``alpha = mean |w|`` over survivors, per
   layer or (``per_channel=1``) per output channel; the layers finally hold ``alpha * t``.

Integer model: :meth:`quantize_weights` returns ``t`` in {-1, 0, 1} with ``alpha`` as the per-channel
weight scale, so the quantizer folds alpha into the requantization multiplier — the PE only adds,
subtracts or skips. The weights it sees are the importer's, i.e. with a following BatchNorm folded in:
``alpha * scale_n * t`` (``scale_n = gamma_n / sqrt(var_n + eps)``), still one magnitude per output channel,
so it keeps ``t`` and takes ``alpha * |scale_n|`` as channel n's scale (:func:`channel_ternary`) — it does
not ternarize again (one threshold ``delta * max|W|`` and one alpha over channels of different BN scales
would zero every channel of a small scale and mis-scale the rest). The first conv layer stays dense int8
by default (the paper leaves it out; its K=9 on digits is below one useful tile), see
``first_layer``/``last_layer``.

Tiles that do not fill K (K mod T != 0) are **padded**: the last tile's missing lanes read the constant-
zero input (invalid lane descriptor) and store code 0. ``pad=0`` refuses such a layer instead.

ROMs: the shared array's format (:mod:`..array_format`): one array-row slot per **stored** PE tile,
so a pruned tile costs neither a weight word nor a lane descriptor nor a cycle; the lane descriptors
(kind ``index``) say which T inputs each stored tile reads — they are the whole index, there is no
separate bitmap. A PE entry is T 2-bit codes, lane ``l`` at bits ``[2l, 2l+1]`` = {bit0 ``en``, bit1
``neg``}: 00 skip, 01 add (+1), 11 subtract (-1), i.e. the 2-bit two's complement of the trit; 10 is
invalid (refused by :meth:`decode`). :func:`trit5_bits` gives the size the same trits would take packed
5 per byte (1.6 bits per weight) — a storage figure only: no engine decodes that format.

**Stored bits per kept weight are not 2.** The trits are 2 bits, but every stored PE tile (array-row slot)
also costs the index and table words of the shared array format, which only the array's columns and rows
share: per slot a ``weights`` word of C x 2T bits, a ``lanes`` word of T lane descriptors of
``D = 1 + ceil(log2 Cin) + bits(kh) + bits(kw)`` bits each (the kernel offsets take at least 1 bit each,
also for 1x1 kernels), shared by the C columns, and per R slots one ``passes`` word of
``P = bits(sections) + 2 + bits(C + 1)`` bits (each section padded to a multiple of R slots, at least
one). Per kept weight position that is ``2 + D / C + P / (R * C * T)`` bits, plus the per-channel
constants (32-bit bias, 21-bit requant). On a 1x1 array nothing is shared: with T=8 a 128-input layer
costs ``2 + 10 + 10/8 = 13.25`` bits per kept position, on 4x4
``2 + 10/4 + 10/128 = 4.6``. The layers left dense (``first_layer=0``: the first) are dense int8 with L=1
lane: ``8 + D / C + P / (R * C)`` bits per weight, 31 on 1x1 for K=640. Example, ad-autoencoder
(640-128-128-128-128-8-128-128-128-128-640), T=8, sparsity 0.5: on 1x1 3,847,894 bits = the dense
640-input first layer 2,546,314 (weights 655,360 + lane descriptors 1,064,960 + pass table 819,210 +
constants 6,784) + the nine ternary layers 1,300,180 (trits 182,256, lane descriptors 907,184, pass
tables 128,908, constants 81,832; 90,616 kept positions) + the descriptor table 1,400; on 4x4 1,570,190
(dense first layer 979,594, ternary layers 589,336). This is the format, not a packing error: the lane
descriptors are general (any T inputs) while a ternary tile always reads T consecutive inputs, so a
tile-index descriptor (the ``channels`` feed, for 1x1 kernels ``1 + bits(K / T)`` bits per slot) would
cut the index; that would be a format change for the schedule and the RTL, not done here.

PE entry (:meth:`entry_layout`): ``ArrayLayout(StructLayout({"en": 1, "neg": 1}), T)``;
``entry_coefficients`` = T values in {-1, 0, 1}.
"""
from __future__ import annotations

import numpy as np
import torch
from amaranth.lib import data

from ..errors import SparsynError
from ..group_prune import (DEFAULT_WPC_RATIO, GroupGrid, check_sparsity, group_penalty, prune_groups, tile_sparsity,
                           wpc_threshold)
from ..qmodel import QuantLayer
from ..schedule import ArrayConfig, Slot, TileProgram
from ..ternarize import DEFAULT_DELTA_FACTOR, attach_ste, check_delta_factor, detach_ste, ternarize
from .base import Option, PackedLayer, Scheme, parse_bool

#: trit -> 2-bit code (two's complement); the inverse treats 0b10 as corrupt.
CODE = {0: 0b00, 1: 0b01, -1: 0b11}
TRIT = {0b00: 0, 0b01: 1, 0b11: -1}


def _positive_int(v) -> str | None:
    return None if isinstance(v, int) and v >= 1 else "must be a positive integer"


def _range(lo, hi, what):
    def check(v):
        return None if lo <= v <= hi else f"{what}"
    return check


class TernaryScheme(Scheme):
    name = "ternary"
    hardware = "sparsyn.hw.schemes.ternary"
    summary = "PE-wise structured pruning + ternary {-a,0,+a} weights (WPC), adder-only PEs"
    options = {
        "tile": Option(8, "PE lanes T: inputs per PE tile (= array-row slot width); a group is cols x T", int,
                       lambda v: None if 1 <= v <= 64 else "tile T must be in 1..64, e.g. tile=8"),
        "sparsity": Option(0.5, "target fraction of PE tiles pruned per ternary layer, in [0, 1)", float,
                           lambda v: None if 0 <= v < 1 else "target sparsity must be in [0, 1), e.g. sparsity=0.5"),
        "lam": Option(0.1, "group-lasso weight lambda (loss = CE + lambda * sum R)", float,
                      lambda v: None if 0 <= v < 10 else "lambda must be in [0, 10), e.g. lam=0.1"),
        "wpc": Option(True, "Weight Penalty Clipping: R = sum min(a_g, theta) (theta: see wpc_mode) instead of sum a_g", parse_bool),
        "wpc_mode": Option("target", "WPC clip threshold: target = max(r*mean(a), a_(m)) (reaches the target "
                                     "sparsity), mean = r*mean(a) (papers.md)", str,
                           lambda v: None if v in ("target", "mean") else "wpc_mode must be target or mean"),
        "wpc_warmup": Option(0.0, "fraction of the penalty epochs trained with the plain group lasso before the "
                                  "WPC clip starts (0: WPC from the first step)", float,
                             lambda v: None if 0 <= v < 1 else "wpc_warmup must be in [0, 1), e.g. 0.5"),
        "wpc_ratio": Option(DEFAULT_WPC_RATIO, "WPC ratio r of the self-adapting clip threshold r * mean(a)",
                            float, lambda v: None if 0 < v <= 10 else "wpc_ratio r must be in (0, 10], e.g. 0.7"),
        "delta": Option(DEFAULT_DELTA_FACTOR, "ternary threshold factor: delta = factor * max|W|", float,
                        lambda v: None if 0 < v < 1 else "delta factor must be in (0, 1) (delta <= 0 keeps noise "
                                                         "weights, >= 1 keeps none), e.g. delta=0.05"),
        "per_channel": Option(False, "one alpha per output channel instead of per layer", parse_bool),
        "penalty_epochs": Option(20, "epochs of group-lasso (+WPC) training before pruning", int,
                                 lambda v: None if 0 <= v <= 1000 else "penalty_epochs must be in 0..1000"),
        "finetune_epochs": Option(30, "epochs of ternary (STE) fine-tuning after pruning", int,
                                  lambda v: None if 0 <= v <= 1000 else "finetune_epochs must be in 0..1000"),
        "lr": Option(5e-3, "Adam learning rate of both phases", float,
                     lambda v: None if 0 < v < 1 else "lr must be in (0, 1), e.g. lr=0.005"),
        "pad": Option(True, "pad the last tile of a layer whose K is not a multiple of T (0: refuse)", parse_bool),
        "first_layer": Option(False, "also ternarize the first compute layer (paper: left out)", parse_bool),
        "last_layer": Option(True, "ternarize the last compute layer (the classifier)", parse_bool),
        "seed": Option(0, "training seed", int),
    }

    def __init__(self, **opts):
        super().__init__(**opts)
        #: Per-layer record of the last :meth:`prepare` (norms, WPC threshold, sparsity, accuracies).
        self.history: dict = {}
        #: Show tqdm bars in prepare (None: only when logging to print).
        self.progress: bool | None = None

    # ---- software compression -------------------------------------------------------------
    def applies_to(self, index: int, layer_kind: str, n_layers: int, kernel=(1, 1)) -> bool:
        if index == 0 and not self.opts["first_layer"]:
            return False
        if index == n_layers - 1 and index != 0 and not self.opts["last_layer"]:
            return False
        return True

    def grid(self, n: int, k: int, name: str = "layer") -> GroupGrid:
        """The PE-tile grid of an N x K layer for this scheme's (cols, tile); refuses K % T unless pad=1."""
        t = self.opts["tile"]
        if k % t and not self.opts["pad"]:
            raise SparsynError(f"layer '{name}': tile T={t} does not divide K={k} and pad=0 refuses padding; "
                               f"choose a tile dividing {k} or set pad=1 (the last tile is padded with zero lanes)")
        return GroupGrid(n, k, self.array.cols, t)

    def _targets(self, model, data):
        """Compute modules this scheme applies to, as (index, name, module), in forward order."""
        from ..importer import import_model
        layers = [l for l in import_model(model, data.input_shape) if l.kind in ("conv", "linear")]
        mods = dict(model.named_modules())
        return [(i, l.name, mods[l.name]) for i, l in enumerate(layers) if self.applies_to(i, l.kind, len(layers))]

    def prepare(self, model, data, log=print):
        from ..train import accuracy, train

        o = self.opts
        check_sparsity(o["sparsity"])
        check_delta_factor(o["delta"])
        progress = (log is print) if self.progress is None else self.progress
        targets = self._targets(model, data)
        if not targets:
            log("ternary: no layer to ternarize (first_layer=0 and last_layer=0 on a short model)")
            return model
        grids = {name: self.grid(m.weight.shape[0], m.weight[0].numel(), name) for _, name, m in targets}
        for name, g in grids.items():
            if g.padded:
                log(f"ternary: layer '{name}' K={g.k} is not a multiple of T={g.tile}: its last tile is padded "
                    f"with {g.tiles * g.tile - g.k} zero lanes (pad=0 refuses instead)")
        hist = {"layers": {}, "accuracy": {"start": accuracy(model, data.test_x, data.test_y)}}

        batch = 64
        warm_steps = round(o["wpc_warmup"] * o["penalty_epochs"] * -(-len(data.train_x) // batch))
        step = [0]

        def penalty(mdl):
            wpc = o["wpc"] and step[0] >= warm_steps   # plain group lasso during the warm-up steps
            step[0] += 1
            total = 0.0
            for _, name, m in targets:
                total = total + group_penalty(grids[name].norms(m.weight.reshape(m.weight.shape[0], -1)),
                                              wpc, o["wpc_ratio"], sparsity)
            return o["lam"] * total

        sparsity = o["sparsity"] if o["wpc_mode"] == "target" else None
        masks = {}
        if o["sparsity"] > 0:
            if o["penalty_epochs"] > 0 and o["lam"] > 0:
                acc = train(model, data, epochs=o["penalty_epochs"], lr=o["lr"], batch=batch, penalty=penalty,
                            desc=f"ternary: group lasso{' + WPC' if o['wpc'] else ''}", seed=o["seed"],
                            progress=progress)
                hist["accuracy"]["after_penalty"] = acc
            for _, name, m in targets:
                w = m.weight.detach().reshape(m.weight.shape[0], -1).numpy().copy()  # before masking
                keep = prune_groups(grids[name], w, o["sparsity"], name)
                mask = torch.as_tensor(grids[name].expand(keep), dtype=m.weight.dtype).reshape(m.weight.shape)
                with torch.no_grad():
                    m.weight.mul_(mask)
                masks[name] = mask
                norms = grids[name].norms(w)
                hist["layers"][name] = {"groups": grids[name].groups, "kept_groups": int(keep.sum()),
                                        "wpc_threshold": wpc_threshold(norms, o["wpc_ratio"], sparsity),
                                        "norm_min": float(norms.min()), "norm_max": float(norms.max())}
            hist["accuracy"]["after_prune"] = accuracy(model, data.test_x, data.test_y)
        for _, name, m in targets:
            attach_ste(m, o["delta"], o["per_channel"])
        if o["finetune_epochs"] > 0:
            train_masks = {f"{name}.parametrizations.weight.original": mask for name, mask in masks.items()}
            acc = train(model, data, epochs=o["finetune_epochs"], lr=o["lr"], masks=train_masks,
                        desc="ternary: STE fine-tune", seed=o["seed"] + 1, progress=progress)
        for _, name, m in targets:
            detach_ste(m)
            w = m.weight.detach().reshape(m.weight.shape[0], -1).numpy()
            if not np.any(w):
                raise SparsynError(f"layer '{name}': every PE tile is zero after ternarization, the model would "
                                   "be dead; lower the target sparsity or the delta factor")
            rec = hist["layers"].setdefault(name, {"groups": grids[name].groups})
            rec["tile_sparsity"] = float(tile_sparsity(grids[name], w))
            rec["weight_sparsity"] = float(1 - np.count_nonzero(w) / w.size)
        hist["accuracy"]["ternary_float"] = accuracy(model, data.test_x, data.test_y)
        self.history = hist
        log(f"ternary: accuracy {hist['accuracy']['start']:.2f} % -> {hist['accuracy']['ternary_float']:.2f} % "
            f"(float ternary), tile sparsity " +
            ", ".join(f"{n} {r['tile_sparsity']:.2f}" for n, r in hist["layers"].items()))
        return model

    def quantize_weights(self, index: int, w: np.ndarray):
        """Float N x K -> (codes t, per-channel scale, 2). A layer :meth:`prepare` ternarized is taken as it is
        (:func:`channel_ternary`: t and each channel's own magnitude, e.g. alpha times a folded BatchNorm's
        scale); only a layer that is not ternary yet is ternarized here (delta threshold, alpha)."""
        w = np.asarray(w, dtype=np.float64)
        self.grid(w.shape[0], w.shape[1], f"#{index}")  # refuses K % T != 0 when pad=0
        exact = channel_ternary(w)
        if exact is not None:
            codes, alpha = exact
        else:
            codes, alpha = ternarize(w, self.opts["delta"], self.opts["per_channel"], name=f"#{index}")
        return codes, alpha, 2

    # ---- ROM format -----------------------------------------------------------------------------
    def schedule(self, layer: QuantLayer):
        w = np.asarray(layer.weight, dtype=np.int64)
        if not np.isin(w, (-1, 0, 1)).all():
            raise SparsynError(f"layer '{layer.name}' holds weights outside {{-1, 0, 1}}; only layers quantized by "
                               "the ternary scheme can be packed as ternary")
        grid = self.grid(layer.n, layer.k, layer.name)
        occ = grid.occupancy(w)
        if not occ.any():
            raise SparsynError(f"layer '{layer.name}': every PE tile is pruned, the model would be dead; "
                               "lower the target sparsity or keep this layer dense")
        blocks = grid.blocks(w)
        t = grid.tile
        sections = []
        for s in range(grid.sections):
            slots = []
            for j in range(grid.tiles):
                if not occ[s, j]:
                    continue  # pruned PE tile: no slot, no cycles, no ROM word
                lane_k = tuple(j * t + lane if j * t + lane < grid.k else -1 for lane in range(t))
                slots.append(Slot(lane_k, tuple(self.entry_word(blocks[s, c, j]) for c in range(grid.cols))))
            sections.append(slots)
        program = TileProgram(ArrayConfig(self.array.rows, self.array.cols, t), layer.n, layer.k, 2 * t, sections)
        stored = int(occ.sum())
        stats = {"groups": grid.groups, "stored_tiles": stored, "tile_sparsity": 1 - stored / grid.groups,
                 "packed_slots": stored * grid.cols * t, "padded": grid.padded,
                 "trit5_bits": trit5_bits(stored * grid.cols * t)}
        return program, {"tile": t, "weight_bits": 2, "stats": stats}

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        """The shared array decode, after refusing the invalid code 0b10 anywhere in the weight ROM."""
        m = packed.meta
        width = 2 * m["tile"]
        for i, word in enumerate(packed.roms["weights"].words):
            for e in range(m["array"]["cols"]):
                entry = (int(word) >> (e * width)) & ((1 << width) - 1)
                for lane in range(m["tile"]):
                    if (entry >> (2 * lane)) & 3 == 0b10:
                        raise SparsynError(f"ternary weight ROM word {i} column {e} lane {lane} holds the invalid "
                                           "code 0b10; the ROM is corrupt, re-run 'sparsyn compress'")
        return super().decode(packed)

    # ---- hardware -------------------------------------------------------------------------------
    @classmethod
    def lanes(cls, packed: PackedLayer) -> int:
        return packed.meta["tile"]

    @classmethod
    def entry_layout(cls, packed: PackedLayer):
        return data.ArrayLayout(data.StructLayout({"en": 1, "neg": 1}), packed.meta["tile"])

    @classmethod
    def entry_coefficients(cls, packed: PackedLayer, entry: int) -> tuple[int, ...]:
        """Lane l: 0 (skip) unless ``en``; then -1 if ``neg`` else +1 (code 0b10 = skip, like the PE)."""
        out = []
        for lane in range(packed.meta["tile"]):
            c = (int(entry) >> (2 * lane)) & 3
            out.append(0 if not c & 1 else (-1 if c & 2 else 1))
        return tuple(out)

    @classmethod
    def coefficients(cls, packed: PackedLayer, words) -> np.ndarray:
        t = packed.meta["tile"]
        if 2 * t > 62:
            return super().coefficients(packed, words)
        c = (np.asarray([int(w) for w in words], dtype=np.int64).reshape(-1, 1) >> (2 * np.arange(t))) & 3
        return np.where(c & 1, np.where(c & 2, -1, 1), 0).astype(np.int64)

    @classmethod
    def entry_word(cls, trits) -> int:
        """T trits -> the 2T-bit PE entry (lane l at bits 2l, 2l+1)."""
        return int(sum(CODE[int(v)] << (2 * lane) for lane, v in enumerate(trits)))


#: Relative spread of the nonzero |w| within an output channel up to which :func:`channel_ternary` takes the
#: channel as ternary (prepare's STE leaves alpha*t up to float32 rounding, ~1e-7).
CHANNEL_RTOL = 1e-4


def channel_ternary(w: np.ndarray, rtol: float = CHANNEL_RTOL) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, alpha) if every output channel of ``w`` (N x ...) is ``alpha_n * t_n`` (t in {-1, 0, 1}, one
    magnitude alpha_n > 0 per channel, to ``rtol``), else None (also for an all-zero layer).

    This is what a layer ternarized by :meth:`TernaryScheme.prepare` looks like after the importer folded a
    following BatchNorm into it: ``alpha * scale_n * t`` (``scale_n = gamma_n / sqrt(var_n + eps)``, its sign
    moved into t). ``t = sign(w)`` and ``alpha_n = mean |w_n|`` over the channel's nonzeros reproduce it exactly;
    a channel without a nonzero weight gets the mean alpha of the others (any positive scale works, its codes
    are all zero)."""
    flat = np.asarray(w, dtype=np.float64).reshape(np.shape(w)[0], -1)
    mag = np.abs(flat)
    nz = mag > 0
    live = nz.any(axis=1)
    if not live.any() or not np.all(np.isfinite(flat)):
        return None
    hi = mag.max(axis=1)
    lo = np.where(nz, mag, np.inf).min(axis=1)
    if np.any(hi[live] - lo[live] > rtol * hi[live]):
        return None
    alpha = mag.sum(axis=1) / np.maximum(nz.sum(axis=1), 1)
    alpha = np.where(live, alpha, alpha[live].mean())
    return np.sign(flat).astype(np.int64).reshape(np.shape(w)), alpha


def trit5_bits(trits: int) -> int:
    """Bits ``trits`` ternary weights would take packed 5 per byte (3**5 = 243 <= 256)."""
    return 8 * -(-trits // 5)
