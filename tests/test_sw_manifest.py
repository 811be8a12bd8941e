"""Packed ROMs + manifest: round trip, $readmemh format, and every way a manifest can be broken."""
import json

import numpy as np
import pytest

from sparsyn.sw.compress import compress
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.manifest import load_manifest, read_manifest_json
from sparsyn.sw.rom import format_readmemh, read_readmemh, to_signed, to_unsigned
from sparsyn.sw.schedule import ArrayConfig, effective_weights
from sparsyn.sw.schemes import get_scheme


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "dense"
    report = compress("default", "dense", {}, out, progress=False, log=lambda *a: None)
    return out, report


@pytest.fixture
def broken(dense_dir, tmp_path):
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(dense_dir[0], dst)
    return dst


def test_readmemh_format_and_twos_complement(tmp_path):
    assert format_readmemh(to_unsigned([-128, -1, 0, 5, 127], 8), 8) == "80\nff\n00\n05\n7f\n"
    assert format_readmemh([1, 0x1ff], 9) == "001\n1ff\n"
    assert list(to_signed([0x80, 0xff, 0x7f], 8)) == [-128, -1, 127]
    with pytest.raises(ValueError):
        to_unsigned([256], 8)


def test_round_trip_decode_equals_golden_weights(dense_dir):
    out, report = dense_dir
    model, packed, doc = load_manifest(out)
    assert doc["version"] == 1 and doc["scheme"] == "dense"
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    from sparsyn.sw.quantize import quantize_model
    ref = quantize_model(default_model(progress=False), digits())
    for a, b in zip(model.compute_layers, ref.compute_layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert np.array_equal(a.mult, b.mult) and np.array_equal(a.shift, b.shift)
        rec = next(r for r in doc["layers"] if r["name"] == a.name)
        words = read_readmemh(out / rec["roms"]["weights"]["file"], 8, a.n * a.k)
        assert np.array_equal(to_signed(words, 8).reshape(a.n, a.k), b.weight)
    assert report["accuracy"]["int"] > 95


@pytest.mark.parametrize("array", [ArrayConfig(4, 4), ArrayConfig(3, 5), ArrayConfig(8, 2)])
def test_dense_tile_program_computes_the_decoded_matrix(dense_dir, array):
    model, packed, _ = load_manifest(dense_dir[0])
    for layer in model.compute_layers:
        p = packed[layer.name]
        scheme = get_scheme(p.scheme)
        prog = scheme.tile_program(p, layer, array)
        w = effective_weights(prog, lambda e: scheme.entry_coefficients(p, e))
        assert np.array_equal(w, layer.weight)
        assert len(prog.passes) == -(-layer.n // array.cols) * -(-layer.k // array.rows)


def _edit_manifest(path, fn):
    doc = json.loads((path / "manifest.json").read_text())
    fn(doc)
    (path / "manifest.json").write_text(json.dumps(doc))


def test_wrong_version_is_refused(broken):
    _edit_manifest(broken, lambda d: d.update(version=99))
    with pytest.raises(SparsynError, match="version 99"):
        load_manifest(broken)


def test_not_a_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("{\"hello\": 1}")
    with pytest.raises(SparsynError, match="not a sparsyn manifest"):
        read_manifest_json(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(SparsynError, match="not valid JSON"):
        read_manifest_json(tmp_path)
    with pytest.raises(SparsynError, match="not found"):
        read_manifest_json(tmp_path / "nowhere")


def test_checksum_mismatch_is_refused(broken):
    rom = broken / "conv1.weights.hex"
    lines = rom.read_text().splitlines()
    lines[0] = "00" if lines[0] != "00" else "01"
    rom.write_text("\n".join(lines) + "\n")
    with pytest.raises(SparsynError, match="checksum mismatch.*conv1.weights.hex"):
        load_manifest(broken)


def test_rom_of_wrong_length_is_refused(broken):
    rom = broken / "fc.weights.hex"
    rom.write_text("".join(rom.read_text().splitlines(keepends=True)[:-3]))
    from sparsyn.sw.manifest import sha256_file

    def fix(doc):  # checksum made consistent, so only the length check can catch it
        for rec in doc["layers"]:
            if rec["name"] == "fc":
                rec["roms"]["weights"]["sha256"] = sha256_file(rom)
    _edit_manifest(broken, fix)
    with pytest.raises(SparsynError, match="has 637 words but the manifest says 640"):
        load_manifest(broken)


def test_missing_rom_file_is_refused(broken):
    (broken / "conv2.weights.hex").unlink()
    with pytest.raises(SparsynError, match="missing"):
        load_manifest(broken)


def test_unknown_scheme_leaves_nothing_behind(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(SparsynError, match="unknown scheme 'nope'; available schemes: dense"):
        compress("default", "nope", {}, out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_failed_compress_keeps_no_partial_output(tmp_path, monkeypatch):
    from sparsyn.sw import manifest as mf
    calls = {"n": 0}
    real = mf.write_readmemh

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(mf, "write_readmemh", flaky)
    with pytest.raises(OSError):
        compress("default", "dense", {}, tmp_path / "out", progress=False, log=lambda *a: None)
    assert list(tmp_path.iterdir()) == []
