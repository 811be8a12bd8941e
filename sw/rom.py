"""ROM files in ``$readmemh`` hex: one word per line, two's complement, ``ceil(width/4)`` digits.

Both Verilog ``$readmemh`` and :func:`read_readmemh` (used to build Amaranth ``Memory(init=...)``)
load these files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SparsynError


def to_unsigned(values, width: int) -> list[int]:
    """Signed or unsigned integers -> ``width``-bit two's complement words (range-checked)."""
    out = []
    lo, hi = -(1 << (width - 1)), (1 << width) - 1
    for v in np.asarray(values, dtype=object).ravel():
        v = int(v)
        if not lo <= v <= hi:
            raise ValueError(f"value {v} does not fit a {width}-bit ROM word")
        out.append(v & ((1 << width) - 1))
    return out


def to_signed(words, width: int) -> np.ndarray:
    """``width``-bit words -> signed int64 values."""
    w = np.asarray(words, dtype=np.int64)
    return np.where(w >= (1 << (width - 1)), w - (1 << width), w)


def format_readmemh(words, width: int) -> str:
    digits = max(1, (width + 3) // 4)
    return "".join(f"{int(w):0{digits}x}\n" for w in words)


def write_readmemh(path: Path, words, width: int) -> None:
    for w in words:
        if not 0 <= int(w) < (1 << width):
            raise ValueError(f"ROM word {w} does not fit {width} bits")
    Path(path).write_text(format_readmemh(words, width))


def read_readmemh(path: Path, width: int, depth: int | None = None) -> list[int]:
    """Parse a ROM file, checking word count and width; errors name the file and the fix."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SparsynError(f"ROM file {path} is missing; re-run 'sparsyn compress' to regenerate it") from None
    words = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("//")[0].strip()
        if not line:
            continue
        try:
            w = int(line, 16)
        except ValueError:
            raise SparsynError(f"ROM file {path} line {lineno}: {line!r} is not a hex word; "
                               "re-run 'sparsyn compress' to regenerate it") from None
        if w >= (1 << width):
            raise SparsynError(f"ROM file {path} line {lineno}: word {line} is wider than {width} bits; "
                               "the file does not belong to this manifest")
        words.append(w)
    if depth is not None and len(words) != depth:
        raise SparsynError(f"ROM file {path} has {len(words)} words but the manifest says {depth}; "
                           "the file is truncated or from another model, re-run 'sparsyn compress'")
    return words
