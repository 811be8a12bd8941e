"""Model import through torch.fx: supported layers, BN folding, and the refusals."""
import pytest
import torch
from torch import nn

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.importer import import_model, load_model_file, run_float


def _check_equivalent(model, shape):
    layers = import_model(model, shape)
    x = torch.randn(4, *shape)
    model.eval()
    with torch.no_grad():
        ref = model.double()(x.double()).reshape(4, -1)
    assert torch.allclose(run_float(layers, x), ref, atol=1e-9)
    return layers


def test_import_any_kernel_stride_padding_and_bn_folding():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2, padding=2), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 5, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 4 * 4, 7))
    bn = model[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    layers = _check_equivalent(model, (3, 16, 16))
    assert [l.kind for l in layers] == ["conv", "conv", "maxpool", "flatten", "linear"]
    assert layers[0].relu and layers[1].relu and not layers[-1].relu
    assert layers[0].kernel == (5, 5) and layers[0].stride == 2 and layers[0].padding == 2
    assert layers[0].out_shape == (6, 8, 8) and layers[0].weight.shape == (6, 75)


def test_import_functional_relu_and_flatten():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.c(x)), 1))

    layers = _check_equivalent(Net(), (1, 8, 8))
    assert layers[0].relu and [l.name for l in layers][0] == "c"


@pytest.mark.parametrize("model,needle", [
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), "grouped Conv2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid()), "Sigmoid"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, padding=1)), "AvgPool2d with padding"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(4)), "windows of different sizes"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), "dilated"),
    (nn.Sequential(nn.MaxPool2d(2)), "no Conv2d or Linear"),
    (nn.Sequential(nn.Flatten(), nn.ReLU()), "ReLU"),
])
def test_unsupported_models_are_refused_by_name(model, needle):
    shape = (4, 8, 8) if isinstance(model[0], nn.Conv2d) and model[0].in_channels == 4 else (1, 8, 8)
    with pytest.raises(SparsynError) as err:
        import_model(model, shape)
    assert needle in str(err.value) and "\n" not in str(err.value)


class _Block(nn.Module):
    """A ResNet basic block with a 1x1 stride-2 shortcut conv, a global average pool and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 6, 1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        y = torch.relu(self.shortcut(x) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def test_residual_graph_imports_with_named_inputs():
    torch.manual_seed(0)
    layers = _check_equivalent(_Block(), (1, 8, 8))
    by = {l.name: l for l in layers}
    assert [l.kind for l in layers] == ["conv", "conv", "conv", "conv", "add", "avgpool", "flatten", "linear"]
    assert by["shortcut"].inputs == ("stem",) and by["conv1"].inputs == ()      # reads the block input
    assert by["add"].inputs == ("shortcut", "conv2") and by["add"].relu           # the ReLU after it is fused
    assert by["pool"].kernel == (4, 4) and by["pool"].out_shape == (6, 1, 1)


def test_non_tiling_average_pool_and_global_mean():
    class Mean(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 3, (4, 2), stride=2, padding=(2, 0))
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).mean((2, 3)))

    layers = _check_equivalent(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d((4, 3)),
                                             nn.Flatten(), nn.Linear(3 * 1 * 1, 2)), (1, 5, 3))
    assert layers[1].kind == "avgpool" and layers[1].out_shape == (3, 1, 1)      # the 5th row is not read
    layers = _check_equivalent(Mean(), (1, 12, 6))
    assert layers[1].kind == "avgpool" and layers[1].kernel == (7, 3)


@pytest.mark.parametrize("body,needle", [
    (lambda m, x: m.c(x) + m.d(x)[:, :, :4], "getitem"),
    (lambda m, x: torch.relu(y := m.c(x)) + m.f(y), "also reads"),
    (lambda m, x: m.c(x) + m.e(x), "needs two tensors of one shape"),
    (lambda m, x: m.c(x) * m.c2(x), "mul"),
])
def test_graphs_the_integer_model_cannot_hold_are_refused(body, needle):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.c2, self.d = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3)
            self.e, self.f = nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return body(self, x)

    with pytest.raises(SparsynError) as err:
        import_model(Net(), (1, 8, 8))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_model_files(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    good = tmp_path / "m.pt"
    torch.save(model, good)
    assert isinstance(load_model_file(good), nn.Module)
    with pytest.raises(SparsynError, match="not found"):
        load_model_file(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(SparsynError, match="could not be loaded"):
        load_model_file(corrupt)
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    with pytest.raises(SparsynError, match="state_dict"):
        load_model_file(sd)
