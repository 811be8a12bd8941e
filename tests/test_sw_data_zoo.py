"""Your own data (``--data FILE.npz``, :mod:`sparsyn.sw.data`), models without labels (the reconstruction report),
BatchNorm1d / ReLU6 in the importer, and the tinyML model zoo (:mod:`sparsyn.sw.zoo`): shapes, parameter counts
against the MLPerf Tiny references, the importer's refusals of the three CNNs, and the autoencoder through
compress -> sim bit-exact.

The CLI runs in-process (``sparsyn.sw.cli.main``) so that the refusals take seconds."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from sparsyn.sw.cli import main
from sparsyn.sw.data import (MIN_SAMPLES, dataset_from_arrays, dataset_from_torch, digits, load_data, recorded_data,
                             split_order)
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.zoo import KERAS_PARAMS, ZOO, build_zoo_model, keras_param_count, zoo_data

RNG = np.random.default_rng(0)
X = RNG.random((40, 1, 8, 8)).astype(np.float32) * 16
Y = RNG.integers(0, 10, 40)


def _with_nan(x):
    x = x.copy()
    x[3, 0, 2, 2] = np.nan
    return x


def _with_inf(x):
    x = x.copy()
    x[7, 0, 0, 1] = -np.inf
    return x


#: name -> (arrays to save, or bytes / a marker; what the one-line error must say)
DATA_CASES = {
    "missing_file": (None, "not found; pass an .npz file"),
    "folder": ("folder", "is a folder; pass an .npz file"),
    "not_npz": (b"x,y\n1,2\n", "is not an .npz archive (not a zip file"),
    "empty_file": (b"", "is not an .npz archive (not a zip file: empty)"),
    "npy_file": ("npy", "holds a single .npy array, not an .npz archive"),
    "no_x": ({"inputs": X, "y": Y}, "has no array 'x' (it holds: inputs, y); name the inputs x"),
    "object_x": ({"x": np.array([1, "a"], dtype=object)}, "array 'x' cannot be read"),
    "int_x": ({"x": X.astype(np.int64), "y": Y}, "x has dtype int64, not float"),
    "float_y": ({"x": X, "y": Y.astype(np.float32)}, "y has dtype float32, not integer"),
    "x_3d": ({"x": X[:, 0], "y": Y}, "x has shape (40, 8, 8) (3-D) but must be N×C×H×W (images) or N×F"),
    "nan": ({"x": _with_nan(X), "y": Y}, "x holds NaN or inf values in 1 sample(s) (the first: sample 3)"),
    "inf": ({"x": _with_inf(X), "y": Y}, "x holds NaN or inf values in 1 sample(s) (the first: sample 7)"),
    "y_length": ({"x": X, "y": Y[:-1]}, "y has 39 labels but x has 40 samples"),
    "y_2d": ({"x": X, "y": np.eye(10, dtype=np.int64)[Y]}, "y has shape (40, 10) but must hold one label per sample"),
    "negative_label": ({"x": X, "y": np.where(np.arange(40) == 5, -1, Y)}, "negative labels (the first: -1 at sample 5)"),
    "label_out_of_range": ({"x": X, "y": Y, "classes": np.int64(5)}, "but there are 5 classes (labels 0..4)"),
    "bad_classes": ({"x": X, "y": Y, "classes": np.float32(2.5)}, "'classes' must be one positive integer"),
    "too_few": ({"x": X[:MIN_SAMPLES - 1], "y": Y[:MIN_SAMPLES - 1]},
                f"x has only {MIN_SAMPLES - 1} sample(s) but the seeded split (25 % test) needs at least {MIN_SAMPLES}"),
    # against the model (the default digits CNN: 1x8x8 in, 10 classes)
    "image_shape": ({"x": RNG.random((40, 3, 16, 16)).astype(np.float32), "y": Y},
                    "does not take the data's inputs: x is 40×3×16×16 (one sample: (3, 16, 16))"),
    "vector_shape": ({"x": RNG.random((40, 64)).astype(np.float32), "y": Y},
                     "does not take the data's inputs: x is 40×64 (one sample: (64,))"),
    "class_mismatch": ({"x": X, "y": Y % 7}, "produces 10 outputs but the dataset has 7 classes"),
    "no_labels_classifier": ({"x": X}, "produces 10 outputs but the data has no labels (no y)"),
}


def _write(tmp_path, name, spec):
    path = tmp_path / f"{name}.npz"
    if spec is None:
        return path
    if spec == "folder":
        path.mkdir()
    elif spec == "npy":
        np.save(tmp_path / "a.npy", X)
        (tmp_path / "a.npy").rename(path)
    elif isinstance(spec, bytes):
        path.write_bytes(spec)
    else:
        np.savez(path, **spec)
    return path


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("sparsyn: error:"), err
    return err


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_catalogue(tmp_path, capsys, case):
    """Every bad --data file: one line naming the problem and the fix, exit 2, nothing written."""
    spec, needle = DATA_CASES[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = _write(data_dir, case, spec)
    out = tmp_path / "out"
    err = _one_line_error(capsys, main(["compress", "--data", str(path), "--out", str(out), "--quiet"]))
    assert needle in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_run_refuses_bad_data_and_models_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    err = _one_line_error(capsys, main(["run", "--no-rtl", "--data", str(tmp_path / "nope.npz"), "--out", str(out)]))
    assert "nope.npz not found" in err and not out.exists()
    err = _one_line_error(capsys, main(["run", "--no-rtl", "--model", "zoo:lenet", "--out", str(out)]))
    assert "unknown zoo model 'lenet'" in err and not out.exists()
    np.savez(tmp_path / "v.npz", x=RNG.random((40, 64)).astype(np.float32), y=Y)
    err = _one_line_error(capsys, main(["run", "--no-rtl", "--data", str(tmp_path / "v.npz"), "--out", str(out)]))
    assert "model default-digits does not take the data's inputs: x is 40×64" in err and not out.exists()


def test_vector_data_shape_mismatch_names_the_data_shape(tmp_path, capsys):
    """An autoencoder for 32 inputs given 100-feature data: refused before any training, naming both shapes."""
    path = tmp_path / "d.npz"
    np.savez(path, x=RNG.random((50, 100)).astype(np.float32))
    err = _one_line_error(capsys, main(["compress", "--model", "zoo:ad-autoencoder-tiny", "--data", str(path),
                                        "--out", str(tmp_path / "o"), "--quiet"]))
    assert "x is 50×100 (one sample: (100,))" in err and "its first layer takes 32 features" in err, err


# ------------------------------------------------------------------------------------------------------ the split

def test_split_is_seeded_and_documented():
    """25 % test from numpy's default_rng(0) permutation, for every data set; the digits keep their own split."""
    x = RNG.random((101, 5)).astype(np.float32)
    y = RNG.integers(0, 3, 101)
    a, b = dataset_from_arrays(x, y), dataset_from_arrays(x, y)
    train, test = split_order(101)
    assert len(test) == round(101 * 0.25) and sorted([*train, *test]) == list(range(101))
    assert np.array_equal(test, np.random.default_rng(0).permutation(101)[:len(test)])
    for d in (a, b):
        assert torch.equal(d.test_x, torch.from_numpy(x[test])) and torch.equal(d.train_y, torch.from_numpy(y[train]))
    c = dataset_from_arrays(x, y, seed=1)
    assert not torch.equal(c.test_x, a.test_x)
    assert a.source["split"] == {"seed": 0, "test_fraction": 0.25, "train": 76, "test": 25}
    # the digits: the same permutation, untouched
    d = digits()
    from sklearn.datasets import load_digits
    raw = load_digits()
    tr, te = split_order(len(raw.target))
    assert torch.equal(d.test_x[:, 0], torch.tensor(raw.images[te], dtype=torch.float32))
    assert torch.equal(d.train_y, torch.tensor(raw.target[tr])) and d.classes == 10 and d.labelled


