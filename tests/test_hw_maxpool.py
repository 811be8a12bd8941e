"""MaxPoolUnit against the golden model (kernel/stride/padding, back-to-back images, back-pressure)."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from sparsyn.hw.maxpool import MaxPoolUnit, check_maxpool, maxpool_cycles
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_layer
from sparsyn.sw.qmodel import MaxPoolLayer
from sparsyn.sw.testing import random_input, random_maxpool_layer


def run_pool(layer, images, ready_pattern=(1,)):
    check_maxpool(layer)
    unit = MaxPoolUnit(layer)
    n_out = int(np.prod(layer.out_shape))
    outs, spans = [], []

    async def bench(ctx):
        for img in images:
            ctx.set(unit.i.valid, 1)
            for v in np.asarray(img).ravel():
                ctx.set(unit.i.payload, int(v))
                while True:
                    _, _, ready = await ctx.tick().sample(unit.i.ready)
                    if ready:
                        break
            ctx.set(unit.i.valid, 0)
            got, t = [], 0
            while len(got) < n_out:
                rdy = ready_pattern[t % len(ready_pattern)]
                ctx.set(unit.o.ready, rdy)
                _, _, valid, y = await ctx.tick().sample(unit.o.valid, unit.o.payload)
                t += 1
                if valid and rdy:
                    got.append(y)
                assert t < 100 * (n_out + 10)
            ctx.set(unit.o.ready, 0)
            outs.append(np.array(got, dtype=np.int64).reshape(layer.out_shape))
            spans.append(t)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outs, spans


@pytest.mark.parametrize("c,h,w,k,s,p", [(3, 6, 6, 2, 2, 0), (2, 7, 5, 3, 2, 1), (1, 5, 5, 3, 1, 1),
                                         (4, 4, 4, 2, None, 0), (2, 5, 5, 1, 1, 0)])
def test_maxpool_matches_golden(c, h, w, k, s, p):
    rng = np.random.default_rng(c * h + k)
    layer = random_maxpool_layer(c, h, w, k, s, p)
    images = [random_input(rng, layer)[0] for _ in range(2)]
    outs, spans = run_pool(layer, images)
    for x, y in zip(images, outs):
        exp = run_layer(layer, x[None])[0].numpy()
        assert np.array_equal(y, exp), np.argwhere(y != exp)[0]
    # measured cycles from the last input to the last output equal the documented count
    assert spans == [maxpool_cycles(layer)] * 2


def test_maxpool_back_pressure():
    rng = np.random.default_rng(5)
    layer = random_maxpool_layer(2, 6, 6, 2)
    x = random_input(rng, layer)[0]
    outs, spans = run_pool(layer, [x], ready_pattern=(1, 0, 0, 1, 0))
    assert np.array_equal(outs[0], run_layer(layer, x[None])[0].numpy())
    assert spans[0] > maxpool_cycles(layer)


def test_maxpool_rejects_oversized_input():
    """The check runs before a unit is constructed (a MaxPoolUnit itself cannot fail)."""
    layer = MaxPoolLayer("big", (64, 64, 64), (64, 32, 32), 2, 2, 0)
    with pytest.raises(SparsynError, match="big.*exceeds the buffer"):
        check_maxpool(layer)
    with pytest.raises(SparsynError, match="padding 2 exceeds half the kernel 3"):
        check_maxpool(MaxPoolLayer("pad", (1, 6, 6), (1, 8, 8), 3, 1, 2))
    check_maxpool(random_maxpool_layer(3, 6, 6, 2))       # a layer that fits passes silently
