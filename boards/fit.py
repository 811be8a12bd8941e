"""Fit check before synthesis: does the design's memory fit the device's block RAM?

The census walks the *elaborated* design (no toolchain needed) and lists every memory with its
width, depth and ports, so the estimate always matches what the generator actually built — weight
and lane ROMs, activation buffers (replicated once per extra read port, since a block RAM has one
read port on iCE40 and two on ECP5), accumulators, output buffers, self-test ROMs.

Mapping rules (an upper bound of what yosys' ``memory_libmap`` does):

* a memory read asynchronously (``domain="comb"`` read port) cannot use block RAM: its bits become
  flip-flops / LUT RAM ("logic bits");
* otherwise each copy takes ``min over aspect ratios of ceil(width/w) * ceil(depth/d)`` blocks;
  copies = read ports (iCE40), or ceil(read ports / 2) for a ROM / read ports for a RAM (ECP5).

The check refuses, in one line, when block RAM or flip-flops run out, naming the largest memories,
what the device has, and what to change.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from amaranth.hdl import Fragment, MemoryInstance, Shape
from amaranth.lib.memory import Memory

from sparsyn.sw.errors import SparsynError

from .devices import BRAM_PORTS, Device, bram_blocks_for


@dataclass
class MemoryUse:
    """One memory of the elaborated design and what it costs on the target family."""
    path: str
    width: int
    depth: int
    sync_reads: int
    comb_reads: int
    writes: int
    copies: int = 1
    blocks: int = 0
    logic_bits: int = 0
    #: where it goes: ``"bram"`` (EBR / DP16KD), ``"spram"`` (a SpramStore's SPRAM), ``"logic"`` (async reads)
    kind: str = "bram"
    spram_blocks: int = 0

    @property
    def bits(self) -> int:
        return self.width * self.depth


def memory_census(design, platform=None) -> list[MemoryUse]:
    """Every memory instance in ``design`` (an Elaboratable, elaborated here), with its port counts."""
    top = Fragment.get(design, platform)
    found: list[MemoryUse] = []

    def walk(frag, path):
        # a memory's fragment keeps the amaranth.lib.memory.Memory it was elaborated from (``origins``); its public
        # shape, depth and port lists are what the census reads
        if isinstance(frag, MemoryInstance):
            mem = next((o for o in (frag.origins or ()) if isinstance(o, Memory)), None)
            if mem is None:
                raise SparsynError(f"memory {'.'.join(path) or 'top'} was not built from amaranth.lib.memory.Memory; "
                                   "the fit check cannot read its geometry")
            reads = mem.read_ports
            found.append(MemoryUse(
                path=".".join(path) or "top",
                width=Shape.cast(mem.shape).width, depth=mem.depth,
                sync_reads=sum(1 for p in reads if p.domain != "comb"),
                comb_reads=sum(1 for p in reads if p.domain == "comb"),
                writes=len(mem.write_ports)))
        for i, (sub, name, _) in enumerate(frag.subfragments):
            walk(sub, path + [name if isinstance(name, str) else f"U{i}"])

    walk(top, [])
    return found


def estimate(device: Device, memories: list[MemoryUse]) -> list[MemoryUse]:
    """Fill in copies / blocks / logic bits of each memory for ``device``'s family."""
    ports = BRAM_PORTS[device.family]
    for mem in memories:
        if mem.path.rsplit(".", 1)[-1].startswith("spram_"):
            # a SpramStore's bank (weight store, activation scratch): one SB_SPRAM256KA per 16 K words (the
            # behavioural model elsewhere)
            mem.kind, mem.copies, mem.blocks = "spram", 1, 0
            mem.spram_blocks = -(-mem.depth // 16384)
            continue
        if mem.comb_reads or mem.sync_reads == 0:
            mem.copies, mem.blocks, mem.logic_bits, mem.kind = 1, 0, mem.bits, "logic"
            continue
        per_block = ports if (mem.writes == 0 or ports == 1) else 1
        mem.copies = -(-mem.sync_reads // per_block)
        mem.blocks = mem.copies * bram_blocks_for(device.family, mem.width, mem.depth)
    return memories


def check_fit(device: Device, memories: list[MemoryUse], where: str = "", advice: str = "") -> dict:
    """Estimate block RAM and raise a one-line :class:`SparsynError` if the design cannot fit.

    Returns the estimate (JSON-able): blocks needed / available, logic bits, per-memory rows.
    """
    estimate(device, memories)
    blocks = sum(m.blocks for m in memories)
    logic_bits = sum(m.logic_bits for m in memories)
    sprams = sum(m.spram_blocks for m in memories)
    if sprams > device.spram_blocks:
        raise SparsynError(f"design does not fit: its SPRAM stores (weights, scratch) need {sprams} SPRAMs but {where or device.name} "
                           f"has {device.spram_blocks}; use a smaller model or a smaller --array")
    where = where or device.name
    advice = advice or "use a smaller --array or --layer, or a board with a bigger FPGA (e.g. ulx3s-85f)"
    biggest = sorted(memories, key=lambda m: (m.blocks, m.bits), reverse=True)[:3]
    if blocks > device.bram_blocks:
        parts = ", ".join(f"{m.path} {m.width}x{m.depth}" + (f" x{m.copies} copies" if m.copies > 1 else "")
                          + f" = {m.blocks}" for m in biggest if m.blocks)
        raise SparsynError(f"design does not fit: its memories need {blocks} block RAMs of "
                           f"{device.bram_kbits} kbit ({parts}) but {where} has {device.bram_blocks}; {advice}")
    # asynchronously read RAMs become flip-flops; ROMs read that way (the descriptor table, small constant tables)
    # become LUT logic, which the place-and-route report counts
    rams = [m for m in memories if m.logic_bits and m.writes]
    ram_bits = sum(m.logic_bits for m in rams)
    if ram_bits > device.ffs:
        parts = ", ".join(f"{m.path} {m.width}x{m.depth}" for m in sorted(rams, key=lambda m: -m.logic_bits)[:3])
        raise SparsynError(f"design does not fit: {ram_bits} bits of asynchronously read RAM ({parts}) "
                           f"need flip-flops but {where} has {device.ffs}; {advice}")
    return {"bram_blocks": blocks, "bram_blocks_available": device.bram_blocks,
            "spram_blocks": sprams, "spram_blocks_available": device.spram_blocks,
            "bram_kbits_each": device.bram_kbits, "logic_bits": logic_bits,
            "memory_bits": sum(m.bits * m.copies for m in memories),
            "memories": [{**asdict(m), "bits": m.bits} for m in memories]}
