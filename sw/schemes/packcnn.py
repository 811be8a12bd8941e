"""``packcnn``: PackCNN column combining (Kung, McDanel, Zhang, ASPLOS'19) — the baseline of Tight Compression.

Flow (``prepare``), the original's joint optimisation (BradMcDanel/column-combine: ``train.py``,
``util.prune``, ``packing.pack_model``; see ``../shared/papers.md`` section 1), :func:`..prune.joint_prune`:
``prune_steps`` steps (original: 10); at each step, for every compressed layer,

1. **magnitude pruning** to the step's point of the **cubic schedule** :func:`..prune.cubic_schedule`
   (pruned fraction ``(1 - (1 - i/steps)**3) * (1 - density)``); the mask is rebuilt from the
   magnitudes, including the values conflict-pruned weights had (kept aside), so those can return;
2. **column combining** on the surviving support, over all N rows, within ``window``-column windows
   if set (:func:`..packing.column_combine`: the original's sequential best-fit; a merge is allowed
   when the group has at most ``alpha`` columns and loses at most ``floor(gamma * N)`` weights to
   conflict pruning);
3. **conflict pruning**: in each (row, group) only the largest magnitude survives (masked);
4. **retraining** ``finetune_epochs`` epochs with the mask; test accuracy -> ``history["steps"]``.

Options, with what the original does:

* ``alpha`` — group size (PE input mux width) of every compressed layer, >= 1; ``layer_alpha`` —
  per-layer overrides ``NAME=ALPHA,...``. The original sets alpha per layer (its ``groups``);
  alpha = 1 leaves a layer uncombined (one column per group; with ``density=auto`` also unpruned).
* ``gamma`` — cap on the weights one merged group may lose to conflict pruning, as a fraction of the
  layer's rows N. The original's ``pack_model`` (``overlap_pct``) is called with ``--gamma``, whose
  code default is 1.75 (0.5 in an earlier version; the paper's gamma plots centre on 0.5 and its ASIC
  comparison uses alpha = 8, gamma = 0.5). Our default is 0.5, the paper's setting: 1.75 lets a group
  lose more weights than it has rows, and on the digits CNN (N = 16 and 10 rows) it cost about 3 points
  of accuracy for about 13 % fewer packed slots; gamma = 0 combines losslessly.
* ``window`` — combine columns only within consecutive windows of that many columns (the
  original's ``section_size``, 256 in its shipped ``pack_model``); 0 (default) = the whole matrix.
* ``density`` — final fraction of each layer's weights kept by magnitude pruning (before conflict
  pruning). ``auto`` (default) = ``1 - 0.8 * (1 - 1/alpha)`` per layer: the original's final prune
  rate ``0.8 * (1 - 1/alpha)`` (0.4 kept at alpha = 4, 0.3 at 8, all at 1); a number applies to every
  compressed layer.
* ``prune_steps`` (10, as the original) and ``finetune_epochs`` (retraining per step with our masked
  Adam fine-tune, :func:`..train.train`; the original trains with SGD about epochs/20 epochs between
  steps and the second half of its epochs after the last one).
* Layers: every compute layer but the first (``dense_first``); the original combines its ``Conv2d``
  layers (the first at alpha = 1, so unpruned) and leaves the final ``Linear`` dense.

One grouping serves every row section (``shared``), as in the paper. The shared machinery — ROM
format, PE entry, decode, schedule, statistics — is :class:`ColumnCombineScheme`, which ``tight``
reuses with its own grouping (:meth:`ColumnCombineScheme.choose_groups`) and flow (prune first, then
combine once: :meth:`ColumnCombineScheme.prepare`).

PE entry: ``{weight: signed(8), sel: ceil(log2 alpha)}`` (subword option: ``{sub: signed(4),
shift: 1, sel}``); the PE multiplies the ``sel``-th of the group's ``alpha`` broadcast inputs.
"""
from __future__ import annotations

import numpy as np

from ..errors import SparsynError
from ..packing import (Grouping, conflict_prune, entry_coefficients, entry_layout,
                       column_combine, is_lossless, pack_matrix, packed_stats, repair, tile_program,
                       virtual_magnitude, virtual_matrix, weight_matrix)
