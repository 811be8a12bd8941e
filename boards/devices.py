"""The FPGA devices sparsyn targets: their resources, in one table, and how memories map onto block RAM.

Sources
-------
* iCE40UP5K: Lattice "iCE40 UltraPlus Family Data Sheet" (FPGA-DS-02008), Table 1.1: 5280 LUT4/FF
  logic cells, 30 sysMEM EBR of 4 kbit, 4 SPRAM of 256 kbit, 8 DSP (SB_MAC16), 1 PLL.
* ECP5 (LFE5U-12F/25F/45F/85F): Lattice "ECP5 and ECP5-5G Family Data Sheet" (FPGA-DS-02012),
  Table 1.1: sysMEM EBR of 18 kbit (32/56/108/208 blocks) and 18x18 multipliers (28/28/72/156).
  LUT counts are the ``TRELLIS_COMB`` / ``TRELLIS_FF`` "available" figures nextpnr-ecp5 0.11 reports
  (``--report``) for these parts — the datasheet's rounded "12K/24K/44K/84K LUTs"; note nextpnr
  models the 12F on the 25F die, so it reports the 25F's cells for it (we use the datasheet's 12k).

The build report always prints the *placer's* "available" counts; this table is only for the fit
check that runs before synthesis.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsyn.sw.errors import SparsynError


@dataclass(frozen=True)
class Device:
    """Resources of one FPGA part.

    Attributes
    ----------
    name : part name as amaranth-boards spells it (``"iCE40UP5K"``, ``"LFE5U-85F"``).
    family : ``"ice40"`` or ``"ecp5"`` (selects yosys ``synth_<family>`` and nextpnr-<family>).
    luts : LUT4s (iCE40: logic cells, each a LUT4 + FF).
    ffs : flip-flops.
    bram_blocks, bram_kbits : block RAMs and the kbit in each (iCE40 EBR 4 kbit, ECP5 DP16KD 18 kbit).
    spram_blocks, spram_kbits : single-port RAMs (iCE40UP only).
    dsps : hard multipliers (iCE40 SB_MAC16 16x16, ECP5 MULT18X18D 18x18).
    dsp_width : operand width one hard multiplier takes.
    """
    name: str
    family: str
    luts: int
    ffs: int
    bram_blocks: int
    bram_kbits: int
    spram_blocks: int
    spram_kbits: int
    dsps: int
    dsp_width: int

    @property
    def bram_bits(self) -> int:
        return self.bram_blocks * self.bram_kbits * 1024

    @property
    def spram_bits(self) -> int:
        return self.spram_blocks * self.spram_kbits * 1024


DEVICES: dict[str, Device] = {d.name: d for d in [
    Device("iCE40UP5K", "ice40", luts=5280, ffs=5280, bram_blocks=30, bram_kbits=4,
           spram_blocks=4, spram_kbits=256, dsps=8, dsp_width=16),
    Device("LFE5U-12F", "ecp5", luts=12288, ffs=12288, bram_blocks=32, bram_kbits=18,
           spram_blocks=0, spram_kbits=0, dsps=28, dsp_width=18),
    Device("LFE5U-25F", "ecp5", luts=24288, ffs=24288, bram_blocks=56, bram_kbits=18,
           spram_blocks=0, spram_kbits=0, dsps=28, dsp_width=18),
    Device("LFE5U-45F", "ecp5", luts=43848, ffs=43848, bram_blocks=108, bram_kbits=18,
           spram_blocks=0, spram_kbits=0, dsps=72, dsp_width=18),
    Device("LFE5U-85F", "ecp5", luts=83640, ffs=83640, bram_blocks=208, bram_kbits=18,
           spram_blocks=0, spram_kbits=0, dsps=156, dsp_width=18),
]}

#: Block-RAM aspect ratios (width, depth) a memory may be split into, per family.
#: iCE40 SB_RAM40_4K: 256x16, 512x8, 1024x4, 2048x2. ECP5 DP16KD (pseudo dual port): up to 512x36.
BRAM_SHAPES = {
    "ice40": [(16, 256), (8, 512), (4, 1024), (2, 2048)],
    "ecp5": [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)],
}

#: Ports of one block RAM: iCE40 EBR is 1 read + 1 write; ECP5 DP16KD is true dual port.
BRAM_PORTS = {"ice40": 1, "ecp5": 2}


def get_device(name: str) -> Device:
    if name not in DEVICES:
        raise SparsynError(f"unknown FPGA device {name!r}; known devices: {', '.join(DEVICES)}")
    return DEVICES[name]


def bram_blocks_for(family: str, width: int, depth: int) -> int:
    """Block RAMs one copy of a ``width`` x ``depth`` memory occupies (best aspect ratio)."""
    if width <= 0 or depth <= 0:
        return 0
    return min(-(-width // w) * -(-depth // d) for w, d in BRAM_SHAPES[family])


def dsp_blocks_for(device: Device, a_width: int, b_width: int) -> int:
    """Hard multipliers an ``a_width`` x ``b_width`` multiplication takes (yosys mul2dsp tiling)."""
    w = device.dsp_width
    return -(-a_width // w) * -(-b_width // w)
