"""Packed ROMs + sealed manifest (v2): round trip, $readmemh format, ROM files = memory images with their
kind, the seal over every field, reference vectors, --out safety, and every way a manifest can be broken."""
import json
import shutil

import numpy as np
import pytest

from sparsyn.sw.array_format import array_layouts, check_array
from sparsyn.sw.compress import compress
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.manifest import (VERSION, check_reference, load_manifest, load_reference, read_manifest_json,
                                 reseal, sha256_file, write_manifest)
from sparsyn.sw.rom import format_readmemh, read_readmemh, to_signed, to_unsigned
from sparsyn.sw.schedule import ArrayConfig, effective_weights
from sparsyn.sw.schemes import ROM_KINDS, get_scheme

#: The shared array format's ROMs and the kind each must be listed with.
ARRAY_ROM_KINDS = {"weights": "weights", "lanes": "index", "passes": "table", "bias": "constants",
                   "requant": "constants"}


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "dense"
    report = compress("default", "dense", {}, out, progress=False, log=lambda *a: None)
    return out, report


@pytest.fixture
def broken(dense_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(dense_dir[0], dst)
    return dst


def test_readmemh_format_and_twos_complement(tmp_path):
    assert format_readmemh(to_unsigned([-128, -1, 0, 5, 127], 8), 8) == "80\nff\n00\n05\n7f\n"
    assert format_readmemh([1, 0x1ff], 9) == "001\n1ff\n"
    assert list(to_signed([0x80, 0xff, 0x7f], 8)) == [-128, -1, 127]
    with pytest.raises(ValueError):
        to_unsigned([256], 8)


def _expected_dense_images(w, n, k, rows, cols):
    """The dense weight and lane-slot images of an N x K matrix on R x C, rebuilt here independently:
    per section of C channels one slot per input k (lane = k), R slots per pass, pass-major words of C
    8-bit entries; returns (weight words, k of each word's slot or -1 for a pad slot)."""
    words, slot_k = [], []
    passes = -(-k // rows)
    for s in range(-(-n // cols)):
        for p in range(passes):
            for r in range(rows):
                kk = p * rows + r
                word = 0
                if kk < k:
                    for c in range(cols):
                        if s * cols + c < n:
                            word |= (int(w[s * cols + c, kk]) & 0xff) << (8 * c)
                words.append(word)
                slot_k.append(kk if kk < k else -1)
    return words, slot_k


def test_round_trip_rom_files_are_the_memory_images(dense_dir):
    """v2 manifest: array, ROM records with kind, no constants in the JSON; the ROM files read back raw
    are exactly the engine's memory images of the quantized model, and decode to its weights/constants."""
    out, report = dense_dir
    model, packed, doc = load_manifest(out)
    assert doc["version"] == VERSION == 2 and doc["scheme"] == "dense"
    assert doc["array"] == {"rows": 4, "cols": 4} and report["array"] == {"rows": 4, "cols": 4}
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    from sparsyn.sw.quantize import quantize_model
    ref = quantize_model(default_model(progress=False), digits())
    total = 0
    for a, b in zip(model.compute_layers, ref.compute_layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert np.array_equal(a.mult, b.mult) and np.array_equal(a.shift, b.shift)
        rec = next(r for r in doc["layers"] if r["name"] == a.name)
        assert not {"bias", "mult", "shift", "weight"} & set(rec)          # constants live in ROMs only
        assert {name: info["kind"] for name, info in rec["roms"].items()} == ARRAY_ROM_KINDS
        assert rec["pack"]["array"] == {"rows": 4, "cols": 4, "lanes": 1}
        for name, info in rec["roms"].items():
            assert info["kind"] in ROM_KINDS and info["sha256"] == sha256_file(out / info["file"])
            assert info["file"] == f"{a.name}.{name}.hex"
            total += info["width"] * info["depth"]
        # the weight and lane ROM files, read raw, are the images rebuilt independently from the weights
        words, slot_k = _expected_dense_images(b.weight, b.n, b.k, 4, 4)
        wi = rec["roms"]["weights"]
        assert (wi["width"], wi["depth"]) == (4 * 8, max(2, len(words)))
        assert read_readmemh(out / wi["file"], wi["width"], wi["depth"])[:len(words)] == words
        li = rec["roms"]["lanes"]
        lanes = read_readmemh(out / li["file"], li["width"], li["depth"])
        lay = array_layouts(packed[a.name].meta, get_scheme("dense").entry_layout(packed[a.name]))["lanes"]
        kh, kw = a.kernel
        for word, kk in zip(lanes, slot_k):
            d = lay.from_bits(word)[0]
            assert int(d.valid) == (kk >= 0)
            if kk >= 0:
                assert (int(d.channel) * kh + int(d.dy)) * kw + int(d.dx) == kk
    # every stored bit is listed in the manifest, and the report counts exactly those
    assert report["stored_bits"] == total == sum(p.rom_bits for p in packed.values())
    assert report["weight_bits"] + report["index_bits"] + report["other_bits"] == total
    assert report["index_bits"] > 0 and report["rate_vs_int8"] < report["weights_rate_vs_int8"]
    assert report["accuracy"]["int"] > 95


def test_reference_vectors_are_stored_and_checked(dense_dir):
    out, _ = dense_dir
    model, _, doc = load_manifest(out)
    assert doc["reference"]["images"] == 4 and doc["reference"]["layers"] == [l.name for l in model.layers]
    x, ref = load_reference(out)
    assert x.shape == (4, *model.input_shape) and set(ref) == {l.name for l in model.layers}
    assert check_reference(out) == {"images": 4, "layers": len(model.layers)}


@pytest.mark.parametrize("array", [ArrayConfig(4, 4), ArrayConfig(3, 5), ArrayConfig(8, 2)])
def test_dense_schedule_and_pack_for_any_array(dense_dir, array):
    """The array given as ``array=`` (replaces section_height): the schedule computes the decoded matrix,
    the pack decodes back, and a layer packed for one array is refused on another."""
    model, packed, _ = load_manifest(dense_dir[0])
    dense = get_scheme("dense")
    for layer in model.compute_layers:
        scheme = dense(array=array)
        prog, _ = scheme.schedule(layer)
        p = scheme.pack(layer)
        w = effective_weights(prog, lambda e: dense.entry_coefficients(p, e))
        assert np.array_equal(w, layer.weight)
        passes = -(-layer.n // array.cols) * -(-layer.k // array.rows)
        assert len(prog.passes) == passes == p.meta["passes"]
        assert p.meta["array"] == {"rows": array.rows, "cols": array.cols, "lanes": 1}
        assert p.roms["weights"].depth == max(2, passes * array.rows)
        assert np.array_equal(dense.decode(p), layer.weight)
        check_array(p, array)
        if (array.rows, array.cols) != (4, 4):
            with pytest.raises(SparsynError, match=f"packed for {array.rows}x{array.cols}, not 4x4"):
                check_array(p, ArrayConfig(4, 4))
            with pytest.raises(SparsynError, match="packed for 4x4"):
                check_array(packed[layer.name], array)


def _edit_manifest(path, fn):
    doc = json.loads((path / "manifest.json").read_text())
    fn(doc)
    (path / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("version", [1, 99])
def test_other_versions_are_refused(broken, version):
    _edit_manifest(broken, lambda d: d.update(version=version))
    with pytest.raises(SparsynError, match=f"version {version}.*re-run 'sparsyn compress'") as err:
        load_manifest(broken)
    assert "\n" not in str(err.value)


def _first_pack_number(doc):
    pack = doc["layers"][0]["pack"]
    key = next(k for k, v in pack.items() if isinstance(v, int) and not isinstance(v, bool))
    pack[key] += 100000


def _rom_width(doc):
    doc["layers"][0]["roms"]["bias"]["width"] += 100000


@pytest.mark.parametrize("edit", [
    _first_pack_number,                                                      # a value inside a layer's pack meta
    lambda d: d["model"].update(input_scale=d["model"]["input_scale"] + 100000),
    lambda d: d["layers"][-1]["weight_scale"].__setitem__(0, d["layers"][-1]["weight_scale"][0] + 100000),
    lambda d: d["layers"][0].update(relu=not d["layers"][0]["relu"]),
    lambda d: d["options"].update(extra=1),
    lambda d: d["array"].update(cols=d["array"]["cols"] + 100000),
    _rom_width,
    lambda d: d["reference"].update(images=5),
    lambda d: d.pop("seal"),
], ids=["pack", "input_scale", "weight_scale", "relu", "options", "array", "rom_width", "reference", "no_seal"])
def test_any_edit_of_the_manifest_is_refused_by_the_seal(broken, edit):
    """Refused by the seal — or earlier, by the schema, when the edit also breaks a field's range."""
    _edit_manifest(broken, edit)
    for load in (load_manifest, read_manifest_json):
        with pytest.raises(SparsynError, match="does not match its seal|is malformed at") as err:
            load(broken)
        assert "\n" not in str(err.value)


def test_checksum_mismatch_is_refused(broken):
    rom = broken / "conv1.weights.hex"
    lines = rom.read_text().splitlines()
    lines[0] = "0" * len(lines[0]) if set(lines[0]) != {"0"} else "1".zfill(len(lines[0]))
    rom.write_text("\n".join(lines) + "\n")
    with pytest.raises(SparsynError, match="checksum mismatch.*conv1.weights.hex") as err:
        load_manifest(broken)
    assert "\n" not in str(err.value)


def test_resealed_rom_edit_loads_but_fails_the_reference_vectors(broken):
    """A deliberate edit sealed again loads (seal and checksums fit), but no longer computes what was
    compressed: the stored reference vectors refuse it; resealing with reference=True accepts it."""
    rom = broken / "fc.bias.hex"
    lines = rom.read_text().splitlines()
    word = int(lines[0], 16) ^ (1 << 20)                      # bias of output channel 0, +-2**20
    lines[0] = f"{word:0{len(lines[0])}x}"
    rom.write_text("\n".join(lines) + "\n")
    with pytest.raises(SparsynError, match="checksum mismatch.*fc.bias.hex"):
        load_manifest(broken)
    reseal(broken)
    model, _, doc = load_manifest(broken)
    with pytest.raises(SparsynError, match="no longer computes what was compressed.*layer fc") as err:
        check_reference(broken, model, doc)
    assert "\n" not in str(err.value)
    reseal(broken, reference=True)
    assert check_reference(broken)["images"] == 4


def test_rom_of_wrong_length_is_refused(broken):
    rom = broken / "fc.weights.hex"
    rom.write_text("".join(rom.read_text().splitlines(keepends=True)[:-1]))
    depth = next(r for r in read_manifest_json(broken)["layers"] if r["name"] == "fc")["roms"]["weights"]["depth"]
    reseal(broken)   # checksums and seal made consistent, so only the length check can catch it
    with pytest.raises(SparsynError, match=f"has {depth - 1} words but the manifest says {depth}"):
        load_manifest(broken)


@pytest.mark.parametrize("kind,needle", [("weights", "expects index"), ("bogus", "'bogus' is not one of")])
def test_rom_listed_with_the_wrong_kind_is_refused(broken, kind, needle):
    """A valid but wrong kind is refused by the loader; an unknown kind already by the schema (even resealing
    refuses it)."""
    def fix(doc):
        next(r for r in doc["layers"] if r["name"] == "conv2")["roms"]["lanes"]["kind"] = kind
    _edit_manifest(broken, fix)
    with pytest.raises(SparsynError, match=needle) as err:
        reseal(broken)
        load_manifest(broken)
    assert "\n" not in str(err.value)


def test_missing_rom_file_is_refused(broken):
    (broken / "conv2.weights.hex").unlink()
    with pytest.raises(SparsynError, match="missing"):
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


def _rewrite(src, dst):
    model, packed, doc = load_manifest(src)
    x, ref = load_reference(src, doc)
    return write_manifest(dst, model, packed, doc["scheme"], doc["options"], ArrayConfig(4, 4),
                          reference={"input": x, **ref})


def test_out_refuses_a_foreign_folder_and_replaces_a_previous_output(dense_dir, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SparsynError, match="non-empty folder that sparsyn compress did not write") as err:
        _rewrite(dense_dir[0], foreign)
    assert "\n" not in str(err.value)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep me"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(SparsynError, match="existing file"):
        _rewrite(dense_dir[0], afile)
    # a previous sparsyn output is replaced as a whole (a stale file of it disappears); an empty folder is used
    prev = tmp_path / "prev"
    shutil.copytree(dense_dir[0], prev)
    (prev / "stale.hex").write_text("00\n")
    _rewrite(dense_dir[0], prev)
    assert not (prev / "stale.hex").exists() and load_manifest(prev)[2]["scheme"] == "dense"
    empty = tmp_path / "empty"
    empty.mkdir()
    _rewrite(dense_dir[0], empty)
    assert check_reference(empty)["images"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "mine", "prev"]   # nothing staged left


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
