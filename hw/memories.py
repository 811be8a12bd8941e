"""The two kinds of memory the LayerEngine's components build: buffers (RAM) and ROMs (the layer's files)."""
from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib.memory import Memory

from sparsyn.sw.schemes import Rom


def buffer_memory(shape, depth: int) -> Memory:
    """A RAM of ``depth`` words of ``shape``, initially zero.

    The depth is at least 2, which keeps every address port at least 1 bit wide (no zero-width Verilog
    vectors). ``no_rw_check``: no read port of the engine reads a word in the cycle it is written (each
    buffer's docstring says why), so yosys need not emulate read-during-write in logic around the block
    RAMs.
    """
    return Memory(shape=shape, depth=max(depth, 2), init=[], attrs={"no_rw_check": 1})


def rom_memory(*roms: Rom) -> Memory:
    """A memory initialised with exactly the ROM file's words (the plan checked kind, width and depth).

    Several ROMs (the same memory of the layers sharing a datapath) are laid end to end in one memory as
    wide as the widest, each word zero-extended (:func:`rom_offsets`: where each starts)."""
    words = [w for rom in roms for w in rom.words]
    return Memory(shape=unsigned(max(rom.width for rom in roms)), depth=max(len(words), 2 if len(roms) > 1 else 1),
                  init=words, attrs={"no_rw_check": 1})


def rom_offsets(roms) -> list[int]:
    """The first word of each of ``roms`` in the memory :func:`rom_memory` lays them out in."""
    out, at = [], 0
    for rom in roms:
        out.append(at)
        at += rom.depth
    return out