def test_load_data_records_file_and_is_deterministic(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x=X, y=Y, classes=np.int64(12), extra=np.zeros(3))
    a, b = load_data(path), load_data(path)
    assert torch.equal(a.train_x, b.train_x) and a.classes == 12 and a.input_shape == (1, 8, 8)
    import hashlib
    assert a.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and a.source["file"] == "mine.npz"
    assert a.source["x_shape"] == [40, 1, 8, 8] and a.source["ignored"] == ["extra"]
    # the manifest's record reads the same data again; a changed file is refused in one line
    assert torch.equal(recorded_data(a.source).test_x, a.test_x)
    np.savez(path, x=X * 2, y=Y)
    with pytest.raises(SparsynError, match="has changed"):
        recorded_data(a.source)


def test_dataset_from_torch_and_float64():
    td = torch.utils.data.TensorDataset(torch.randn(30, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (30,)))
    d = dataset_from_torch(td)
    assert d.train_x.dtype == torch.float32 and d.input_shape == (2, 4, 4) and d.classes == 3
    assert len(d.test_x) == round(30 * 0.25) and d.source["name"] == "TensorDataset"
    unlabelled = dataset_from_torch([torch.randn(6) for _ in range(20)])
    assert unlabelled.train_y is None and unlabelled.classes is None and unlabelled.input_shape == (6,)


