"""Constant multiplies as shifted adds (hw/const_mul.py): exact for every constant and operand, and no ``$mul``
cell left in the address arithmetic (yosys would spend a DSP block on each, see the module docstring)."""
import re

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, unsigned
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsyn.hw.const_mul import csd_digits, times_constant


@given(st.integers(0, 1 << 20))
def test_csd_digits_sum_to_k_with_no_adjacent_digits(k):
    digits = csd_digits(k)
    assert sum(d << s for d, s in digits) == k
    assert all(d in (1, -1) for d, _ in digits)
    shifts = [s for _, s in digits]
    assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:]))


def test_csd_refuses_negative():
    with pytest.raises(ValueError, match=">= 0"):
        csd_digits(-3)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 5000), st.lists(st.integers(0, 255), min_size=1, max_size=8))
def test_times_constant_is_exact(k, values):
    x = Signal(unsigned(8))
    y = Signal(unsigned(8 + 13))
    m = Module()
    m.d.comb += y.eq(times_constant(x, k))

    async def bench(ctx):
        for v in values:
            ctx.set(x, v)
            assert ctx.get(y) == v * k, (v, k)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def _mul_cells(design, name, ports=None):
    return re.findall(r"cell \$mul ", rtlil.convert(design, name=name, ports=ports))


def test_address_arithmetic_has_no_multiplier():
    """LaneAddress (one layer and shared by layers), the max-pool unit and the requant sequencer address by constants
    only; the PEs still multiply (the check sees a real multiplier)."""
    import numpy as np

    from sparsyn.hw.im2col import LaneAddress
    from sparsyn.sw.testing import random_quant_layer
    rng = np.random.default_rng(1)
    a = random_quant_layer(rng, "conv", 3, 25, 5, 4, 3, 1, 1)
    b = random_quant_layer(rng, "conv", 5, 13, 7, 4, 3, 2, 1)
    assert _mul_cells(LaneAddress(a), "one") == []
    assert _mul_cells(LaneAddress([a, b]), "shared") == []
    x, w, p = Signal(8), Signal(8), Signal(16)
    m = Module()
    m.d.comb += p.eq(x * w)
    assert len(_mul_cells(m, "mul", ports=[x, w, p])) == 1
