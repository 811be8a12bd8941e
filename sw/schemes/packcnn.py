"""``packcnn``: PackCNN column combining (Kung, McDanel, Zhang, ASPLOS'19) — the baseline of Tight Compression.

Flow (``prepare``): unstructured magnitude pruning to ``density`` with masked fine-tuning
(:mod:`..prune`), then **greedy column combining** over all N rows of each layer (groups of at most
``alpha`` columns, at most ``gamma * N`` conflicting rows per group, :func:`..packing.greedy_combine`),
conflict pruning (largest magnitude per row and group survives) and a final masked fine-tune.
One grouping serves every row section (``shared``), as in the paper. The shared machinery — ROM
format, PE entry, decode, schedule, statistics — is :class:`ColumnCombineScheme`, which ``tight``
reuses; the two schemes differ only in :meth:`ColumnCombineScheme.choose_groups`.

PE entry: ``{weight: signed(8), sel: ceil(log2 alpha)}`` (subword option: ``{sub: signed(4),
shift: 1, sel}``); the PE multiplies the ``sel``-th of the group's ``alpha`` broadcast inputs.
"""
from __future__ import annotations

import numpy as np

from ..errors import SparsynError
from ..packing import (Grouping, conflict_prune, decode_packed, entry_coefficients, entry_layout,
                       column_combine, is_lossless, pack_matrix, packed_stats, repair, tile_program,
                       virtual_magnitude, virtual_matrix, weight_matrix)
from ..prune import check_density, compute_layers, iterative_prune, masks_from_model
from ..qmodel import QuantLayer
from ..subword import quantize_subword
from .base import Option, PackedLayer, Scheme, parse_bool, quantize_int8_per_channel


def _at_least(lo, what):
    return lambda v: None if v >= lo else f"{what} must be at least {lo}"


COMMON_OPTIONS = {
    "alpha": Option(4, "group size: columns combined per packed column (PE input mux width), >= 2", int,
                    _at_least(2, "alpha (columns per group)")),
    "density": Option(0.25, "fraction of weights kept by magnitude pruning, in (0, 1]", float, check_density),
    "prune_steps": Option(3, "iterative pruning steps (geometric density schedule)", int,
                          _at_least(1, "prune_steps")),
    "finetune_epochs": Option(8, "masked fine-tuning epochs after each pruning step and after conflict pruning",
                              int, _at_least(0, "finetune_epochs")),
    "subword": Option(False, "subword-level pruning: each weight as two 4-bit subwords + shift flag", parse_bool),
    "subword_threshold": Option(2, "drop the low subword of a weight with nonzero high subword when |lo| <= this",
                                int, lambda v: None if 0 <= v <= 8 else "subword_threshold must be in 0..8"),
    "dense_first": Option(True, "keep the first compute layer dense int8 (see applies_to)", parse_bool),
    "seed": Option(0, "random seed (annealing)", int),
}