# ----------------------------------------------------------------------------------- N×F data and BatchNorm1d

def test_vector_classifier_on_nxf_data(tmp_path):
    """A Linear chain on N×F data (the module is called with N×F, the chain sees (F, 1, 1)); labelled: accuracy."""
    from sparsyn.sw.compress import compress
    from sparsyn.sw.manifest import load_reference
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 2, (3, 12))
    y = rng.integers(0, 3, 120)
    x = (centers[y] + rng.normal(0, 0.5, (120, 12))).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x, y=y)
    from sparsyn.sw.train import train
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    train(model, load_data(tmp_path / "v.npz"), epochs=20, progress=False)
    report = compress(model, "dense", {}, tmp_path / "out", progress=False, log=lambda *a, **k: None,
                      array="2x2", data=tmp_path / "v.npz")
    assert report["accuracy"]["int"] > 80 and report["data"]["file"] == "v.npz"
    x_ref, _ = load_reference(tmp_path / "out")
    assert x_ref.shape == (4, 12, 1, 1)
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert doc["model"]["input_shape"] == [12, 1, 1] and doc["data"]["x_shape"] == [120, 12]
    assert doc["reference"]["source"].startswith("v.npz (sha256 ")


def test_batchnorm1d_folds_into_linear_and_relu6_caps():
    from sparsyn.sw.importer import import_model, run_float
    from sparsyn.sw.quantize import quantize_layers
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6), nn.ReLU6(), nn.Linear(6, 4), nn.BatchNorm1d(4),
                          nn.Hardtanh(0.0, 2.0), nn.Dropout(0.3), nn.Linear(4, 2))
    for bn in (model[1], model[4]):                       # running statistics far from 0 / 1
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    model.eval()
    layers = import_model(model, (10,))
    assert [(l.kind, l.relu, l.act_max) for l in layers] == [("linear", True, 6.0), ("linear", True, 2.0),
                                                             ("linear", False, None)]
    x = torch.randn(64, 10) * 4
    with torch.no_grad():
        assert torch.allclose(run_float(layers, x), model.double()(x.double()), atol=1e-9)
    q = quantize_layers(layers, x, None)
    # the caps are the int8 clamp: the largest code of a capped layer stands for at most its cap
    assert q.compute_layers[0].out_scale * 127 <= 6.0 + 1e-12 and q.compute_layers[1].out_scale * 127 <= 2.0 + 1e-12
    with pytest.raises(SparsynError, match=r"Hardtanh\(-1, 1\); only a cap above zero"):
        import_model(nn.Sequential(nn.Linear(4, 4), nn.Hardtanh()), (4,))
    with pytest.raises(SparsynError, match="BatchNorm1d '2' must directly follow a Linear"):
        import_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)), (4,))


# ------------------------------------------------------------------------------------------------------- the zoo