from ..prune import check_density, compute_layers, iterative_prune, joint_prune, masks_from_model
from ..qmodel import QuantLayer
from ..subword import quantize_subword
from .base import Option, Scheme, parse_bool, parse_layer_ints, quantize_int8_per_channel


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
    """Shared base of ``packcnn`` and ``tight``: subclasses implement :meth:`choose_groups`; the flow
    here (:meth:`prepare`: prune first, then combine once) is ``tight``'s, ``packcnn`` overrides it with
    the original's joint schedule and gives each layer its own alpha (:meth:`alpha_of`)."""

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

    def alpha_of(self, name: str) -> int:
        """Group size (PE mux width) of layer ``name`` (``alpha``; ``packcnn`` adds per-layer overrides)."""
        return self.opts["alpha"]

    def alpha_advice(self, name: str, rows: int) -> str:
        """How to fix an alpha above a layer's group rows (one clause of :meth:`check_layer`'s error)."""
        return f"use --opt alpha={max(2, rows)}"

    def check_layer(self, name: str, n: int) -> None:
        rows = self.group_rows(n)
        alpha = self.alpha_of(name)
        if alpha > rows:
            raise SparsynError(
                f"layer {name} cannot be packed: alpha={alpha} exceeds the {rows} rows a {self.name} "
                f"group spans, and a conflict-free group holds at most one nonzero column per row; "
                f"{self.alpha_advice(name, rows)} or an array with more columns (--array RxC)")

    # ---- software compression ---------------------------------------------------------------------
    def applies_to(self, index: int, layer_kind: str, n_layers: int, kernel=(1, 1)) -> bool:
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

    def compressed_layers(self, model, data) -> list[tuple[int, str, object]]:
        """(compute-layer index, name, module) of the layers this scheme compresses (checked to fit)."""
        import torch
        layers = compute_layers(model, data.input_shape)
        chosen = []
        for i, (name, mod) in enumerate(layers):
            kind = "conv" if isinstance(mod, torch.nn.Conv2d) else "linear"
            # a depthwise conv's module holds the compact N x kh*kw weights, not the block-diagonal matrix the
            # array runs: it is not pruned here, and :meth:`schedule` groups its zeros away losslessly
            if getattr(mod, "groups", 1) > 1:
                continue
            if self.applies_to(i, kind, len(layers)):
                self.check_layer(name, mod.weight.shape[0])
                chosen.append((i, name, mod))
        return chosen

    def combine_layer(self, name: str, w: np.ndarray, progress: bool = True) -> tuple[Grouping, np.ndarray, dict]:
        """Group the float N x K matrix ``w`` (zeros = pruned) and conflict-prune it: returns the grouping,
        the bool N x K matrix of weights that survive (with subwords: weights with a surviving subword)
        and ``{"pruned": conflict-pruned virtual entries, "nonzero_before": nonzero virtual entries}``."""
        v, mag = self._virtual(w)
        grouping = self.choose_groups(mag, name, progress=progress)
        pruned_v, info = conflict_prune(v, grouping, mag)
        keep = (weight_matrix(pruned_v, True) if self.opts["subword"] else pruned_v) != 0
        return grouping, keep, {"pruned": info["pruned"], "nonzero_before": int(np.count_nonzero(v))}

    def prepare(self, model, data, log=print):
        """Prune first, then combine once: :func:`..prune.iterative_prune` to ``density`` (geometric
        schedule, masked fine-tuning), then per layer :meth:`combine_layer`, and one masked fine-tune.
        (``packcnn`` overrides this with the original's joint schedule.)"""
        import torch
        from ..train import accuracy, train
        chosen = self.compressed_layers(model, data)
        names = [n for _, n, _ in chosen]
        log(f"{self.name}: magnitude pruning {', '.join(names)} to density {self.opts['density']}")
        self.history["prune"] = iterative_prune(model, data, names, self.opts["density"], self.opts["prune_steps"],
                                                self.opts["finetune_epochs"], log=log, progress=self.progress)
        self.history["layers"] = {}
        for i, name, mod in chosen:
            w = mod.weight.data.reshape(mod.weight.shape[0], -1).double().numpy()
            grouping, keep, info = self.combine_layer(name, w, progress=self.progress)
            with torch.no_grad():
                mod.weight.copy_(torch.as_tensor(np.where(keep, w, 0.0), dtype=mod.weight.dtype)
                                 .reshape(mod.weight.shape))
            self.groupings[name] = grouping
            self.layer_names[i] = name
            groups = sum(grouping.widths) if not grouping.shared else grouping.widths[0]
            self.history["layers"][name] = {"groups": groups, "conflict_pruned": info["pruned"],
                                            "nonzero_before": info["nonzero_before"]}
            log(f"  {name}: {groups} groups, conflict pruning removed {info['pruned']} of {info['nonzero_before']} "
                f"nonzero {'subwords' if self.opts['subword'] else 'weights'}")
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
    def pe_macs(cls, packed):
        """One: the PE's single multiplier sits behind an alpha:1 mux over its lanes (one weight per cycle)."""
        return 1

    @classmethod
    def entry_layout(cls, packed):
        m = packed.meta
        return entry_layout(m["alpha"], m["subword"], m["weight_bits"])

    @classmethod
    def entry_coefficients(cls, packed, entry):
        return entry_coefficients(packed, entry)