class ColumnCombineScheme(Scheme):
    """Shared base of ``packcnn`` and ``tight``: subclasses implement :meth:`choose_groups`."""

    def __init__(self, **opts):
        super().__init__(**opts)
        self.groupings: dict[str, Grouping] = {}
        self.layer_names: dict[int, str] = {}
        self.history: dict = {}
        #: show tqdm bars (pruning fine-tune, annealing); benchmarks set it to False
        self.progress = True

    # ---- grouping (the one thing the two schemes do differently) --------------------------------
    def choose_groups(self, magnitude: np.ndarray, name: str, progress: bool = True,
                      lossless: bool = False) -> Grouping:
        """Grouping of an N x Kv magnitude matrix (zeros = pruned); ``lossless`` asks for no conflicts
        where the algorithm has such a knob (the result is repaired to lossless anyway by ``pack``)."""
        raise NotImplementedError

    def group_rows(self, n: int) -> int:
        """Rows one group spans (a group can use at most this many of its alpha lanes without conflicts)."""
        raise NotImplementedError

    def check_layer(self, name: str, n: int) -> None:
        rows = self.group_rows(n)
        if self.opts["alpha"] > rows:
            raise SparsynError(
                f"layer {name} cannot be packed: alpha={self.opts['alpha']} exceeds the {rows} rows a {self.name} "
                f"group spans, and a conflict-free group holds at most one nonzero column per row; "
                f"use --opt alpha={max(2, rows)} or an array with more columns (--array RxC)")

    # ---- software compression ---------------------------------------------------------------------
    def applies_to(self, index: int, layer_kind: str, n_layers: int) -> bool:
        """All compute layers, except the first when ``dense_first`` (default): the first conv of a
        small CNN has tiny fan-in (K = 9 for 1-channel 3x3), holds < 5 % of the weights, and pruning
        it costs the most accuracy per weight saved — so it stays dense int8."""
        return not (self.opts["dense_first"] and index == 0 and n_layers > 1)

    def _virtual(self, w_float: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float N x K -> (integer virtual matrix, magnitudes) as the quantizer will see it."""
        if self.opts["subword"]:
            q = quantize_subword(w_float, self.opts["subword_threshold"])[0]
            v = virtual_matrix(q, True)
            return v, virtual_magnitude(v, True)
        return w_float, np.abs(w_float)

    def prepare(self, model, data, log=print):
        import torch
        from ..train import accuracy, train
        layers = compute_layers(model, data.input_shape)
        chosen = []
        for i, (name, mod) in enumerate(layers):
            kind = "conv" if isinstance(mod, torch.nn.Conv2d) else "linear"
            if self.applies_to(i, kind, len(layers)):
                self.check_layer(name, mod.weight.shape[0])
                chosen.append((i, name, mod))
        names = [n for _, n, _ in chosen]
        log(f"{self.name}: magnitude pruning {', '.join(names)} to density {self.opts['density']}")
        self.history["prune"] = iterative_prune(model, data, names, self.opts["density"], self.opts["prune_steps"],
                                                self.opts["finetune_epochs"], log=log, progress=self.progress)
        self.history["layers"] = {}
        for i, name, mod in chosen:
            w = mod.weight.data.reshape(mod.weight.shape[0], -1).double().numpy()
            v, mag = self._virtual(w)
            grouping = self.choose_groups(mag, name, progress=self.progress)
            pruned_v, info = conflict_prune(v, grouping, mag)
            if self.opts["subword"]:
                keep = weight_matrix(pruned_v, True) != 0
                w_new = np.where(keep, w, 0.0)
            else:
                w_new = pruned_v
            with torch.no_grad():
                mod.weight.copy_(torch.as_tensor(w_new, dtype=mod.weight.dtype).reshape(mod.weight.shape))
            self.groupings[name] = grouping
            self.layer_names[i] = name
            nnz = int(np.count_nonzero(v))
            self.history["layers"][name] = {"groups": sum(grouping.widths) if not grouping.shared
                                            else grouping.widths[0], "conflict_pruned": info["pruned"],
                                            "nonzero_before": nnz}
            log(f"  {name}: {sum(grouping.widths) if not grouping.shared else grouping.widths[0]} groups, "
                f"conflict pruning removed {info['pruned']} of {nnz} nonzero {'subwords' if self.opts['subword'] else 'weights'}")
        acc = accuracy(model, data.test_x, data.test_y)
        if self.opts["finetune_epochs"]:
            acc = train(model, data, epochs=self.opts["finetune_epochs"], lr=1e-3, masks=masks_from_model(model, names),
                        desc=f"{self.name} fine-tune", progress=self.progress)
        self.history["after_conflict_finetune"] = acc
        log(f"  after conflict pruning + fine-tune: accuracy {acc:.2f} %")
        return model

    def quantize_weights(self, index: int, w: np.ndarray):
        """int8 per channel (subword: [-119, 119] with low subwords pruned), then the recorded grouping
        is enforced on the integers (a no-op unless quantization re-created a pruned subword)."""
        if self.opts["subword"]:
            q, scale, bits = quantize_subword(w, self.opts["subword_threshold"])
        else:
            q, scale, bits = quantize_int8_per_channel(w)
        name = self.layer_names.get(index)
        if name is not None:
            g = self.groupings[name]
            v = virtual_matrix(q, g.subword)
            q = weight_matrix(conflict_prune(v, g, virtual_magnitude(v, g.subword))[0], g.subword)
        return q, scale, bits

    # ---- ROM format -------------------------------------------------------------------------------
    def schedule(self, layer: QuantLayer):
        """Lossless: uses the grouping from ``prepare`` (or computes one), repaired if it would drop a
        weight; one array-row slot per packed group (lanes = its alpha columns)."""
        self.check_layer(layer.name, layer.n)
        sub = bool(self.opts["subword"])
        v = virtual_matrix(layer.weight, sub)
        g = self.groupings.get(layer.name)
        if g is None or g.height != self.array.cols:
            g = self.choose_groups(virtual_magnitude(v, sub), layer.name, progress=False, lossless=True)
        if not is_lossless(v, g):
            g = repair(v, g, virtual_magnitude(v, sub))
        grouped = pack_matrix(self.name, layer.weight, g, layer.weight_bits,
                              {"grouping": "shared" if g.shared else "per-section"})
        program = tile_program(grouped, layer, self.array)
        m = grouped.meta
        # figures of the grouped form (an intermediate, not what the chip stores: see the report's bit split)
        grouped_names = {"rom_bits": "grouped_bits", "index_bits": "grouped_index_bits",
                         "flag_bits": "grouped_flag_bits", "bit_rate": "grouped_bit_rate"}
        stats = {grouped_names.get(k, k): v for k, v in packed_stats(grouped, layer).items()}
        return program, {"alpha": m["alpha"], "subword": m["subword"], "weight_bits": m["weight_bits"],
                         "grouping": m["grouping"], "stats": stats}

    # ---- PE model ---------------------------------------------------------------------------------
    @classmethod
    def lanes(cls, packed):
        return packed.meta["alpha"]

    @classmethod
    def entry_layout(cls, packed):
        m = packed.meta
        return entry_layout(m["alpha"], m["subword"], m["weight_bits"])

    @classmethod
    def entry_coefficients(cls, packed, entry):
        return entry_coefficients(packed, entry)


class PackCNNScheme(ColumnCombineScheme):
    name = "packcnn"
    hardware = "sparsyn.hw.schemes.tight"
    summary = "PackCNN greedy column combining (alpha inputs per PE mux), conflict pruning"
    options = {**COMMON_OPTIONS,
               "gamma": Option(0.25, "max fraction of a group's rows with conflicts (pruned), in [0, 1]", float,
                               lambda v: None if 0 <= v <= 1 else "gamma must be in [0, 1]")}

    def group_rows(self, n: int) -> int:
        return n

    def choose_groups(self, magnitude, name, progress=True, lossless=False):
        """The original's sequential best-fit over all rows (one grouping for every section); see column_combine."""
        gamma = 0.0 if lossless else self.opts["gamma"]
        groups = column_combine(np.asarray(magnitude) > 0, self.opts["alpha"], gamma)
        return Grouping(self.array.cols, self.opts["alpha"], bool(self.opts["subword"]), [groups],
                        shared=True)