@pytest.mark.parametrize("name", [n for n in ZOO])
def test_zoo_forward_shape_and_parameters(name):
    """Each network takes its input shape and gives its classes (the autoencoder: its input); the full-size ones
    have the Keras "Total params" of the mlcommons/tiny reference, counted layer by layer from its source."""
    entry = ZOO[name]
    model = build_zoo_model(name)
    with torch.no_grad():
        out = model(torch.zeros(2, *entry.input_shape))
    assert out.shape == (2, entry.classes or int(np.prod(entry.input_shape)))
    if not name.endswith("-tiny"):
        assert keras_param_count(model) == KERAS_PARAMS[name] == entry.keras_params
    data = zoo_data(name, n=40, seed=3)
    assert data.input_shape == entry.input_shape and data.classes == entry.classes
    assert torch.equal(zoo_data(name, n=40, seed=3).train_x, data.train_x)          # seeded
    assert not torch.equal(zoo_data(name, n=40, seed=4).train_x, data.train_x)


def test_zoo_reference_figures():
    """The counts stated in the docstrings: trainable parameters + BatchNorm statistics = Keras' total."""
    trainable = {"ic-resnet8": 78_186, "kws-dscnn": 23_756, "vww-mobilenet": 216_322, "ad-autoencoder": 267_928}
    assert KERAS_PARAMS == {"ic-resnet8": 78_666, "kws-dscnn": 24_908, "vww-mobilenet": 221_794,
                            "ad-autoencoder": 269_992}
    for name, n in trainable.items():
        assert sum(p.numel() for p in build_zoo_model(name).parameters()) == n


def test_zoo_synthetic_data_is_structured():
    """A few epochs can learn the synthetic sets: the class means already separate image classification and
    keyword spotting far above chance, and the brightest blurred spot separates the wake-word 'person'."""
    for name in ("ic-resnet8", "kws-dscnn"):
        d = zoo_data(name, n=600)
        xt, xs = d.train_x.flatten(1), d.test_x.flatten(1)
        means = torch.stack([xt[d.train_y == k].mean(0) for k in range(d.classes)])
        acc = (torch.cdist(xs, means).argmin(1) == d.test_y).double().mean().item()
        assert acc > 0.8, (name, acc)
    d = zoo_data("vww-mobilenet-tiny", n=200)
    blur = nn.functional.avg_pool2d(d.test_x.mean(1, keepdim=True), 5, 1)
    score = blur.flatten(1).amax(1)
    best = max(((score > t) == d.test_y.bool()).double().mean().item() for t in score.tolist())
    assert best > 0.85
    ad = zoo_data("ad-autoencoder", n=100)
    assert ad.train_y is None and ad.input_shape == (640,)


#: The three CNNs: the importer's one-line refusal lists every operator it does not support yet.
#: The zoo CNNs' structure after import: layer kinds, and the layers of a graph that read another than the one before.
CNN_STRUCTURE = {
    "ic-resnet8-tiny": (["conv", "conv", "conv", "add", "conv", "conv", "conv", "add", "conv", "conv", "conv", "add",
                         "avgpool", "flatten", "linear"],
                        {"add": ("conv", "stack1.conv2"), "stack2.shortcut": ("add",),
                         "add_1": ("stack2.shortcut", "stack2.conv2"), "stack3.shortcut": ("add_1",),
                         "add_2": ("stack3.shortcut", "stack3.conv2")}),
    "kws-dscnn-tiny": (["conv"] * 9 + ["avgpool", "flatten", "linear"], {}),
    "vww-mobilenet-tiny": (["conv"] * 27 + ["avgpool", "flatten", "linear"], {}),
}


@pytest.mark.parametrize("name", list(CNN_STRUCTURE))
def test_zoo_cnns_compress_with_their_operators(name, tmp_path, monkeypatch):
    """The tiny zoo CNNs compress: ResNet-8's residual adds (a graph: the shortcut convs read the block input),
    every network's average pool; the golden model equals the int8 reference (compress checks it)."""
    from sparsyn.sw.compress import compress
    from sparsyn.sw.manifest import load_manifest
    monkeypatch.setenv("SPARSYN_WORK", str(tmp_path / "work"))
    compress(f"zoo:{name}", "dense", out=tmp_path / "m", progress=False, array="2x2")
    model, _, _ = load_manifest(tmp_path / "m")
    kinds, graph = CNN_STRUCTURE[name]
    assert [l.kind for l in model.layers] == kinds
    assert {l.name: l.inputs for l in model.layers if l.inputs} == graph
    assert model.is_chain == (not graph)


