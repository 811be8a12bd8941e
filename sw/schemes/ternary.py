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
subtracts or skips. The first conv layer stays dense int8 by default (the paper leaves it out; its K=9
on digits is below one useful tile), see ``first_layer``/``last_layer``.

Tiles that do not fill K (K mod T != 0) are **padded**: the last tile's missing lanes read the constant-
zero input (lane index -1) and store code 0. ``pad=0`` refuses such a layer instead.

ROMs of a packed layer (meta: n, k, tile, cols, sections, tiles, packing, stored_tiles):

* ``bitmap``: 1-bit words, one per group, section-major (``addr = s * tiles + j``): 1 = tile stored;
* ``codes`` (``packing="2bit"``, default): one ``2*T``-bit word per stored tile and real output row
  (row order: stored tiles in bitmap order, rows ``s*cols ..`` of that section; rows past N are not
  stored). Lane ``l`` is bits ``[2l, 2l+1]`` = {bit0 ``en``, bit1 ``neg``}: 00 skip, 01 add (+1), 11 subtract
  (-1), i.e. the 2-bit two's complement of the trit; 10 is invalid;
* ``codes`` (``packing="trit5"``): the same trit stream (entry-major, lane-minor) packed 5 trits per byte,
  ``byte = sum_i (t_i + 1) * 3**i`` (3**5 = 243 <= 256), 1.6 bits per weight; the tail is padded with t=0.
  This is a storage format only: the array's PE entry is always the 2-bit code word.

PE entry (:meth:`entry_layout`): ``ArrayLayout(StructLayout({"en": 1, "neg": 1}), T)`` — the 2-bit word
above; ``entry_coefficients`` = T values in {-1, 0, 1}. :meth:`tile_program` emits one slot per stored
tile (lanes = T), so cycles shrink in proportion to the pruned tiles.
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
from .base import Option, PackedLayer, Rom, Scheme, parse_bool, register

PACKINGS = ("2bit", "trit5")
#: trit -> 2-bit code (two's complement); the inverse treats 0b10 as corrupt.
CODE = {0: 0b00, 1: 0b01, -1: 0b11}
TRIT = {0b00: 0, 0b01: 1, 0b11: -1}


def _positive_int(v) -> str | None:
    return None if isinstance(v, int) and v >= 1 else "must be a positive integer"


def _range(lo, hi, what):
    def check(v):
        return None if lo <= v <= hi else f"{what}"
    return check


