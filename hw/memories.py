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


#: ROMs of at most this many bits are read asynchronously into a register (LUT logic + flip-flops) instead of
#: occupying a block RAM: a per-channel constants table of a small layer is a few hundred bits.
SMALL_ROM_BITS = 1024


class RegisteredRead:
    """A read port with a synchronous read's timing (``data`` = the word at ``addr`` one cycle earlier, always
    enabled) on a memory small enough to be logic: an asynchronous read into a register."""

    def __init__(self, m, mem, name: str):
        from amaranth.hdl import Signal
        port = mem.read_port(domain="comb")
        self.addr = port.addr
        self.data = Signal.like(port.data, name=f"{name}_data")
        m.d.sync += self.data.eq(port.data)


def rom_read_port(m, mem, name: str):
    """``mem.read_port()`` (latency 1, always enabled), or a :class:`RegisteredRead` for a ROM of at most
    :data:`SMALL_ROM_BITS` bits (so it is not worth a block RAM)."""
    from amaranth.hdl import Shape
    if Shape.cast(mem.shape).width * mem.depth <= SMALL_ROM_BITS:
        return RegisteredRead(m, mem, name)
    return mem.read_port()
