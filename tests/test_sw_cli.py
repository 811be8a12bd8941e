"""The CLI as a user runs it: help, compress, and one-line errors with non-zero exit and no output left."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn


def sparsyn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_help_lists_commands():
    r = sparsyn("--help")
    assert r.returncode == 0
    for cmd in ("run", "compress", "schemes"):
        assert cmd in r.stdout


def test_compress_default_writes_manifest_roms_and_report(tmp_path):
    out = tmp_path / "digits"
    r = sparsyn("compress", "--model", "default", "--scheme", "dense", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["int"] > 95 and "integer" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["conv1.weights.hex", "conv2.weights.hex", "fc.weights.hex",
                                                     "manifest.json", "report.json"]


def _grouped(tmp_path):
    path = tmp_path / "grouped.pt"
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, groups=2)), path)
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
])
def test_bad_input_one_line_error_nonzero_exit_nothing_written(tmp_path, make_args, needle):
    out = tmp_path / "out"
    r = sparsyn("compress", *make_args(tmp_path), "--out", str(out), "--quiet")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsyn: error:") and needle in lines[0], r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_manifest_and_array_via_cli(tmp_path):
    r = sparsyn("generate", "--manifest", str(tmp_path / "none"), "--out", str(tmp_path / "v"))
    if "invalid choice" in r.stderr:
        pytest.skip("generate command not built")
    assert r.returncode == 2 and "not found" in r.stderr
