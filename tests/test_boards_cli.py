"""``sparsyn build`` as a user runs it: help lists the boards; bad input is one line on stderr, exit 2."""
import subprocess
import sys

import pytest

from sparsyn.boards.platforms import BOARDS


def sparsyn(*args):
    return subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_build_help_lists_every_board_and_option():
    r = sparsyn("build", "--help")
    assert r.returncode == 0
    for name in BOARDS:
        assert name in r.stdout
    for opt in ("--board", "--array", "--manifest", "--layer", "--out"):
        assert opt in r.stdout


def _one_line_error(r):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsyn: error: "), r.stderr
    return lines[0]


def test_unknown_board_is_one_line_listing_known_boards(tmp_path):
    line = _one_line_error(sparsyn("build", "--board", "arty", "--out", str(tmp_path / "o")))
    assert "unknown board 'arty'" in line and all(name in line for name in BOARDS)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("array", ["0x4", "-1x2", "2.5x2", "4"])
def test_bad_array_is_one_line(array, tmp_path):
    line = _one_line_error(sparsyn("build", "--board", "icebreaker", f"--array={array}", "--out", str(tmp_path / "o")))
    assert "array size" in line and "--array 4x4" in line
    assert not (tmp_path / "o").exists()


def test_missing_manifest_is_one_line(tmp_path):
    line = _one_line_error(sparsyn("build", "--board", "icebreaker", "--manifest", str(tmp_path / "nope")))
    assert "does not exist" in line and "sparsyn compress" in line
