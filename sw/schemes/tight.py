"""``tight``: Tight Compression (Chen, Zhu, Jiang, Tsui — DAC'20, TCAD'22) on the shared array.

Same flow, ROM format and PE as ``packcnn`` (:class:`.packcnn.ColumnCombineScheme`): unstructured
magnitude pruning with masked fine-tuning, column combining into groups of at most ``alpha``
columns, conflict pruning, fine-tuning; optional subword-level pruning. What differs is how groups
are chosen: **each row section** (the array's C output channels, one set of passes) gets its own
column-to-group assignment, found by **simulated annealing** (:mod:`..anneal`: state = columns in
group slots, move = swap/move between two groups, energy = packed width + ``penalty`` x conflict-
pruned magnitude / mean magnitude - ``fill_bonus`` x fill², Metropolis acceptance, geometric cooling
``T = t0 * cooling**sweep`` over ``anneal_steps`` sweeps). Conflicts the annealer accepts are pruned
(smaller magnitudes) and the model fine-tuned with masks afterwards.
"""
from __future__ import annotations

import numpy as np

from ..anneal import AnnealParams, anneal_sections
from ..packing import Grouping, section_count, section_rows
from .base import Option
from .packcnn import COMMON_OPTIONS, ColumnCombineScheme


def _positive(what):
    return lambda v: None if v > 0 else f"{what} must be > 0"


class TightScheme(ColumnCombineScheme):
    name = "tight"
    hardware = "sparsyn.hw.schemes.tight"
    summary = "Tight Compression: per-section simulated-annealing column permutation (+ subwords)"
    options = {
        **COMMON_OPTIONS,
        "anneal_steps": Option(400, "annealing budget in sweeps (each sweep proposes one move per pair of groups)",
                               int, lambda v: None if v >= 1 else
                               "anneal_steps (the annealing budget) must be at least 1 sweep, e.g. anneal_steps=400"),
        "t0": Option(0.05, "initial annealing temperature (energy units = one group of width)", float,
                     _positive("t0")),
        "cooling": Option(0.99, "geometric cooling factor per sweep, in (0, 1)", float,
                          lambda v: None if 0 < v < 1 else "cooling must be in (0, 1), e.g. 0.99"),
        "penalty": Option(1.0, "energy weight of conflict pruning: groups one average-magnitude weight is worth",
                          float, lambda v: None if v >= 0 else "penalty must be >= 0"),
        "fill_bonus": Option(1.0, "energy bonus for full groups (lets sparse groups drain), >= 0", float,
                             lambda v: None if v >= 0 else "fill_bonus must be >= 0"),
    }

    def __init__(self, **opts):
        super().__init__(**opts)
        if self.opts["alpha"] > self.array.cols:
            from ..errors import SparsynError
            raise SparsynError(f"option alpha={self.opts['alpha']} of scheme 'tight' exceeds the {self.array.cols} "
                               f"columns of the {self.array.rows}x{self.array.cols} array (= the rows of a section): "
                               "a conflict-free group holds at most one nonzero column per row of its section; use "
                               f"alpha <= {self.array.cols} or an array with more columns (--array RxC)")
        self.anneal_stats: dict[str, dict] = {}

    def group_rows(self, n: int) -> int:
        return min(self.array.cols, n)

    def anneal_params(self, lossless: bool = False) -> AnnealParams:
        o = self.opts
        return AnnealParams(sweeps=o["anneal_steps"], t0=o["t0"], cooling=o["cooling"],
                            penalty=1e6 if lossless else o["penalty"], fill_bonus=o["fill_bonus"], seed=o["seed"])

    def choose_groups(self, magnitude, name, progress=True, lossless=False):
        """Per-section simulated annealing (see :mod:`..anneal`)."""
        mag = np.asarray(magnitude, dtype=np.float64)
        n, h = mag.shape[0], self.array.cols
        blocks = []
        for s in range(section_count(n, h)):
            blk = np.zeros((h, mag.shape[1]))
            rows = mag[section_rows(n, h, s)]
            blk[:len(rows)] = rows
            blocks.append(blk)
        groups, stats = anneal_sections(blocks, self.opts["alpha"], self.anneal_params(lossless),
                                        progress=progress, desc=f"anneal {name}")
        self.anneal_stats[name] = stats
        return Grouping(h, self.opts["alpha"], bool(self.opts["subword"]), groups)
