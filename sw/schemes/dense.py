"""``dense``: plain int8, every weight stored; the baseline every other scheme is measured against.

Schedule: per section of C output channels one array-row slot per input k (lane = k), so every
weight of the N x K matrix is a PE entry; ROMs: the shared array's format (:mod:`..array_format`).
PE entry: one signed weight; the PE computes ``weight * x``. No slot is skipped.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import signed
from amaranth.lib import data

from ..qmodel import QuantLayer
from ..rom import to_signed, to_unsigned
from ..schedule import ArrayConfig, Slot, TileProgram
from .base import PackedLayer, Scheme


class DenseScheme(Scheme):
    name = "dense"
    summary = "int8 per-channel weights, all stored (baseline)"
    hardware = "sparsyn.hw.schemes.dense"

    def schedule(self, layer: QuantLayer):
        bits = layer.weight_bits
        c = self.array.cols
        sections = []
        for s in range(-(-layer.n // c)):
            block = np.zeros((c, layer.k), dtype=np.int64)
            rows = layer.weight[s * c:(s + 1) * c]
            block[:len(rows)] = rows
            words = np.array(to_unsigned(block, bits), dtype=np.int64).reshape(c, layer.k)
            sections.append([Slot((k,), tuple(int(v) for v in words[:, k])) for k in range(layer.k)])
        program = TileProgram(ArrayConfig(self.array.rows, c, 1), layer.n, layer.k, bits, sections)
        stats = {"packed_slots": layer.n * layer.k, "slots": program.slot_count}
        return program, {"weight_bits": bits, "stats": stats}

    @classmethod
    def entry_layout(cls, packed):
        return data.StructLayout({"weight": signed(packed.meta["weight_bits"])})

    @classmethod
    def entry_coefficients(cls, packed, entry):
        return (int(to_signed([entry], packed.meta["weight_bits"])[0]),)

    @classmethod
    def coefficients(cls, packed: PackedLayer, words) -> np.ndarray:
        bits = packed.meta["weight_bits"]
        return to_signed(np.asarray(words, dtype=np.int64) & ((1 << bits) - 1), bits).reshape(-1, 1)
