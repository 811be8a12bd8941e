"""The MLPerf Tiny zoo networks through ``sparsyn compress --data`` -> ``sparsyn sim``: every layer (convs,
depthwise convs, residual adds, average pools, linears) bit-exact and cycle-exact in RTL.

The tiny-input ResNet-8 and DS-CNN run in the default suite on Icarus; the tiny MobileNet (28 layers), DS-CNN on
the tight scheme and the full-size networks run on Verilator behind the ``slow`` marker (each takes minutes)."""
import numpy as np
import pytest

from sparsyn.sw.cli import main
from sparsyn.sw.zoo import zoo_data

from sparsyn.sim.tools import have_simulator


def _zoo_npz(name, path, n):
    """The zoo's synthetic data of ``name`` as a user's ``--data`` file."""
    data = zoo_data(name, n)
    x = np.concatenate([data.train_x.numpy(), data.test_x.numpy()]).astype(np.float32)
    arrays = {"x": x}
    if data.labelled:
        arrays["y"] = np.concatenate([data.train_y.numpy(), data.test_y.numpy()]).astype(np.int64)
    np.savez(path, **arrays)
    return path


def _compress_and_sim(name, tmp_path, simulator, scheme="dense", array="2x2", n=200, opts=()):
    reason = have_simulator(simulator)
    if reason:
        pytest.skip(reason)
    data = _zoo_npz(name, tmp_path / f"{name}.npz", n)
    out = tmp_path / "m"
    assert main(["compress", "--model", f"zoo:{name}", "--data", str(data), "--scheme", scheme, "--array", array,
                 *[a for o in opts for a in ("--opt", o)], "--out", str(out), "--quiet"]) == 0
    from sparsyn.sim.check import rtl_check
    from sparsyn.sw.manifest import load_manifest
    model, _, doc = load_manifest(out)
    assert doc["data"]["kind"] == "npz"             # compressed with the user's data, not the zoo's own
    rows = rtl_check(out, simulator=simulator, out_dir=tmp_path / "sim", progress=False)
    simulated = {r["layer"] for r in rows}
    expected = {l.name for l in model.layers if l.kind != "flatten"}
    assert simulated == expected, expected - simulated
    for r in rows:
        assert r["bit_exact"] and r["reference_exact"] and r["cycles_exact"], r
    return model, rows


def test_resnet8_tiny_graph_in_rtl(tmp_path):
    """Residual adds with two scales, the 1x1 stride-2 shortcut convs reading the block input, the global pool."""
    model, rows = _compress_and_sim("ic-resnet8-tiny", tmp_path, "icarus")
    kinds = {r["layer"]: r["scheme"] for r in rows}
    assert sorted(k for k in kinds.values() if k in ("add", "avgpool")) == ["add", "add", "add", "avgpool"]
    assert not model.is_chain


def test_dscnn_tiny_in_rtl(tmp_path):
    """Non-square first conv, depthwise + pointwise blocks, the non-tiling average pool."""
    _compress_and_sim("kws-dscnn-tiny", tmp_path, "icarus")


@pytest.mark.slow
def test_dscnn_tiny_tight_in_rtl(tmp_path):
    _compress_and_sim("kws-dscnn-tiny", tmp_path, "verilator", scheme="tight", array="1x2", opts=("alpha=2",))


@pytest.mark.slow
def test_mobilenet_tiny_in_rtl(tmp_path):
    _compress_and_sim("vww-mobilenet-tiny", tmp_path, "verilator", n=100)


@pytest.mark.slow
@pytest.mark.parametrize("name,scheme,array,opts,n", [
    ("kws-dscnn", "tight", "1x2", ("alpha=2",), 600),
    ("ic-resnet8", "dense", "4x4", (), 400),
    ("vww-mobilenet", "dense", "4x4", (), 200),
    ("ad-autoencoder", "dense", "2x2", (), 400),
])
def test_full_size_zoo_networks_in_rtl(name, scheme, array, opts, n, tmp_path):
    """The full-size MLPerf Tiny reference networks, every layer on Verilator."""
    _compress_and_sim(name, tmp_path, "verilator", scheme=scheme, array=array, n=n, opts=opts)
