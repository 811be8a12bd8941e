"""The numeric contract: requantization, golden model vs torch and vs the float64 int8 model, mismatch locator."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsyn.sw.compress import int_accuracy
from sparsyn.sw.data import digits
from sparsyn.sw.golden import (first_mismatch, layer_accumulators, quantize_input, run_golden,
                               run_int8_reference, run_layer)
from sparsyn.sw.model_zoo import default_model
from sparsyn.sw.qmodel import MaxPoolLayer, QuantLayer
from sparsyn.sw.quantize import quantize_model
from sparsyn.sw.requant import MAX_SHIFT, MULT_BITS, choose_multiplier, requantize, requantize_int


@pytest.fixture(scope="module")
def qmodel():
    return quantize_model(default_model(progress=False), digits())


def test_requant_rounds_half_up_and_clamps():
    # 5 * 1 / 2 = 2.5 -> 3 ; -5/2 = -2.5 -> -2 (half up) ; relu clamps negatives to 0
    assert requantize_int(5, 1, 1, relu=False) == 3
    assert requantize_int(-5, 1, 1, relu=False) == -2
    assert requantize_int(-7, 1, 1, relu=True) == 0
    assert requantize_int(10**6, 3, 1, relu=False) == 127
    assert requantize_int(-10**6, 3, 1, relu=False) == -128
    acc = torch.tensor([[5, -5, -7, 300]], dtype=torch.int64).T.reshape(1, 4, 1, 1)
    out = requantize(acc, [1, 1, 1, 1], [1, 1, 1, 1], relu=False).flatten().tolist()
    assert out == [3, -2, -3, 127]


def test_requant_tensor_matches_scalar_form():
    rng = np.random.default_rng(1)
    acc = rng.integers(-2**31, 2**31, size=(1, 6, 5, 5))
    mult = rng.integers(1 << (MULT_BITS - 1), 1 << MULT_BITS, size=6)
    shift = rng.integers(1, MAX_SHIFT + 1, size=6)
    for relu in (False, True):
        got = requantize(torch.tensor(acc), mult, shift, relu).numpy()
        exp = np.vectorize(lambda a, c: requantize_int(int(a), int(mult[c]), int(shift[c]), relu))(
            acc, np.arange(6)[None, :, None, None])
        assert np.array_equal(got, exp)


@pytest.mark.parametrize("real", [1.0, 0.5, 3e-3, 1.234e-7, 0.99999])
def test_choose_multiplier_is_normalised_and_accurate(real):
    m, s = choose_multiplier(real)
    assert m < 1 << MULT_BITS and 1 <= s <= MAX_SHIFT
    assert abs(m / 2**s - real) / real < 2.0 ** -(MULT_BITS - 2)


@pytest.mark.parametrize("kernel,stride,padding,cin,h,cout", [
    ((3, 3), 1, 1, 3, 7, 5), ((1, 1), 1, 0, 4, 5, 3), ((5, 5), 2, 2, 2, 9, 4), ((3, 3), 2, 0, 5, 8, 7)])
def test_golden_accumulators_equal_torch_conv(kernel, stride, padding, cin, h, cout):
    rng = np.random.default_rng(0)
    k = cin * kernel[0] * kernel[1]
    ho = (h + 2 * padding - kernel[0]) // stride + 1
    w = rng.integers(-128, 128, size=(cout, k))
    b = rng.integers(-1000, 1000, size=cout)
    layer = QuantLayer("t", "conv", (cin, h, h), (cout, ho, ho), kernel, stride, padding, w, b,
                       np.ones(cout, np.int64), np.ones(cout, np.int64), True, 1.0, 1.0, np.ones(cout))
    x = torch.tensor(rng.integers(-128, 128, size=(2, cin, h, h)))
    ref = F.conv2d(x.double(), torch.tensor(w, dtype=torch.float64).reshape(cout, cin, *kernel),
                   torch.tensor(b, dtype=torch.float64), stride=stride, padding=padding)
    assert torch.equal(layer_accumulators(layer, x), ref.to(torch.int64))


def test_maxpool_golden_matches_torch():
    x = torch.randint(-128, 128, (2, 3, 6, 6))
    pool = MaxPoolLayer("p", (3, 6, 6), (3, 3, 3), 3, 2, 1)
    assert torch.equal(run_layer(pool, x), F.max_pool2d(x.double(), 3, 2, 1).to(torch.int64))


def test_golden_equals_int8_model_on_full_test_set(qmodel):
    data = digits()
    x = quantize_input(data.test_x, qmodel.input_scale)
    gold, ref = run_golden(qmodel, x), run_int8_reference(qmodel, x)
    assert len(x) == len(data.test_y) > 400
    for g, r in zip(gold, ref):
        assert torch.equal(g, r)
    assert torch.equal(gold[-1].reshape(len(x), -1), ref[-1].reshape(len(x), -1))


def test_golden_rejects_float_input(qmodel):
    with pytest.raises(TypeError):
        run_golden(qmodel, digits().test_x[:1])


def test_mismatch_locator_reports_first_difference(qmodel):
    x = quantize_input(digits().test_x[:3], qmodel.input_scale)
    exp = run_golden(qmodel, x)
    act = [t.clone() for t in exp]
    assert first_mismatch([l.name for l in qmodel.layers], exp, act) is None
    act[2][1, 5, 2, 3] += 1
    act[4][0, 0, 0, 0] += 1
    mm = first_mismatch([l.name for l in qmodel.layers], exp, act)
    assert (mm.layer, mm.image, mm.channel, mm.y, mm.x) == (qmodel.layers[2].name, 1, 5, 2, 3)
    assert mm.actual == mm.expected + 1 and mm.count == 1
    assert "expected" in str(mm) and "actual" in str(mm)


def test_default_model_accuracy_and_int8_within_one_point(qmodel):
    from sparsyn.sw.train import accuracy
    data = digits()
    acc_float = accuracy(default_model(progress=False), data.test_x, data.test_y)
    acc_int = int_accuracy(qmodel, data)
    assert acc_float >= 95.0
    assert abs(acc_float - acc_int) <= 1.0


def test_golden_graph_reads_the_named_tensors():
    """A graph: the add reads the model input and the second conv (not the layer before it), the average pool the
    add; each output is checked against the contract computed by hand from the right tensors."""
    from sparsyn.sw.qmodel import MODEL_INPUT, AvgPoolLayer, QuantModel
    from sparsyn.sw.testing import random_add_layer
    rng = np.random.default_rng(3)
    conv = lambda name, inputs=(): QuantLayer(                  # noqa: E731
        name, "conv", (2, 4, 4), (2, 4, 4), (3, 3), 1, 1, rng.integers(-9, 10, (2, 18)), rng.integers(-50, 50, 2),
        np.array([20000, 30000]), np.array([12, 13]), True, 1.0, 1.0, np.ones(2), inputs=inputs)
    c1, c2 = conv("c1"), conv("c2", inputs=(MODEL_INPUT,))      # c2 reads the input, not c1
    add = random_add_layer(rng, 2, 4, 4, inputs=(MODEL_INPUT, "c2"))
    pool = AvgPoolLayer("pool", (2, 4, 4), (2, 1, 1), (3, 4), (3, 4), *choose_multiplier(1 / 12))
    model = QuantModel("g", (2, 4, 4), 1.0, [c1, c2, add, pool], 2)
    x = torch.as_tensor(rng.integers(-128, 128, (3, 2, 4, 4)))
    outs = run_golden(model, x)
    want_c2 = requantize(layer_accumulators(c2, x), c2.mult, c2.shift, True)
    assert torch.equal(outs[1], want_c2)
    acc = x * add.mult_a + want_c2 * add.mult_b
    want_add = ((acc + (1 << (add.shift - 1))) >> add.shift).clamp(0 if add.relu else -128, 127)
    assert torch.equal(outs[2], want_add)
    sums = want_add[:, :, :3, :].sum(dim=(2, 3), keepdim=True)              # the 4th row is past the last window
    want_pool = ((sums * pool.mult + (1 << (pool.shift - 1))) >> pool.shift).clamp(-128, 127)
    assert torch.equal(outs[3], want_pool)
    assert all(torch.equal(a, b) for a, b in zip(outs, run_int8_reference(model, x)))
