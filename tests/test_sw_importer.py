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
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2)), "AvgPool2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), "dilated"),
    (nn.Sequential(nn.MaxPool2d(2)), "no Conv2d or Linear"),
    (nn.Sequential(nn.Flatten(), nn.ReLU()), "ReLU"),
])
def test_unsupported_models_are_refused_by_name(model, needle):
    shape = (4, 8, 8) if isinstance(model[0], nn.Conv2d) and model[0].in_channels == 4 else (1, 8, 8)
    with pytest.raises(SparsynError) as err:
        import_model(model, shape)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_branching_model_is_refused():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.c(x) + x

    with pytest.raises(SparsynError, match="single chain"):
        import_model(Skip(), (1, 8, 8))


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