@register
class TernaryScheme(Scheme):
    name = "ternary"
    summary = "PE-wise structured pruning + ternary {-a,0,+a} weights (WPC), adder-only PEs"
    options = {
        "tile": Option(8, "PE lanes T: inputs per PE tile (= array-row slot width); a group is cols x T", int,
                       lambda v: None if 1 <= v <= 64 else "tile T must be in 1..64, e.g. tile=8"),
        "cols": Option(4, "section height C = the array's columns (output channels per pass); tile_program "
                          "needs an array with this many columns", int,
                       lambda v: None if 1 <= v <= 256 else "cols must be in 1..256, e.g. cols=4 for a 4x4 array"),
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
        "packing": Option("2bit", "code ROM format: 2bit (one 2T-bit word per PE entry) or trit5 (5 trits/byte)",
                          str, lambda v: None if v in PACKINGS else "packing must be 2bit or trit5"),
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
    def applies_to(self, index: int, layer_kind: str, n_layers: int) -> bool:
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
        return GroupGrid(n, k, self.opts["cols"], t)

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
        w = np.asarray(w, dtype=np.float64)
        self.grid(w.shape[0], w.shape[1], f"#{index}")  # refuses K % T != 0 when pad=0
        codes, alpha = ternarize(w, self.opts["delta"], self.opts["per_channel"], name=f"#{index}")
        return codes, alpha, 2

    # ---- ROM format -----------------------------------------------------------------------------
    def pack(self, layer: QuantLayer) -> PackedLayer:
        w = np.asarray(layer.weight, dtype=np.int64)
        if not np.isin(w, (-1, 0, 1)).all():
            raise SparsynError(f"layer '{layer.name}' holds weights outside {{-1, 0, 1}}; only layers quantized by "
                               "the ternary scheme can be packed as ternary")
        grid = self.grid(layer.n, layer.k, layer.name)
        occ = grid.occupancy(w)
        if not occ.any():
            raise SparsynError(f"layer '{layer.name}': every PE tile is pruned, the model would be dead; "
                               "lower the target sparsity or keep this layer dense")
        trits = []  # entry-major, lane-minor
        blocks = grid.blocks(w)  # S, C, J, T
        for s in range(grid.sections):
            rows = min(grid.cols, grid.n - s * grid.cols)
            for j in range(grid.tiles):
                if occ[s, j]:
                    trits.append(blocks[s, :rows, j, :])
        trits = np.concatenate(trits).astype(np.int64)  # (entries, T)
        t = grid.tile
        packing = self.opts["packing"]
        if packing == "2bit":
            shifts = 2 * np.arange(t)
            words = [int(sum(CODE[int(v)] << int(sh) for v, sh in zip(row, shifts))) for row in trits]
            codes = Rom(2 * t, words)
        else:
            flat = list(trits.ravel() + 1)
            flat += [1] * (-len(flat) % 5)
            codes = Rom(8, [int(sum(d * 3 ** i for i, d in enumerate(flat[p:p + 5])))
                            for p in range(0, len(flat), 5)])
        meta = {"n": layer.n, "k": layer.k, "tile": t, "cols": grid.cols, "sections": grid.sections,
                "tiles": grid.tiles, "padded": grid.padded, "packing": packing,
                "stored_tiles": int(occ.sum()), "entries": int(len(trits))}
        bitmap = Rom(1, [int(b) for b in occ.ravel()])
        return PackedLayer(self.name, meta, {"bitmap": bitmap, "codes": codes})

    @classmethod
    def _grid(cls, packed: PackedLayer) -> GroupGrid:
        m = packed.meta
        return GroupGrid(m["n"], m["k"], m["cols"], m["tile"])

    @classmethod
    def _entries(cls, packed: PackedLayer) -> np.ndarray:
        """The stored PE entries as trits (entries, T), checking the ROM's size and codes."""
        m = packed.meta
        t, count = m["tile"], m["entries"]
        codes = packed.roms["codes"]
        if m["packing"] == "2bit":
            if codes.depth != count:
                raise SparsynError(f"ternary codes ROM has {codes.depth} words, the bitmap needs {count}; "
                                   "the ROM files do not belong together, re-run 'sparsyn compress'")
            out = np.zeros((count, t), dtype=np.int64)
            for e, word in enumerate(codes.words):
                for lane in range(t):
                    c = (word >> (2 * lane)) & 3
                    if c not in TRIT:
                        raise SparsynError(f"ternary codes ROM word {e} lane {lane} holds the invalid code 0b10; "
                                           "the ROM is corrupt, re-run 'sparsyn compress'")
                    out[e, lane] = TRIT[c]
            return out
        if m["packing"] != "trit5":
            raise SparsynError(f"unknown ternary packing {m['packing']!r} in the manifest; re-run 'sparsyn compress'")
        need = -(-count * t // 5)
        if codes.depth != need:
            raise SparsynError(f"ternary trit5 codes ROM has {codes.depth} bytes, {need} expected; "
                               "re-run 'sparsyn compress'")
        digits = []
        for e, byte in enumerate(codes.words):
            if byte >= 243:
                raise SparsynError(f"ternary trit5 codes byte {e} = {byte} is not a 5-trit value (< 243); "
                                   "the ROM is corrupt, re-run 'sparsyn compress'")
            for _ in range(5):
                digits.append(byte % 3 - 1)
                byte //= 3
        return np.array(digits[:count * t], dtype=np.int64).reshape(count, t)

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        grid = cls._grid(packed)
        occ = np.array(packed.roms["bitmap"].words, dtype=bool)
        if occ.size != grid.groups:
            raise SparsynError(f"ternary bitmap ROM has {occ.size} bits, the layer has {grid.groups} tiles; "
                               "re-run 'sparsyn compress'")
        if int(occ.sum()) != packed.meta["stored_tiles"]:
            raise SparsynError("ternary bitmap does not match the stored tile count; re-run 'sparsyn compress'")
        occ = occ.reshape(grid.sections, grid.tiles)
        entries = cls._entries(packed)
        blocks = np.zeros((grid.sections, grid.cols, grid.tiles, grid.tile), dtype=np.int64)
        e = 0
        for s in range(grid.sections):
            rows = min(grid.cols, grid.n - s * grid.cols)
            for j in range(grid.tiles):
                if occ[s, j]:
                    blocks[s, :rows, j, :] = entries[e:e + rows]
                    e += rows
        if e != len(entries):
            raise SparsynError(f"ternary codes ROM holds {len(entries)} entries, the bitmap uses {e}; "
                               "re-run 'sparsyn compress'")
        w = blocks.reshape(grid.sections * grid.cols, grid.tiles * grid.tile)
        if np.any(w[:, grid.k:]):
            raise SparsynError("ternary codes ROM has a nonzero weight on a padding lane; re-run 'sparsyn compress'")
        return w[:grid.n, :grid.k]

    @classmethod
    def stats(cls, packed, layer):
        m = packed.meta
        grid = cls._grid(packed)
        dense = layer.n * layer.k
        bitmap_bits = packed.roms["bitmap"].bits
        return {"dense_slots": dense, "packed_slots": m["entries"] * m["tile"],
                "groups": grid.groups, "stored_tiles": m["stored_tiles"],
                "tile_sparsity": 1 - m["stored_tiles"] / grid.groups,
                "code_bits": packed.roms["codes"].bits, "bitmap_bits": bitmap_bits, "index_bits": bitmap_bits,
                "rom_bits": packed.rom_bits, "rate_vs_fp32": 32 * dense / packed.rom_bits,
                "rate_vs_int8": 8 * dense / packed.rom_bits, "packing": m["packing"],
                "slots_dense": grid.groups, "slots_stored": m["stored_tiles"]}

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
    def entry_word(cls, trits) -> int:
        """T trits -> the 2T-bit PE entry (lane l at bits 2l, 2l+1)."""
        return int(sum(CODE[int(v)] << (2 * lane) for lane, v in enumerate(trits)))

    @classmethod
    def tile_program(cls, packed, layer, array: ArrayConfig) -> TileProgram:
        m = packed.meta
        if array.cols != m["cols"]:
            raise SparsynError(f"layer '{layer.name}' was packed for {m['cols']} array columns (PE groups of "
                               f"{m['cols']} output channels) but the array has {array.cols}; re-compress with "
                               f"--opt cols={array.cols} or use an array with {m['cols']} columns")
        grid = cls._grid(packed)
        w = cls.decode(packed)
        occ = np.array(packed.roms["bitmap"].words, dtype=bool).reshape(grid.sections, grid.tiles)
        blocks = grid.blocks(w)
        t = grid.tile
        sections = []
        for s in range(grid.sections):
            slots = []
            for j in range(grid.tiles):
                if not occ[s, j]:
                    continue  # pruned PE tile: no slot, no cycles
                lane_k = tuple(j * t + lane if j * t + lane < grid.k else -1 for lane in range(t))
                slots.append(Slot(lane_k, tuple(cls.entry_word(blocks[s, c, j]) for c in range(grid.cols))))
            sections.append(slots)
        return TileProgram(ArrayConfig(array.rows, array.cols, t), layer.n, layer.k, 2 * t, sections)
