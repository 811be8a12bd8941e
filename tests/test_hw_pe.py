"""PE and systolic array in Amaranth's simulator: random values incl. int8 extremes, tiled matrices."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from sparsyn.hw.amaranth_sim import check_pe_cases
from sparsyn.hw.array import SystolicArray, array_latency
from sparsyn.hw.pe import ProcessingElement
from sparsyn.hw.schemes.base import make_product
from sparsyn.sw.rom import to_signed
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.testing import pack_layer, random_quant_layer


def dense_packed(rng, n=2, k=3):
    return pack_layer(random_quant_layer(rng, "linear", k, 1, 1, n))


def test_pe_multiply_accumulate_with_extremes():
    rng = np.random.default_rng(0)
    pe = ProcessingElement(make_product(dense_packed(rng)))
    weights = [-128, 127, 0, -1] + rng.integers(-128, 128, 12).tolist()
    xs = [-128, -128, 127, 127] + rng.integers(-128, 128, 12).tolist()
    psums = [-(2**31) + 20000, 2**31 - 20000, 0, -7] + rng.integers(-2**30, 2**30, 12).tolist()
    cases = [(w & 0xFF, [x], ps, w * x) for w, x, ps in zip(weights, xs, psums)]
    assert check_pe_cases(pe, cases) == len(weights)


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (3, 2), (4, 4)])
def test_array_latency_and_throughput(rows, cols):
    """Back-to-back input vectors: every output equals the column sums of its own vector."""
    rng = np.random.default_rng(rows * 10 + cols)
    packed = dense_packed(rng)
    arr = SystolicArray(ArrayConfig(rows, cols), packed)
    w = rng.integers(-128, 128, size=(rows, cols))
    w[0, 0], w[-1, -1] = -128, 127
    xs = rng.integers(-128, 128, size=(12, rows))
    xs[0, :] = -128
    expected = [[int(v) for v in x @ w] for x in xs]
    got = []

    async def bench(ctx):
        for r in range(rows):
            ctx.set(arr.entries, [{"weight": int(v)} for v in w[r]])
            ctx.set(arr.load, 1 << r)
            await ctx.tick()
        ctx.set(arr.load, 0)
        for t in range(len(xs) + arr.latency + 2):
            if t < len(xs):
                ctx.set(arr.x, [[int(v)] for v in xs[t]])
                ctx.set(arr.x_valid, 1)
            else:
                ctx.set(arr.x_valid, 0)
            _, _, valid, y = await ctx.tick().sample(arr.y_valid, arr.y)
            if valid:
                got.append((t, [y[c] for c in range(cols)]))

    sim = Simulator(arr)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert arr.latency == array_latency(rows, cols) == rows + cols - 1
    assert [y for _, y in got] == expected
    # first result is sampled `latency` edges after its input was presented, then one per cycle
    assert [t for t, _ in got] == list(range(arr.latency, arr.latency + len(xs)))


@pytest.mark.parametrize("n,k,rows,cols", [(5, 7, 2, 3), (3, 10, 4, 4), (9, 2, 3, 2), (1, 5, 2, 2)])
def test_array_computes_tiled_matrix_product(n, k, rows, cols):
    """A random N x K matrix (N, K not multiples of C, R) tiled by the dense scheme's TileProgram."""
    rng = np.random.default_rng(n * 100 + k)
    layer = random_quant_layer(rng, "linear", k, 1, 1, n)
    packed = pack_layer(layer)
    program = get_scheme("dense").tile_program(packed, layer, ArrayConfig(rows, cols))
    arr = SystolicArray(program.array, packed)
    m = 6
    xs = rng.integers(-128, 128, size=(k, m))
    acc = np.zeros((len(program.sections) * cols, m), dtype=np.int64)

    async def bench(ctx):
        for section, slots in program.passes:
            for r, slot in enumerate(slots):
                ctx.set(arr.entries, [{"weight": int(to_signed([e], 8)[0])} for e in slot.entries])
                ctx.set(arr.load, 1 << r)
                await ctx.tick()
            ctx.set(arr.load, 0)
            outs = []
            for t in range(m + arr.latency + 1):
                if t < m:
                    ctx.set(arr.x, [[int(xs[s.lane_k[0], t]) if s.lane_k[0] >= 0 else 0] for s in slots])
                ctx.set(arr.x_valid, int(t < m))
                _, _, valid, y = await ctx.tick().sample(arr.y_valid, arr.y)
                if valid:
                    outs.append([y[c] for c in range(cols)])
            assert len(outs) == m
            acc[section * cols:(section + 1) * cols] += np.array(outs, dtype=np.int64).T

    sim = Simulator(arr)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = layer.weight @ xs
    bad = np.argwhere(acc[:n] != expected)
    assert not len(bad), f"output channel {bad[0][0]}, vector {bad[0][1]}: expected " \
                         f"{expected[tuple(bad[0])]}, actual {acc[:n][tuple(bad[0])]}"
