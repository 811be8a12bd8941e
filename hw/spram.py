"""A weight store in the iCE40UP's single-port RAMs (SB_SPRAM256KA: 16 K x 16 bit each), loaded over the host link.

The engine reads one W-bit word per cycle; the host writes bytes (while the engine is idle). Word ``i`` is held in
``ceil(W / 16)`` SPRAMs side by side (bits ``16k .. 16k+15`` in SPRAM ``k``); on the link it is the
``2 * ceil(W / 16)`` bytes ``[i * 2K, (i + 1) * 2K)``, little endian: :func:`spram_image` gives the bytes of a list
of words (the ROM files' words, end to end), so what the host writes is exactly the ROM files' content.

On an iCE40UP platform the store instantiates ``SB_SPRAM256KA`` (a SPRAM cannot be inferred from a memory with
initial contents, and this one has none: the host loads it); elsewhere — Amaranth's simulator, the Verilog for
Icarus / Verilator, other FPGAs — it builds the behavioural equivalent from :class:`~amaranth.lib.memory.Memory`
(same ports, same one-cycle read, byte write enables).
"""
from __future__ import annotations

import operator

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

#: Words and bits of one SB_SPRAM256KA.
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16
#: SPRAM blocks of the iCE40UP5K.
UP5K_SPRAMS = 4


def spram_banks(width: int) -> int:
    """SPRAMs side by side for a ``width``-bit word."""
    return -(-operator.index(width) // SPRAM_WIDTH)


def spram_image(words, width: int) -> bytes:
    """The link bytes of ``words`` (``width`` bits each) in a :class:`SpramStore`: ``2 * banks`` bytes per word,
    little endian."""
    n = 2 * spram_banks(width)
    return b"".join(int(w).to_bytes(n, "little") for w in words)


def check_spram_store(width: int, depth: int, sprams: int = UP5K_SPRAMS) -> None:
    """Refuse (one line) a weight memory that ``sprams`` SPRAMs cannot hold as a :class:`SpramStore`."""
    from sparsyn.sw.errors import SparsynError
    width, depth = operator.index(width), operator.index(depth)
    if spram_banks(width) > sprams:
        raise SparsynError(f"a {width}-bit weight word needs {spram_banks(width)} SPRAMs side by side, the device has "
                           f"{sprams}; use --weights ebr or a smaller --array")
    if depth > SPRAM_DEPTH:
        raise SparsynError(f"{depth} weight words exceed the {SPRAM_DEPTH} words of a SPRAM; use a smaller model")


def _is_ice40up(platform) -> bool:
    return platform is not None and str(getattr(platform, "device", "")).startswith("iCE40UP")


class SpramStore(wiring.Component):
    """``depth`` words of ``width`` bits in SPRAM; the engine reads, the host writes bytes.

    Latency: ``r_data`` holds the word at ``r_addr`` one cycle after the address (a block RAM read). Throughput:
    one word read or one byte written per cycle (single-port: a write cycle is not a read cycle).

    Parameters
    ----------
    width : int — bits per word (1 .. 64: at most the UP5K's four SPRAMs side by side).
    depth : int — words (1 .. 16384). Both checked by :func:`check_spram_store` (call it while planning).

    Attributes
    ----------
    r_addr : In(range(depth)); r_data : Out(width)
        The engine's reads (every cycle without a write).
    w_addr : In(range(depth * bytes per word)); w_data : In(8); w_en : In(1)
        The host's byte writes (link byte address, see :func:`spram_image`).
    """

    def __init__(self, width: int, depth: int):
        self.width, self.depth = operator.index(width), operator.index(depth)
        check_spram_store(self.width, self.depth)      # the plan refuses first (see boards.infer)
        self.banks = spram_banks(self.width)
        self.bytes_per_word = 2 * self.banks
        super().__init__({
            "r_addr": In(range(max(self.depth, 2))),
            "r_data": Out(self.width),
            "w_addr": In(range(max(self.depth * self.bytes_per_word, 2))),
            "w_data": In(8),
            "w_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        # the byte address -> word, bank, which byte of the bank's 16-bit word
        word = Signal(range(max(self.depth, 2)))
        bank = Signal(range(max(self.banks, 2)))
        upper = Signal()
        m.d.comb += [upper.eq(self.w_addr[0]), word.eq(self.w_addr // self.bytes_per_word),
                     bank.eq((self.w_addr % self.bytes_per_word) >> 1)]
        addr = Signal(14)
        m.d.comb += addr.eq(Cat(self.r_addr, 0)[:14])
        with m.If(self.w_en):
            m.d.comb += addr.eq(word)
        outs = []
        for k in range(self.banks):
            wren = self.w_en & (bank == k)
            data_out = Signal(SPRAM_WIDTH, name=f"spram_{k}_data")
            if _is_ice40up(platform):
                m.submodules[f"spram_{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr, i_DATAIN=Cat(self.w_data, self.w_data),
                    i_MASKWREN=Cat(~upper, ~upper, upper, upper), i_WREN=wren, i_CHIPSELECT=1,
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=data_out)
            else:
                # the behavioural SPRAM: as deep as the store needs (the chip's is 16 K words)
                m.submodules[f"spram_{k}"] = mem = Memory(shape=unsigned(SPRAM_WIDTH), depth=max(self.depth, 2),
                                                         init=[])
                wr = mem.write_port(granularity=8)
                rd = mem.read_port()
                m.d.comb += [wr.addr.eq(addr), wr.data.eq(Cat(self.w_data, self.w_data)),
                             wr.en.eq(Cat(wren & ~upper, wren & upper)), rd.addr.eq(addr), rd.en.eq(~self.w_en),
                             data_out.eq(rd.data)]
            outs.append(data_out)
        m.d.comb += self.r_data.eq(Cat(*outs)[:self.width])
        return m
