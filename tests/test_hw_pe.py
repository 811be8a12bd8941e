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
    array = ArrayConfig(rows, cols)
    packed = pack_layer(layer, array=array)
    program = get_scheme("dense")(array=array).schedule(layer)[0]
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


def _pipelined_case(datapath, rng):
    """(packed layer, PE entries incl. the weight extremes) of one PE datapath: dense, tight (mux), ternary."""
    from sparsyn.sw.packing import encode_fields, entry_layout
    from sparsyn.sw.schemes import PackedLayer
    from sparsyn.sw.schemes.ternary import TernaryScheme
    if datapath == "dense":
        packed = pack_layer(random_quant_layer(rng, "linear", 6, 1, 1, 2), array=ArrayConfig(2, 2))
        weights = [-128, 127, -1, 1] + rng.integers(-128, 128, 28).tolist()
        return packed, [w & 0xFF for w in weights]
    if datapath == "tight":
        layer = random_quant_layer(rng, "linear", 24, 1, 1, 8, density=0.3)
        packed = pack_layer(layer, "tight", array=ArrayConfig(4, 4), alpha=4, anneal_steps=20)
        weights = np.concatenate([[-128, 127, -128, 127], rng.integers(-128, 128, 28)])
        sel = np.concatenate([[0, 1, 2, 3], rng.integers(0, 4, 28)])
        return packed, [int(e) for e in encode_fields(entry_layout(4, False), weight=weights, sel=sel)]
    tile = 8
    packed = PackedLayer("ternary", {"tile": tile}, {})
    trits = [[1] * tile, [-1] * tile] + [rng.integers(-1, 2, tile) for _ in range(30)]
    return packed, [TernaryScheme.entry_word(t) for t in trits]


@pytest.mark.parametrize("datapath", ["dense", "tight", "ternary"])
def test_pipelined_pe_registers_the_product(datapath):
    """The engine's PE (``pipelined=True``, ``product_latency`` d = 3): ``psum_out`` leaves d + 1 cycles after its
    ``x_in`` and equals the ``psum_in`` presented d cycles after that ``x_in`` (where the PE above delivers it, see
    ``array_latency``) plus the product of the entry held while that ``x_in`` was present; ``x_out`` is
    ``x_in`` one cycle later; the entry is held while ``load`` is low although ``entry_in`` changes
    every cycle. Random loads, entries, activations (incl. -128/127) and partial sums, every cycle."""
    rng = np.random.default_rng(["dense", "tight", "ternary"].index(datapath) + 40)
    packed, entries = _pipelined_case(datapath, rng)
    scheme = get_scheme(packed.scheme)
    pe = ProcessingElement(make_product(packed), pipelined=True)
    lanes, width = pe.lanes, len(pe.entry_in.as_value())
    cycles = 120
    loads = (rng.random(cycles) < 0.3).astype(int)
    loads[0] = 1
    entry_in = [entries[i] if i < len(entries) else int(rng.choice(entries)) for i in range(cycles)]
    xs = rng.integers(-128, 128, size=(cycles, lanes))
    xs[:4] = [[-128] * lanes, [127] * lanes, [-128] * lanes, [127] * lanes]
    psums = rng.integers(-2**30, 2**30, size=cycles)
    # the reference: entry register -> product in the cycle of its x_in -> psum_out d + 1 cycles later
    d = ProcessingElement.product_latency
    held, products = 0, []
    for t in range(cycles):
        products.append(int(np.dot(scheme.entry_coefficients(packed, held), xs[t])))
        if loads[t]:
            held = entry_in[t]
    assert len(set(products)) > cycles // 2
    got_psum, got_x = {}, {}

    async def bench(ctx):
        for t in range(cycles):
            ctx.set(pe.load, int(loads[t]))
            ctx.set(pe.entry_in.as_value(), int(entry_in[t]) & ((1 << width) - 1))
            ctx.set(pe.x_in, [int(v) for v in xs[t]])
            ctx.set(pe.psum_in, int(psums[t]))
            await ctx.tick()
            got_psum[t + 1] = ctx.get(pe.psum_out)          # the value held in cycle t + 1
            got_x[t + 1] = [int(v) for v in ctx.get(pe.x_out)]

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for u in range(d + 1, cycles + 1):
        want = int(psums[u - 1]) + products[u - 1 - d]
        assert got_psum[u] == want, (f"{datapath}: cycle {u}: psum_out {got_psum[u]}, expected psum_in of cycle "
                                     f"{u - 1} ({int(psums[u - 1])}) + product of cycle {u - 1 - d} "
                                     f"({products[u - 1 - d]})")
        assert got_x[u] == [int(v) for v in xs[u - 1]], (datapath, u)
    # the same run read as an unpipelined PE would be wrong: the test tells the two apart
    assert any(got_psum[u] != int(psums[u - 1]) + products[u - 1] for u in range(d + 1, cycles + 1))
