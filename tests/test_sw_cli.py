"""The CLI as a user runs it: help, compress (for an --array), run --no-rtl, and one-line errors with
non-zero exit and no output left."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

ROMS = ("bias", "lanes", "passes", "requant", "weights")


def sparsyn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """``sparsyn compress`` of the default model with dense for a 3x5 array (not the default 4x4)."""
    out = tmp_path_factory.mktemp("cli") / "digits"
    r = sparsyn("compress", "--model", "default", "--scheme", "dense", "--array", "3x5", "--out", str(out), "--quiet")
    return out, r


def test_help_lists_commands():
    r = sparsyn("--help")
    assert r.returncode == 0
    for cmd in ("run", "compress", "schemes"):
        assert cmd in r.stdout
    for cmd in ("compress", "run"):
        r = sparsyn(cmd, "--help")
        assert r.returncode == 0 and "--array" in r.stdout


def test_compress_default_writes_manifest_roms_and_report(compressed):
    out, r = compressed
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["int"] > 95 and "integer" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{layer}.{rom}.hex" for layer in ("conv1", "conv2", "fc") for rom in ROMS]
        + ["descriptor.hex", "manifest.json", "reference.npz", "report.json"])
    # --array reaches the packing: the manifest, the report and every layer record the 3x5 array
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["array"] == report["array"] == {"rows": 3, "cols": 5}
    assert [rec["pack"]["array"] for rec in doc["layers"] if "roms" in rec] == [{"rows": 3, "cols": 5, "lanes": 1}] * 3
    # the printed table splits the stored bits and gives both rates
    header = next(line for line in r.stdout.splitlines() if line.startswith("layer"))
    for col in ("weight_bits", "index_bits", "other_bits", "stored_bits", "rate_vs_int8", "rate_vs_fp32",
                "weights_rate_vs_int8"):
        assert col in header.split()
    assert "TOTAL" in r.stdout and "3x5" in r.stdout
    # the sequenced engine's per-layer descriptor table is stored too: its own row, counted in the total
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("descriptor"))
    assert int(row[-5]) == report["descriptor_bits"] == doc["descriptor"]["width"] * doc["descriptor"]["depth"] > 0


def test_run_table_splits_stored_bits_per_scheme(compressed, tmp_path):
    """``sparsyn run --no-rtl`` (dense only, 3x5): the table row carries the stored-bit split from the
    manifest's ROM records, the rates from the total and the weights-only rate as a second column."""
    from sparsyn.sw.cmd_run import COLUMNS, rtl_row
    for col in ("weight_bits", "index_bits", "other_bits", "stored_bits", "rate_vs_int8", "rate_vs_fp32",
                "weights_rate_vs_int8", "rtl_cycles", "rtl_bit_exact", "cycles_exact"):
        assert col in COLUMNS
    out = tmp_path / "run"
    r = sparsyn("run", "--no-rtl", "--schemes", "dense", "--array", "3x5", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "run-report.json").read_text())
    assert doc["array"] == "3x5"
    (row,) = doc["table"]
    manifest = json.loads((out / "dense" / "manifest.json").read_text())
    assert manifest["array"] == {"rows": 3, "cols": 5}
    kinds = {"weights": 0, "index": 0, "table": 0, "constants": 0}
    dense = 0
    for rec in manifest["layers"]:
        for rom in rec.get("roms", {}).values():
            kinds[rom["kind"]] += rom["width"] * rom["depth"]
        if "roms" in rec:
            dense += rec["pack"]["n"] * rec["pack"]["k"]
    kinds["table"] += manifest["descriptor"]["width"] * manifest["descriptor"]["depth"]   # the per-layer table
    stored = sum(kinds.values())
    assert (row["weight_bits"], row["index_bits"], row["other_bits"], row["stored_bits"]) == \
        (kinds["weights"], kinds["index"], kinds["table"] + kinds["constants"], stored)
    assert row["stored_bits"] == doc["schemes"]["dense"]["compress"]["stored_bits"]
    assert row["rate_vs_int8"] == pytest.approx(8 * dense / stored)
    assert row["rate_vs_fp32"] == pytest.approx(32 * dense / stored)
    assert row["weights_rate_vs_int8"] == pytest.approx(8 * dense / kinds["weights"])
    assert row["rate_vs_int8"] < row["weights_rate_vs_int8"] <= 1.0      # dense: index + other cost extra
    header = next(line for line in r.stdout.splitlines() if line.startswith("scheme"))
    assert header.split() == COLUMNS
    # the RTL columns: bit-exact needs golden and reference agreement, cycles_exact every layer exact
    ok = {"bit_exact": True, "reference_exact": True, "cycles_exact": True, "cycles_measured": 100, "utilization": 0.5}
    assert rtl_row([ok, {**ok, "cycles_measured": 300, "utilization": 0.1}]) == {
        "rtl_layers": 2, "rtl_bit_exact": True, "rtl_cycles": 400, "cycles_exact": True,
        "rtl_utilization": pytest.approx((50 + 30) / 400)}
    # a stream unit's row (a pool: no PEs) adds its cycles, not to the utilization's weights
    pool = {**ok, "scheme": "maxpool", "cycles_measured": 50, "utilization": None}
    assert rtl_row([ok, pool, {**ok, "cycles_measured": 300, "utilization": 0.1}]) == {
        "rtl_layers": 3, "rtl_bit_exact": True, "rtl_cycles": 450, "cycles_exact": True,
        "rtl_utilization": pytest.approx((50 + 30) / 400)}
    assert rtl_row([ok, {**ok, "reference_exact": False}])["rtl_bit_exact"] is False
    bad = rtl_row([ok, {**ok, "cycles_exact": False}])
    assert bad["rtl_bit_exact"] is True and bad["cycles_exact"] is False
    failed = rtl_row([ok, {**ok, "bit_exact": False, "cycles_exact": None, "cycles_measured": None,
                           "utilization": None}])
    assert failed["rtl_bit_exact"] is False and failed["cycles_exact"] is False and failed["rtl_cycles"] is None


