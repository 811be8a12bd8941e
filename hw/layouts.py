"""Data layouts shared by the hardware components: activation vectors, lane descriptors, control words.

Packed words are ``amaranth.lib.data`` layouts rather than loose ports, so a memory word, a register
and a port all carry the same named fields.
"""
from __future__ import annotations

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

# The word layouts of the memories are part of the ROM format, defined once in the software layer.
from sparsyn.sw.array_format import (ACC_BITS, SHIFT_BITS, RequantConst, acc_vector, bits_for_range,  # noqa: F401
                                     lane_descriptor, pass_info, row_lanes, weight_word)
from sparsyn.sw.requant import MULT_BITS  # noqa: F401

#: Width of an activation (int8 codes).
ACT_BITS = 8


def act_vector(lanes: int) -> data.ArrayLayout:
    """The L int8 activations broadcast along one array row."""
    return data.ArrayLayout(signed(ACT_BITS), lanes)


#: Input bundle of the requantization unit.
RequantInput = data.StructLayout({"acc": signed(ACC_BITS), "mult": unsigned(MULT_BITS),
                                  "shift": unsigned(SHIFT_BITS)})


def signed_range(lo: int, hi: int) -> Shape:
    """A signed shape holding ``lo .. hi`` inclusive."""
    return Shape.cast(range(min(lo, -1), max(hi, 0) + 1))
