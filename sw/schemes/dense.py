"""``dense``: plain int8, every weight stored; the baseline every other scheme is measured against.

ROM ``weights``: N*K words of ``weight_bits`` bits, row-major (``w[n, k]`` at address ``n*K + k``).
PE entry: one signed weight; the PE computes ``weight * x``. No slot is skipped.
"""
from __future__ import annotations

import numpy as np
from amaranth.lib import data
from amaranth.hdl import signed

from ..qmodel import QuantLayer
from ..rom import to_signed, to_unsigned
from ..schedule import ArrayConfig, Slot, TileProgram
from .base import PackedLayer, Rom, Scheme, register


@register
class DenseScheme(Scheme):
    name = "dense"
    summary = "int8 per-channel weights, all stored (baseline)"

    def pack(self, layer: QuantLayer) -> PackedLayer:
        bits = layer.weight_bits
        meta = {"n": layer.n, "k": layer.k, "weight_bits": bits}
        return PackedLayer(self.name, meta, {"weights": Rom(bits, to_unsigned(layer.weight, bits))})

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        m = packed.meta
        return to_signed(packed.roms["weights"].words, m["weight_bits"]).reshape(m["n"], m["k"])

    @classmethod
    def stats(cls, packed, layer):
        return {"dense_slots": layer.n * layer.k, "packed_slots": layer.n * layer.k,
                "rom_bits": packed.rom_bits, "index_bits": 0}

    @classmethod
    def entry_layout(cls, packed):
        return data.StructLayout({"weight": signed(packed.meta["weight_bits"])})

    @classmethod
    def entry_coefficients(cls, packed, entry):
        return (int(to_signed([entry], packed.meta["weight_bits"])[0]),)

    @classmethod
    def tile_program(cls, packed, layer, array: ArrayConfig) -> TileProgram:
        bits = packed.meta["weight_bits"]
        w = cls.decode(packed)
        c = array.cols
        sections = []
        for s in range(-(-layer.n // c)):
            block = np.zeros((c, layer.k), dtype=np.int64)
            rows = w[s * c:(s + 1) * c]
            block[:len(rows)] = rows
            words = np.array(to_unsigned(block, bits), dtype=np.int64).reshape(c, layer.k)
            sections.append([Slot((k,), tuple(int(v) for v in words[:, k])) for k in range(layer.k)])
        return TileProgram(ArrayConfig(array.rows, array.cols, 1), layer.n, layer.k, bits, sections)
