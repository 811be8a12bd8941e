"""The requant unit against sparsyn.sw.requant.requantize_int, bit for bit."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from sparsyn.hw.requant import REQUANT_LATENCY, RequantUnit
from sparsyn.sw.requant import MAX_SHIFT, MULT_BITS, requantize_int


def cases(rng, count=300):
    lo, hi = -(2**31), 2**31 - 1
    out = [(lo, (1 << MULT_BITS) - 1, 1), (hi, (1 << MULT_BITS) - 1, 1), (lo, (1 << MULT_BITS) - 1, MAX_SHIFT),
           (hi, (1 << MULT_BITS) - 1, MAX_SHIFT), (-5, 1, 1), (5, 1, 1), (-3, 3, 2), (0, 0, 7), (-1, 1, 1),
           (1, 1, 1), (-256, 1, 1), (-255, 1, 1), (254, 1, 1), (255, 1, 1), (hi, 0, 20), (lo, 1, 31)]
    for _ in range(count):
        shift = int(rng.integers(1, MAX_SHIFT + 1))
        mult = int(rng.integers(0, 1 << MULT_BITS))
        # accumulators that land near the int8 range after scaling, plus arbitrary ones
        if rng.random() < 0.7:
            target = rng.integers(-300, 300)
            acc = int(np.clip((int(target) << shift) // max(mult, 1), lo, hi))
        else:
            acc = int(rng.integers(lo, hi + 1))
        out.append((acc, mult, shift))
    return out


@pytest.mark.parametrize("relu", [False, True])
def test_requant_unit_matches_contract(relu):
    rng = np.random.default_rng(int(relu))
    inputs = cases(rng)
    unit = RequantUnit(relu)
    got = []

    async def bench(ctx):
        for t in range(len(inputs) + REQUANT_LATENCY + 1):
            if t < len(inputs):
                acc, mult, shift = inputs[t]
                ctx.set(unit.i.payload, {"acc": acc, "mult": mult, "shift": shift})
                ctx.set(unit.i.valid, 1)
            else:
                ctx.set(unit.i.valid, 0)
            _, _, valid, y = await ctx.tick().sample(unit.o.valid, unit.o.payload)
            if valid:
                got.append((t, y))

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [requantize_int(a, m, s, relu) for a, m, s in inputs]
    assert len(set(expected)) > 30            # the cases really spread over the output range
    assert [t for t, _ in got] == list(range(REQUANT_LATENCY, REQUANT_LATENCY + len(inputs)))
    for (acc, mult, shift), exp, (_, y) in zip(inputs, expected, got):
        assert y == exp, f"acc={acc} mult={mult} shift={shift} relu={relu}: expected {exp}, actual {y}"