def _grouped(tmp_path):
    path = tmp_path / "grouped.pt"
    torch.save(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2)), path)   # 2 of 4 channels (groups=4: depthwise, imported)
    return path


def _unsupported(tmp_path):
    path = tmp_path / "tanh.pt"
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()), path)
    return path


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x00garbage")
    return path


@pytest.mark.parametrize("make_args,needle", [
    (lambda t: ["--model", str(t / "missing.pt")], "not found"),
    (lambda t: ["--model", str(_corrupt(t))], "could not be loaded"),
    (lambda t: ["--model", str(_grouped(t))], "grouped Conv2d"),
    (lambda t: ["--model", str(_unsupported(t))], "Tanh"),
    (lambda t: ["--scheme", "nope"], "unknown scheme"),
    (lambda t: ["--opt", "novalue"], "NAME=VALUE"),
    (lambda t: ["--opt", "x=1"], "has no option"),
    (lambda t: ["--array", "4x0"], "zero dimension"),
    (lambda t: ["--array", "four"], "not of the form RxC"),
    # options that duplicated the array geometry are gone: --array replaces them
    (lambda t: ["--scheme", "packcnn", "--opt", "section_height=4"], "has no option 'section_height'"),
    (lambda t: ["--scheme", "ternary", "--opt", "cols=4"], "has no option 'cols'"),
    (lambda t: ["--scheme", "ternary", "--opt", "packing=trit5"], "has no option 'packing'"),
    # a tight group cannot be wider than the array's columns (the rows of its section)
    (lambda t: ["--scheme", "tight", "--opt", "alpha=8"], "exceeds the 4 columns of the 4x4 array"),
    (lambda t: ["--scheme", "tight", "--opt", "alpha=4", "--array", "8x2"], "exceeds the 2 columns"),
    # permdiag: p < 2, p larger than the layer, padding off and p not dividing, a kh x kw conv named
    (lambda t: ["--scheme", "permdiag", "--opt", "p=1"], "p must be in 2..256"),
    (lambda t: ["--scheme", "permdiag", "--opt", "p=16"], "p=16 is larger than layer fc (10 x 64)"),
    (lambda t: ["--scheme", "permdiag", "--opt", "p=3", "--opt", "pad=0"], "does not divide layer fc (10 x 64) and "
                                                                             "pad=0"),
    (lambda t: ["--scheme", "permdiag", "--opt", "layer_p=conv2=4"], "3x3 conv; permdiag compresses FC and 1x1 "
                                                                     "layers only"),
    (lambda t: ["--scheme", "permdiag", "--opt", "layer_p=fc9=4"], "names 'fc9', which is not a conv/linear"),
])
def test_bad_input_one_line_error_nonzero_exit_nothing_written(tmp_path, make_args, needle):
    out = tmp_path / "out"
    r = sparsyn("compress", *make_args(tmp_path), "--out", str(out), "--quiet")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsyn: error:") and needle in lines[0], r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_out_refuses_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    r = sparsyn("compress", "--model", "default", "--out", str(out), "--quiet")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-empty folder that sparsyn compress did not write" in lines[0], r.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # refused before any work: the (missing) model is not even looked at
    r = sparsyn("compress", "--model", str(tmp_path / "missing.pt"), "--out", str(out), "--quiet")
    assert r.returncode == 2 and "non-empty folder that sparsyn compress did not write" in r.stderr, r.stderr


def test_bad_manifest_and_array_via_cli(tmp_path, compressed):
    r = sparsyn("generate", "--manifest", str(tmp_path / "none"), "--out", str(tmp_path / "v"))
    if "invalid choice" in r.stderr:
        pytest.skip("generate command not built")
    assert r.returncode == 2 and "not found" in r.stderr
    # the manifest was packed for 3x5: another --array is refused in one line, saying to re-run compress
    r = sparsyn("generate", "--manifest", str(compressed[0]), "--array", "4x4", "--out", str(tmp_path / "v"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "packed for a 3x5 array, not 4x4" in lines[0] and "sparsyn compress --array 4x4" in lines[0]
    assert not (tmp_path / "v").exists()
