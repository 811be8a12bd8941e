"""The permuted-diagonal engine in Amaranth's simulator: bit-exact against the golden model and cycle-exact per
image (the cycle model counts nonzero inputs) on random p / PEs / multipliers / ragged shapes / 1x1 convs /
densities 0..1, back-to-back images, a reset in the middle of a run, the whole default model as one
ModelEngine, and the engine's refusals."""
import numpy as np
import pytest
import torch
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from sparsyn.hw.amaranth_sim import simulate_engine
from sparsyn.hw.engines import layer_engine, plan_layer
from sparsyn.hw.permdiag_plan import permdiag_cycles
from sparsyn.hw.plan import EngineLimits
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_layer
from sparsyn.sw.schemes.permdiag import PermDiagScheme
from sparsyn.sw.testing import fit_requant, random_input, random_permdiag_layer as permdiag_layer


def sparse_inputs(rng, layer, densities):
    out = []
    for d in densities:
        x = random_input(rng, layer)[0].numpy().ravel()
        x[rng.random(x.size) >= d] = 0
        out.append(x)
    return out


def golden(layer, x):
    return run_layer(layer, torch.as_tensor(x).reshape(1, *layer.in_shape))[0].numpy().ravel()


CASES = {   # n, k, p, pes, mults, kind, (h, w)
    "fc_p4_auto": (12, 16, 4, 0, 1, "linear", (1, 1)),
    "fc_p3_ragged": (10, 13, 3, 2, 1, "linear", (1, 1)),
    "fc_p5_mults2_idle": (11, 17, 5, 1, 2, "linear", (1, 1)),
    "fc_p2_many_slots": (9, 8, 2, 2, 1, "linear", (1, 1)),
    "conv1x1_p3": (7, 6, 3, 2, 2, "conv", (3, 2)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_engine_exact_at_every_density(name):
    n, k, p, pes, mults, kind, hw = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    layer, _ = permdiag_layer(rng, n, k, p, kind, hw)
    layer = fit_requant(rng, layer)
    packed = PermDiagScheme(p=p, pes=pes, mults=mults, convs=kind == "conv").pack(layer)
    engine = layer_engine(layer, packed)
    images = sparse_inputs(rng, layer, (0.0, 0.1, 0.5, 1.0, 0.3))
    outs, stats = simulate_engine(engine, images)
    seen = set()
    for x, out, st in zip(images, outs, stats):
        exp = golden(layer, x)
        assert np.array_equal(out, exp), (name, np.flatnonzero(out != exp)[:5], out, exp)
        z = int(np.count_nonzero(x))
        want = permdiag_cycles(z, packed.meta["slots"], n * layer.pixels)
        assert st["cycles"] == st["measured"] == engine.plan.cycles(x) == want, (name, z, st, want)
        seen |= set(exp.tolist())
    assert len(seen) > 3
    # cycles scale with the nonzero inputs: T per nonzero, nothing for a zero
    assert stats[3]["cycles"] - stats[0]["cycles"] == packed.meta["slots"] * images[3].size


def test_reset_in_the_middle_of_a_run_leaves_no_partial_sums():
    """Reset while accumulating: the post-reset sweep clears every accumulator (``act_in`` waits for it), so
    the next image is exact again; without the sweep it would start from the stale partial sums."""
    rng = np.random.default_rng(7)
    layer, _ = permdiag_layer(rng, 8, 12, 4)
    layer = fit_requant(rng, layer)
    packed = PermDiagScheme(p=4, pes=1).pack(layer)
    engine = layer_engine(layer, packed)
    x0, x1 = sparse_inputs(rng, layer, (1.0, 0.7))
    got = {}

    async def bench(ctx):
        async def send(x):
            ctx.set(engine.act_in.valid, 1)
            for v in x:
                ctx.set(engine.act_in.payload, int(v))
                while True:
                    _, _, ready = await ctx.tick().sample(engine.act_in.ready)
                    if ready:
                        break
            ctx.set(engine.act_in.valid, 0)
        await send(x0)
        ctx.set(engine.start, 1)
        await ctx.tick()
        ctx.set(engine.start, 0)
        await ctx.tick().repeat(6)                 # mid-COMPUTE: some rows hold partial sums
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        waited = 0
        while not ctx.get(engine.act_in.ready):    # the sweep: one cycle per accumulator word
            await ctx.tick()
            waited += 1
        got["sweep"] = waited
        await send(x1)
        ctx.set(engine.start, 1)
        await ctx.tick()
        ctx.set(engine.start, 0)
        while not ctx.get(engine.done):
            await ctx.tick()
        ctx.set(engine.act_out.ready, 1)
        out = []
        while len(out) < layer.n:
            _, _, valid, payload = await ctx.tick().sample(engine.act_out.valid, engine.act_out.payload)
            if valid:
                out.append(int(payload))
        got["out"] = out

    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.engine = engine
    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_testbench(bench)
    sim.run()
    assert got["sweep"] >= engine.plan.acc_depth - 1
    assert np.array_equal(np.array(got["out"]), golden(layer, x1))


def test_default_model_as_one_model_engine():
    """The digits CNN with its FC layer compressed by permdiag: dense convs on the shared array, the FC on the
    permuted-diagonal engine, one ModelEngine: logits bit-exact, cycles = the per-image model (the FC's input
    after ReLU and max-pool has zeros, which cost nothing)."""
    from sparsyn.hw.model_engine import ModelEngine, plan_model
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input, run_golden
    from sparsyn.sw.model_zoo import default_model
    data = digits()
    scheme = PermDiagScheme(array="4x4", p=4, epochs=2)
    scheme.progress = False
    model, packed, _ = compress_model(default_model(progress=False), scheme, data, progress=False,
                                      log=lambda *a, **k: None)
    mplan = plan_model(model, packed)
    assert [type(s.engine).__name__ for s in mplan.segments] == ["LayerPlan", "LayerPlan", "PermDiagPlan"]
    engine = ModelEngine(mplan)
    x = quantize_input(data.test_x[:2], model.input_scale)
    outs, stats = simulate_engine(engine, [x[i].numpy().ravel() for i in range(2)])
    gold = run_golden(model, x)
    fc_in = gold[-2].reshape(2, -1).numpy()
    assert (fc_in == 0).any()
    for i in range(2):
        assert np.array_equal(outs[i], gold[-1][i].numpy().ravel())
        assert stats[i]["cycles"] == stats[i]["measured"] == mplan.cycles(x[i].numpy().ravel())
    assert mplan.cycles(x[0].numpy().ravel()) < mplan.cycle_model["total"]


def test_engine_elaborates_more_than_once():
    """A board build elaborates the design twice (DSP census, then the build): each elaboration has its own
    memories, initialised from the ROM files."""
    from amaranth.hdl import Fragment
    rng = np.random.default_rng(9)
    layer, _ = permdiag_layer(rng, 8, 12, 4)
    packed = PermDiagScheme(p=4).pack(layer)
    engine = layer_engine(layer, packed)
    first = Fragment.get(engine, None) and dict(engine.rom_memories)
    Fragment.get(engine, None)
    assert set(first) == set(engine.rom_memories) == set(packed.roms)
    assert all(first[name] is not engine.rom_memories[name] for name in first)
    assert [int(v) for v in engine.rom_memories["weights"].init] == packed.roms["weights"].words


def test_engine_refusals():
    """What the engine cannot hold is refused before anything is built, naming the limit and the fix."""
    rng = np.random.default_rng(8)
    layer, _ = permdiag_layer(rng, 16, 64, 4)
    packed = PermDiagScheme(p=4, pes=1).pack(layer)
    cases = [
        (EngineLimits(act_elements=63), r"nonzero buffer: needs 64 input elements .*limit 63 \(1 over\); use a "
                                        r"smaller input or raise EngineLimits.act_elements"),
        (EngineLimits(acc_words=15), r"accumulators: needs 16 words per multiplier"),
        (EngineLimits(weight_depth=255), r"weight memory: needs 256 words"),
        (EngineLimits(out_elements=15), r"output buffer: needs 16 elements"),
    ]
    for limits, match in cases:
        with pytest.raises(SparsynError, match=match):
            plan_layer(layer, packed, limits=limits)
    other, _ = permdiag_layer(rng, 16, 60, 4)
    with pytest.raises(SparsynError, match="packed for another layer shape"):
        plan_layer(other, packed)
    big = layer.__class__(**{**layer.__dict__, "bias": layer.bias.copy()})
    big.bias[0] = 2**31 - 10
    with pytest.raises(SparsynError, match="exceeds the 32-bit accumulator"):
        plan_layer(big, packed)
    conv3 = layer.__class__(**{**layer.__dict__, "kind": "conv", "kernel": (3, 3)})
    with pytest.raises(SparsynError, match="3x3 conv; the permdiag engine runs FC and 1x1 layers only"):
        plan_layer(conv3, packed)


def test_pointwise_conv_model_with_convs_option():
    """``convs=1``: a 1x1 conv (8 -> 6 channels on 8x8) is compressed with permdiag next to the FC layer and runs
    on the permuted-diagonal engine inside a ModelEngine (the 3x3 conv stays dense): logits bit-exact, cycles =
    the per-image model; without ``convs`` only the FC layer is permuted-diagonal."""
    from torch import nn

    from sparsyn.hw.model_engine import ModelEngine, plan_model
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input, run_golden
    from sparsyn.sw.perm_diag import structure_offsets
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1), nn.ReLU(), nn.Flatten(),
                           nn.Linear(6 * 64, 10))
    data = digits()
    quiet = {"progress": False, "log": lambda *a, **k: None}
    model, packed, _ = compress_model(module, PermDiagScheme(p=2, convs=1, epochs=1), data, **quiet)
    assert [l.scheme for l in model.compute_layers] == ["dense", "permdiag", "permdiag"]
    pw = model.compute_layers[1]
    assert pw.kernel == (1, 1) and structure_offsets(pw.weight, 2)[1] is None
    mplan = plan_model(model, packed)
    engine = ModelEngine(mplan)
    x = quantize_input(data.test_x[:1], model.input_scale)
    outs, stats = simulate_engine(engine, [x[0].numpy().ravel()])
    assert np.array_equal(outs[0], run_golden(model, x)[-1][0].numpy().ravel())
    assert stats[0]["cycles"] == stats[0]["measured"] == mplan.cycles(x[0].numpy().ravel())
    model2, _, _ = compress_model(module, PermDiagScheme(p=2, epochs=0), data, **quiet)
    assert [l.scheme for l in model2.compute_layers] == ["dense", "dense", "permdiag"]