def test_unknown_zoo_model_lists_the_zoo(tmp_path, capsys):
    err = _one_line_error(capsys, main(["compress", "--model", "zoo:lenet", "--out", str(tmp_path / "o"), "--quiet"]))
    assert "unknown zoo model 'lenet'; the zoo has: ic-resnet8, kws-dscnn, vww-mobilenet, ad-autoencoder" in err


# --------------------------------------------------------------------------------------- the autoencoder, whole

@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    """``sparsyn compress --model zoo:ad-autoencoder-tiny --scheme dense --array 2x2`` (its synthetic data)."""
    out = tmp_path_factory.mktemp("ad") / "ad"
    code = main(["compress", "--model", "zoo:ad-autoencoder-tiny", "--scheme", "dense", "--array", "2x2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_autoencoder_reconstruction_report(autoencoder, capsys):
    """No labels: the report gives the integer model's reconstruction MSE (vs the input and vs the float model),
    recomputed here from the manifest's golden model."""
    from sparsyn.sw.golden import logits, quantize_input
    from sparsyn.sw.manifest import load_manifest
    report = json.loads((autoencoder / "report.json").read_text())
    assert report["accuracy"] is None and report["data"]["kind"] == "synthetic"
    r = report["reconstruction"]
    assert r["metric"] == "mse" and r["int"] < 0.5 * r["input_variance"]          # it learnt something
    assert r["int_vs_float"] < 0.1 * r["input_variance"]                          # int8 stays close to float
    model, _, doc = load_manifest(autoencoder)
    assert doc["report"]["reconstruction"] == r and doc["data"] == report["data"]
    data = recorded_data(doc["data"])
    out = logits(model, quantize_input(data.test_x, model.input_scale)).double() * model.compute_layers[-1].out_scale
    assert abs(((out - data.test_x.double()) ** 2).mean().item() - r["int"]) < 1e-9
    assert "synthetic ad-autoencoder-tiny data (seed 0), test split" in doc["reference"]["source"]


def test_autoencoder_with_own_data_and_cli_summary(tmp_path, capsys):
    """``--data`` N×F without labels: trained on it, scored by reconstruction; the summary says so."""
    x = zoo_data("ad-autoencoder-tiny", n=120, seed=7)
    np.savez(tmp_path / "ad.npz", x=torch.cat([x.train_x, x.test_x]).numpy())
    code = main(["compress", "--model", "zoo:ad-autoencoder-tiny", "--data", str(tmp_path / "ad.npz"), "--scheme",
                 "dense", "--array", "2x2", "--out", str(tmp_path / "o"), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0 and "reconstruction MSE" in stdout and "ad.npz (sha256" in stdout and "no labels" in stdout
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["data"]["file"] == "ad.npz" and report["data"]["split"]["test"] == 30


def test_autoencoder_simulates_bit_exact(autoencoder, tmp_path):
    """Every layer of the manifest in RTL (Icarus) on the stored reference vectors, and 2 more test images of the
    recorded (synthetic) data."""
    from sparsyn.sim.check import rtl_check
    from sparsyn.sim.tools import have_simulator
    if have_simulator("icarus"):
        pytest.skip(have_simulator("icarus"))
    rows = rtl_check(autoencoder, simulator="icarus", images=6, out_dir=tmp_path, progress=False)
    assert len(rows) == 10
    for r in rows:
        assert r["bit_exact"] and r["reference_exact"] and r["cycles_exact"], r
        assert len(r["cycles_all"]) == 6


def test_run_on_a_zoo_model(tmp_path):
    """``sparsyn run --model zoo:... --no-rtl``: the table row of a model without labels has no accuracy."""
    code = main(["run", "--no-rtl", "--model", "zoo:ad-autoencoder-tiny", "--schemes", "dense", "--array", "2x2",
                 "--out", str(tmp_path / "run")])
    doc = json.loads((tmp_path / "run" / "run-report.json").read_text())
    assert code == 0 and doc["table"][0]["int_acc"] is None
    assert doc["schemes"]["dense"]["compress"]["reconstruction"]["metric"] == "mse"
