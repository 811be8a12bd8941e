"""ModelEngine: a whole small network in Amaranth's simulator vs the golden model, exact cycle model."""
import numpy as np
import pytest

from sparsyn.hw.amaranth_sim import simulate_engine
from sparsyn.hw.model_engine import ModelEngine, plan_model
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import first_mismatch, run_golden
from sparsyn.sw.qmodel import FlattenLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import pack_layer, random_input, random_maxpool_layer, random_quant_layer


def tiny_model(rng, second_pool=False, array=ArrayConfig(2, 3)):
    conv = random_quant_layer(rng, "conv", 1, 6, 6, 3, 3, 1, 1, name="conv1")
    pool = random_maxpool_layer(3, 6, 6, 2, name="pool1")
    layers = [conv, pool]
    if second_pool:
        layers.append(random_maxpool_layer(3, 3, 3, 3, 1, 1, name="pool1b"))
    conv2 = random_quant_layer(rng, "conv", 3, 3, 3, 4, 1, 1, 0, name="conv2")
    layers += [conv2, FlattenLayer("flat", (4, 3, 3), (36, 1, 1)),
               random_quant_layer(rng, "linear", 36, 1, 1, 5, relu=False, name="fc")]
    model = QuantModel("tiny", (1, 6, 6), 0.1, layers, 5)
    return model, {layer.name: pack_layer(layer, array=array) for layer in model.compute_layers}


@pytest.mark.parametrize("second_pool", [False, True])
def test_model_engine_matches_golden(second_pool):
    rng = np.random.default_rng(11)
    model, packed = tiny_model(rng, second_pool)
    plan = plan_model(model, packed, ArrayConfig(2, 3))
    engine = ModelEngine(plan)
    x = random_input(rng, model.layers[0], batch=2)
    outs, stats = simulate_engine(engine, [x[i].numpy().ravel() for i in range(2)])
    gold = run_golden(model, x)[-1].numpy()
    got = np.stack([o.reshape(gold.shape[1:]) for o in outs])
    mm = first_mismatch([model.layers[-1].name], [gold], [got])
    assert mm is None, str(mm)
    assert len(np.unique(gold)) > 3
    for i, st in enumerate(stats):
        assert st["cycles"] == st["measured"] == engine.cycle_model["total"] == plan.cycles(x[i].numpy().ravel())
    cm = engine.cycle_model
    assert cm["useful_macs"] == sum(int(np.count_nonzero(l.weight)) * l.pixels for l in model.compute_layers)
    assert cm["utilization"] == pytest.approx(cm["useful_macs"] / (2 * 3 * cm["total"]))


def test_model_engine_rejects_bad_models():
    rng = np.random.default_rng(0)
    model, packed = tiny_model(rng)
    starts_with_pool = QuantModel("p", (3, 6, 6), 0.1, [random_maxpool_layer(3, 6, 6, 2)] + model.layers[2:], 5)
    with pytest.raises(SparsynError, match="needs a conv/linear first layer"):
        plan_model(starts_with_pool, packed)
    broken = QuantModel("b", (1, 6, 6), 0.1, [model.layers[0]] + model.layers[2:], 5)
    with pytest.raises(SparsynError, match="layer conv2 takes 27 inputs but the previous layer gives 108"):
        plan_model(broken, packed)
    with pytest.raises(SparsynError, match="no packed weights"):
        plan_model(model, {})
    # the layers were packed for 2x3: another array is refused in one line
    with pytest.raises(SparsynError, match="packed for 2x3, not 2x2"):
        plan_model(model, packed, ArrayConfig(2, 2))
    assert len(plan_model(model, packed, ArrayConfig(2, 3)).segments) == 3


def test_default_digits_model_end_to_end():
    """The built-in digits CNN (dense) as one ModelEngine: logits bit-exact, cycles = model."""
    from sparsyn.sw.compress import pack_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input
    from sparsyn.sw.model_zoo import default_model
    from sparsyn.sw.quantize import quantize_model
    from sparsyn.sw.schemes import get_scheme

    data = digits()
    model = quantize_model(default_model(progress=False), data)
    packed = pack_model(model, get_scheme("dense")())
    engine = ModelEngine(plan_model(model, packed, ArrayConfig(4, 4)))
    x = quantize_input(data.test_x[:1], model.input_scale)
    outs, stats = simulate_engine(engine, [x[0].numpy().ravel()])
    gold = run_golden(model, x)[-1].numpy().reshape(1, -1)
    assert np.array_equal(outs[0].reshape(1, -1), gold), (outs[0], gold)
    assert stats[0]["cycles"] == stats[0]["measured"] == engine.cycle_model["total"]


def test_pattern_model_end_to_end_time_multiplexed():
    """The digits CNN compressed with ``pattern`` (window feeds, 2:4 channel-group fc, 2 multipliers per PE:
    2 cycles per window) as one ModelEngine: logits bit-exact, cycles = model, back-to-back images."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input
    from sparsyn.sw.model_zoo import default_model
    from sparsyn.sw.schemes.pattern import PatternScheme

    data = digits()
    scheme = PatternScheme(array="4x4", prune_steps=1, finetune_epochs=0, mults=2)
    scheme.progress = False
    model, packed, _ = compress_model(default_model(progress=False), scheme, data, progress=False,
                                      log=lambda *a, **k: None)
    assert {p.meta["feed"] for p in packed.values()} == {"window", "channels"}
    engine = ModelEngine(plan_model(model, packed, ArrayConfig(4, 4)))
    x = quantize_input(data.test_x[:2], model.input_scale)
    outs, stats = simulate_engine(engine, [x[i].numpy().ravel() for i in range(2)])
    gold = run_golden(model, x)[-1].numpy().reshape(2, -1)
    for i in range(2):
        assert np.array_equal(outs[i].reshape(-1), gold[i]), (i, outs[i], gold[i])
        assert stats[i]["cycles"] == stats[i]["measured"] == engine.cycle_model["total"]
