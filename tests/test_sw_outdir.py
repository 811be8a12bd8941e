"""Output folders (``sw/outdir.py``): sparsyn never deletes or overwrites what it did not write, refuses
dangerous or unwritable places before any work, refuses a second writer, and an error or an interruption
(Ctrl-C, SIGTERM) leaves no half-written folder. Each refusal: one line, non-zero exit, nothing written."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.outdir import check_out, output_lock, source_root, staged_output


def sparsyn(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("where,needle", [
    (lambda t: ".", "is the current folder or contains it"),
    (lambda t: "..", "is the current folder or contains it"),
    (lambda t: str(Path.home()), "home folder"),
    (lambda t: "/", "filesystem root"),
    (lambda t: str(source_root() / "sw"), "inside sparsyn's source tree"),
    (lambda t: "/proc/sparsyn-out", "kernel / device tree"),
    (lambda t: "/dev/null", "kernel / device tree"),
    (lambda t: "/sys/x", "kernel / device tree"),
])
def test_protected_places_are_refused_before_any_work(tmp_path, where, needle):
    r = sparsyn("compress", "--out", where(tmp_path), "--quiet", cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_place_is_refused_before_any_work(tmp_path):
    if os.geteuid() == 0:
        ro = Path("/proc/sys")          # root can write anywhere on disk; a read-only mount stands in
        with pytest.raises(SparsynError, match="kernel / device tree"):
            check_out(ro / "out", "manifest.json")
        return
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    t0 = time.time()
    r = sparsyn("compress", "--out", str(locked / "out"), "--quiet")
    assert r.returncode == 2 and "is not writable" in r.stderr and time.time() - t0 < 30


def test_existing_file_and_foreign_folders_untouched(tmp_path):
    f = tmp_path / "thesis.txt"
    f.write_text("mine")
    r = sparsyn("compress", "--out", str(f), "--quiet")
    assert r.returncode == 2 and "is an existing file" in r.stderr and f.read_text() == "mine"
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("x")
    for cmd in (["compress"], ["generate", "--manifest", str(tmp_path / "nope")], ["run", "--no-rtl"]):
        r = sparsyn(*cmd, "--out", str(d))
        assert r.returncode == 2 and "non-empty folder that sparsyn" in r.stderr, (cmd, r.stderr)
        assert [p.name for p in d.iterdir()] == ["thesis.txt"] and (d / "thesis.txt").read_text() == "x"


def test_staged_output_is_atomic(tmp_path):
    """The stage replaces the folder only on success; an error or Ctrl-C inside leaves the previous output
    (and nothing else) in place."""
    out = tmp_path / "o"
    with staged_output(out, "mark") as stage:
        (stage / "a").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a", "mark"]
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with staged_output(out, "mark") as stage:
                (stage / "b").write_text("2")
                raise exc()
        assert sorted(p.name for p in out.iterdir()) == ["a", "mark"] and leftovers(tmp_path) == []
    with staged_output(out, "mark") as stage:
        (stage / "c").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c", "mark"] and leftovers(tmp_path) == []


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "busy"
    with output_lock(out):
        r = sparsyn("compress", "--out", str(out), "--quiet")
        assert r.returncode == 2 and "another sparsyn run is writing" in r.stderr, r.stderr
        with pytest.raises(SparsynError, match="another sparsyn run is writing"):
            with staged_output(out, "manifest.json"):
                pass
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_compress_leaves_nothing(tmp_path, sig, code):
    """Ctrl-C / SIGTERM in the middle of ``compress`` (training, then writing): one line, exit 130 / 143, no
    output folder, no stage, no lock left behind."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sparsyn.sw.cli", "compress", "--scheme", "permdiag", "--opt",
                             "epochs=1000", "--out", str(out), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(6)                       # past start-up, inside the work
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and "nothing half-written is left" in err, err
    assert not out.exists() and leftovers(tmp_path) == []


def test_interrupted_generate_and_build_leave_nothing(tmp_path):
    """SIGTERM while ``build`` runs the FPGA tools (they are stopped too) and while ``generate`` elaborates: no
    build / RTL folder, no stage, no lock; a finished generate into the same folder then works."""
    man = tmp_path / "m"
    assert sparsyn("compress", "--out", str(man), "--quiet").returncode == 0
    for cmd, wait in ((["build", "--board", "icebreaker", "--manifest", str(man), "--layer", "fc", "--no-progress"],
                       8), (["generate", "--manifest", str(man), "--model-top"], 1.5)):
        out = tmp_path / cmd[0]
        proc = subprocess.Popen([sys.executable, "-m", "sparsyn.sw.cli", *cmd, "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(wait)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, (cmd, err)
        assert not out.exists() and leftovers(tmp_path) == [], (cmd, leftovers(tmp_path))
    r = sparsyn("generate", "--manifest", str(man), "--out", str(tmp_path / "generate"))
    assert r.returncode == 0 and (tmp_path / "generate" / "sparsyn-rtl.json").is_file()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_swallowed_by_a_destructor_still_stops_the_output(tmp_path):
    """Python ignores an exception raised while a ``__del__`` runs: a SIGTERM landing there must still keep the output
    folder from being put in place (the handler remembers it; the stage checks before committing)."""
    from sparsyn.sw import interrupt

    class Victim:
        def __del__(self):
            interrupt.on_sigterm(signal.SIGTERM, None)         # raises inside __del__: printed and ignored

    out = tmp_path / "out"
    try:
        with pytest.raises(interrupt.Terminated):
            with staged_output(out, "manifest.json"):
                victim = Victim()
                del victim
    finally:
        interrupt.reset()
    assert not out.exists() and leftovers(tmp_path) == []
