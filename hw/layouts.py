"""Data layouts shared by the hardware components: activation vectors, lane descriptors, control words.

Packed words are ``amaranth.lib.data`` layouts rather than loose ports, so a memory word, a register
and a port all carry the same named fields.
"""
from __future__ import annotations

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

#: Width of an activation (int8 codes).
ACT_BITS = 8
#: Width of partial sums and accumulators (the numeric contract's 32-bit accumulator).
ACC_BITS = 32
#: Width of the requantization multiplier and shift (see :mod:`sparsyn.sw.requant`).
MULT_BITS = 15
SHIFT_BITS = 6


def bits_for_range(n: int) -> int:
    """Unsigned width that holds ``0 .. n-1`` (at least 1 bit, so no zero-width fields reach Verilog)."""
    return max(1, (max(n, 1) - 1).bit_length())


def act_vector(lanes: int) -> data.ArrayLayout:
    """The L int8 activations broadcast along one array row."""
    return data.ArrayLayout(signed(ACT_BITS), lanes)


def acc_vector(cols: int) -> data.ArrayLayout:
    """One accumulator word: C signed 32-bit partial sums (one per array column / output channel)."""
    return data.ArrayLayout(signed(ACC_BITS), cols)


def lane_descriptor(channels: int, kh: int, kw: int) -> data.StructLayout:
    """Where one lane's activation comes from: input channel and kernel offset (valid=0: constant 0)."""
    return data.StructLayout({
        "valid": unsigned(1),
        "channel": unsigned(bits_for_range(channels)),
        "dy": unsigned(bits_for_range(kh)),
        "dx": unsigned(bits_for_range(kw)),
    })


def row_lanes(descriptor: data.StructLayout, lanes: int) -> data.ArrayLayout:
    """The L lane descriptors of one array row (one lane-memory word)."""
    return data.ArrayLayout(descriptor, lanes)


def weight_word(entry_layout, cols: int) -> data.ArrayLayout:
    """One weight-memory word: the C PE entries of one array row for one pass."""
    return data.ArrayLayout(entry_layout, cols)


def pass_info(sections: int, cols: int) -> data.StructLayout:
    """One pass-table word: which section the pass belongs to, whether it is its first/last pass,
    and how many real output channels (<= C) the section has."""
    return data.StructLayout({
        "section": unsigned(bits_for_range(sections)),
        "first": unsigned(1),
        "last": unsigned(1),
        "channels": unsigned(bits_for_range(cols + 1)),
    })


#: Per-output-channel requantization constants.
RequantConst = data.StructLayout({"mult": unsigned(MULT_BITS), "shift": unsigned(SHIFT_BITS)})

#: Input bundle of the requantization unit.
RequantInput = data.StructLayout({"acc": signed(ACC_BITS), "mult": unsigned(MULT_BITS),
                                  "shift": unsigned(SHIFT_BITS)})


def signed_range(lo: int, hi: int) -> Shape:
    """A signed shape holding ``lo .. hi`` inclusive."""
    return Shape.cast(range(min(lo, -1), max(hi, 0) + 1))
