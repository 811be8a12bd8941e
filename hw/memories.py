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


def rom_memory(rom: Rom) -> Memory:
    """A memory initialised with exactly the ROM file's words (the plan checked kind, width and depth)."""
    return Memory(shape=unsigned(rom.width), depth=rom.depth, init=rom.words, attrs={"no_rw_check": 1})