def parse_layer_alpha(value) -> dict[str, int]:
    """``"conv2=8,fc=1"`` (or a dict) -> ``{"conv2": 8, "fc": 1}``; malformed text is refused in one line."""
    return parse_layer_ints(value, scheme="packcnn", option="layer_alpha", what="alpha",
                            example="layer_alpha=conv2=8,fc=1")


parse_layer_alpha.__name__ = "NAME=ALPHA,..."


def parse_density(value):
    """``auto`` or a number."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return float(value)


parse_density.__name__ = "number or 'auto'"


#: The original's final prune rate is ``FINAL_PRUNE_RATE * (1 - 1/alpha)`` (``train.py``, ``util.prune``).
FINAL_PRUNE_RATE = 0.8


def auto_density(alpha: int) -> float:
    """``density=auto``: the kept fraction after the original's final prune rate, ``1 - 0.8 * (1 - 1/alpha)``."""
    return 1.0 - FINAL_PRUNE_RATE * (1.0 - 1.0 / alpha)


class PackCNNScheme(ColumnCombineScheme):
    name = "packcnn"
    hardware = "sparsyn.hw.schemes.tight"
    summary = "PackCNN column combining (original sequential best-fit, joint prune/combine/retrain schedule)"
    options = {
        **COMMON_OPTIONS,
        "alpha": Option(4, "group size of every compressed layer: columns combined per packed column (the PE's "
                           "alpha:1 input mux), >= 1; 1 = not combined (one column per group); the original sets "
                           "alpha per layer (see layer_alpha)", int, _at_least(1, "alpha (columns per group)")),
        "layer_alpha": Option({}, "per-layer alpha overriding alpha, NAME=ALPHA pairs separated by commas (e.g. "
                                  "conv2=8,fc=1); alpha 1 leaves that layer uncombined (and, with density=auto, "
                                  "unpruned), as in the original", parse_layer_alpha,
                              lambda v: next((f"alpha {a} of layer {n!r} must be at least 1" for n, a in v.items()
                                              if a < 1), None)),
        "gamma": Option(0.5, "cap on the weights conflict pruning may remove from one merged group, as a fraction "
                             "of the layer's rows N (sum over rows of max(0, nonzeros - 1) <= floor(gamma*N)), >= 0; "
                             "0 = lossless combining; the original's code default is 1.75, its paper plots 0.5",
                        float, lambda v: None if 0 <= v < float("inf") else "gamma must be a number >= 0, e.g. 0.5"),
        "window": Option(0, "combine columns only within consecutive windows of this many columns (the original's "
                            "section_size, 256 there); 0 = the whole matrix", int,
                         lambda v: None if v >= 0 else "window must be 0 (off) or a positive number of columns"),
        "density": Option("auto", "final fraction of each compressed layer's weights kept by magnitude pruning "
                                  "(before conflict pruning): auto = 1 - 0.8*(1 - 1/alpha) of the layer's alpha, the "
                                  "original's final prune rate 0.8*(1 - 1/alpha); or a number in (0, 1] for every "
                                  "layer",
                          parse_density, lambda v: None if v == "auto" else check_density(v)),
        "prune_steps": Option(10, "steps of the joint schedule (the original: 10): magnitude pruning on the cubic "
                                  "schedule, re-combining, conflict pruning and retraining at every step", int,
                              _at_least(1, "prune_steps")),
        "finetune_epochs": Option(8, "retraining epochs with the mask after each step", int,
                                  _at_least(0, "finetune_epochs")),
        "seed": Option(0, "random seed of the retraining (batch order)", int),
    }

    def group_rows(self, n: int) -> int:
        return n

    def alpha_of(self, name: str) -> int:
        return self.opts["layer_alpha"].get(name, self.opts["alpha"])

    def alpha_advice(self, name: str, rows: int) -> str:
        return f"use --opt layer_alpha={name}={rows}"

    def density_of(self, name: str) -> float:
        """Final kept fraction of layer ``name`` (``density``, or ``auto`` from its alpha)."""
        d = self.opts["density"]
        return auto_density(self.alpha_of(name)) if d == "auto" else d

    def choose_groups(self, magnitude, name, progress=True, lossless=False):
        """The original's sequential best-fit over all rows (one grouping for every section), within
        ``window``-column windows if set; see :func:`..packing.column_combine`."""
        gamma = 0.0 if lossless else self.opts["gamma"]
        alpha = self.alpha_of(name)
        groups = column_combine(np.asarray(magnitude) > 0, alpha, gamma, self.opts["window"])
        return Grouping(self.array.cols, alpha, bool(self.opts["subword"]), [groups], shared=True)

    def prepare(self, model, data, log=print):
        """The joint schedule (module docstring): :func:`..prune.joint_prune` with :meth:`combine_layer`
        at every step; the last step's groupings are kept for packing. ``history["steps"]``: one record
        per step (schedule point, per layer: density, groups, conflict-pruned, returned; accuracy)."""
        chosen = self.compressed_layers(model, data)
        known = [n for n, _ in compute_layers(model, data.input_shape)]
        names = [n for _, n, _ in chosen]
        for name in self.opts["layer_alpha"]:
            if name not in known:
                raise SparsynError(f"option layer_alpha names layer {name!r}, which is not a compute layer of the "
                                   f"model; its compute layers are {', '.join(known)}")
            if name not in names:
                raise SparsynError(f"option layer_alpha names layer {name!r}, which {self.name} keeps dense int8 "
                                   "(the first compute layer, dense_first=1); set dense_first=0 to compress it")
        self.layer_names = {i: name for i, name, _ in chosen}
        final = {name: 1.0 - self.density_of(name) for name in names}
        log(f"{self.name}: joint pruning + column combining of " + ", ".join(
            f"{n} (alpha {self.alpha_of(n)}, density {self.density_of(n):.3f})" for n in names)
            + f" in {self.opts['prune_steps']} steps, gamma {self.opts['gamma']}"
            + (f", windows of {self.opts['window']} columns" if self.opts["window"] else ""))

        def combine(name, w):
            grouping, keep, info = self.combine_layer(name, w, progress=False)
            self.groupings[name] = grouping
            return keep, {"alpha": grouping.alpha, "groups": grouping.widths[0]}

        steps = joint_prune(model, data, final, self.opts["prune_steps"], self.opts["finetune_epochs"], combine,
                            log=log, progress=self.progress, desc=f"{self.name} step", seed=self.opts["seed"])
        last = steps[-1]
        self.history = {"steps": steps, "accuracy": [r["accuracy"] for r in steps],
                        "final_accuracy": last["accuracy"],
                        "layers": {n: {k: last["layers"][n][k] for k in ("alpha", "groups", "density", "nonzero",
                                                                          "conflict_pruned", "returned")}
                                   for n in names}}
        return model
