"""The hardware-facing schedule of one layer: what every scheme hands to the shared systolic array.

The array is R x C processing elements, weight-stationary. Array **rows** consume input *slots*,
array **columns** produce output channels. A slot carries ``L`` activations ("lanes": 1 for dense
int8, alpha for a column-combined group, T for a ternary adder tile), broadcast along its array row;
each PE holds one *entry* (a scheme-defined packed word) and adds ``sum_l coeff_l(entry) * x_l`` to
the partial sum flowing down its column.

A layer's N output channels are split into **sections** of C channels (section s = channels
``s*C .. s*C+C-1``, the tail padded with zero entries). Each section has its own slot list; slots
are processed R at a time (a **pass**). Between passes the PE weights and the lane descriptors are
reloaded; partial sums of a section accumulate over its passes, then are requantized.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import SparsynError


#: The largest array ``--array`` accepts (PEs, and either side): four times what the biggest supported FPGA holds,
#: so that simulation-only studies still fit, while a typo such as 1000x1000 is refused before any work.
MAX_ARRAY_PES = 1024
MAX_ARRAY_SIDE = 256


@dataclass(frozen=True)
class ArrayConfig:
    """Geometry of the systolic array: ``rows`` x ``cols`` PEs with ``lanes`` activations per row."""
    rows: int
    cols: int
    lanes: int = 1

    def __post_init__(self):
        for name in ("rows", "cols", "lanes"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise SparsynError(f"array {name} must be a positive integer, got {v!r}; "
                                   "use e.g. --array 4x4")

    @classmethod
    def parse(cls, text: str, lanes: int = 1) -> "ArrayConfig":
        """``"RxC"`` -> ArrayConfig (errors say what a valid size looks like)."""
        parts = str(text).lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise SparsynError(f"array size {text!r} is not of the form RxC with positive integers; "
                               "use e.g. --array 4x4")
        r, c = (int(p) for p in parts)
        if r < 1 or c < 1:
            raise SparsynError(f"array size {text!r} has a zero dimension; use e.g. --array 4x4")
        if r * c > MAX_ARRAY_PES or max(r, c) > MAX_ARRAY_SIDE:
            raise SparsynError(f"array {r}x{c} needs {r * c} PEs; the largest FPGA sparsyn targets (ECP5-85F, 84k "
                               f"LUTs) holds about 256 (16x16 used 64k LUTs), and sparsyn plans at most "
                               f"{MAX_ARRAY_PES} PEs with sides up to {MAX_ARRAY_SIDE}: choose e.g. --array 16x16")
        return cls(r, c, lanes)

    def __str__(self):
        return f"{self.rows}x{self.cols}" + (f" (L={self.lanes})" if self.lanes != 1 else "")


@dataclass
class Slot:
    """One array-row load: ``lanes`` K indices (-1 = constant zero input) and C PE entries."""
    lane_k: tuple[int, ...]
    entries: tuple[int, ...]


@dataclass
class TileProgram:
    """A layer's schedule for one array configuration.

    ``sections[s]`` is the slot list of output channels ``s*C .. s*C+C-1``. ``entry_width`` is the
    bit width of one PE entry; the scheme's ``entry_coefficients`` maps an entry to its L lane weights.
    """
    array: ArrayConfig
    n: int
    k: int
    entry_width: int
    sections: list[list[Slot]] = field(default_factory=list)

    @property
    def passes(self) -> list[tuple[int, list[Slot]]]:
        """(section, R slots padded with zero slots) per pass, in execution order."""
        r, out = self.array.rows, []
        zero = Slot((-1,) * self.array.lanes, (0,) * self.array.cols)
        for s, slots in enumerate(self.sections):
            chunks = [slots[i:i + r] for i in range(0, len(slots), r)] or [[]]
            for chunk in chunks:
                out.append((s, chunk + [zero] * (r - len(chunk))))
        return out

    @property
    def slot_count(self) -> int:
        return sum(len(s) for s in self.sections)


def effective_weights(program: TileProgram, entry_coefficients) -> np.ndarray:
    """Rebuild the N x K integer matrix a program computes (for checks against the scheme's decode)."""
    c = program.array.cols
    w = np.zeros((len(program.sections) * c, program.k), dtype=np.int64)
    for s, slots in enumerate(program.sections):
        for slot in slots:
            for col, entry in enumerate(slot.entries):
                for lane, coeff in enumerate(entry_coefficients(entry)):
                    if coeff:
                        k = slot.lane_k[lane]
                        if k < 0:
                            raise ValueError("nonzero coefficient on a zero lane")
                        w[s * c + col, k] += coeff
    return w[:program.n]
