"""Output folders: sparsyn never deletes or overwrites anything it did not write, and never leaves half a folder.

Every command that writes a folder (``compress``, ``generate``, ``run``, ``build``, ``sweep``) goes through here:

* :func:`check_out` — before any work: refuses (one line) an existing file, ``.`` / the current folder or any
  folder that contains it, the home folder, the filesystem root, the sparsyn source tree, kernel / device
  trees (``/proc``, ``/sys``, ``/dev``), a non-empty folder that is not a previous output of the same command
  (recognised by its **marker file**), and a place that cannot be written (the nearest existing folder must be
  writable);
* :func:`staged_output` — holds the folder's lock (a second run to the same ``--out`` is refused in one line),
  lets the caller write everything into a hidden stage folder next to it, and only then replaces the folder
  atomically (rename the old one away, rename the stage in, delete the old one). An error or an interruption
  (Ctrl-C, SIGTERM: the CLI turns it into an exception) deletes the stage and leaves the old folder untouched.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import SparsynError
from .interrupt import check_terminated

#: Trees no output folder may be in.
SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))


def source_root() -> Path:
    """The folder holding sparsyn's own source packages (``sw/``, ``hw/``, ...)."""
    return Path(__file__).resolve().parents[1]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out(out, marker, what: str = "--out", command: str = "sparsyn") -> Path:
    """The resolved output folder, after refusing (one line, naming the problem and the fix) any folder sparsyn
    may not write or replace; ``marker`` is the file (or a tuple of files, any of them) that marks a previous
    output of this command."""
    markers = (marker,) if isinstance(marker, str) else tuple(marker)
    raw = str(out)
    out = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if out == Path(out.anchor) or out == Path.home().resolve():
        raise SparsynError(f"{what} {out} is the filesystem root or your home folder; choose a new folder inside it")
    if raw.strip() in ("", ".", "..") or out == cwd or out in cwd.parents:
        raise SparsynError(f"{what} {raw} is the current folder or contains it; it would be replaced as a whole — "
                           "choose a new folder, e.g. work/out")
    src = source_root()
    if out == src or out in src.parents or src in out.parents and (src / "work") not in [out, *out.parents]:
        raise SparsynError(f"{what} {out} is inside sparsyn's source tree; write under its work/ folder or elsewhere")
    if any(out == t or t in out.parents for t in SYSTEM_TREES):
        raise SparsynError(f"{what} {out} is in a kernel / device tree; choose a folder on a disk")
    if out.exists() and not out.is_dir():
        raise SparsynError(f"{what} {out} is an existing file; choose a folder name")
    if out.is_dir():
        try:
            entries = list(out.iterdir())
        except OSError as err:
            raise SparsynError(f"{what} {out} cannot be read ({err.strerror}); choose another folder") from None
        if entries and not any((out / m).is_file() for m in markers):
            raise SparsynError(f"{what} {out} is a non-empty folder that {command} did not write (no {markers[0]} "
                               "in it); choose a new or empty folder")
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise SparsynError(f"{what} {out}: {base} is a file, not a folder; choose another place")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SparsynError(f"cannot write {what} {out} ({base} is not writable); choose a writable folder")
    return out


@contextmanager
def output_lock(out: Path, what: str = "--out"):
    """Hold ``.<name>.lock`` next to ``out`` for the duration (``flock``); a second holder is refused in one line.
    The holder deletes the lock file while still holding it; a run that opened the deleted file retries on the
    new one, so two runs never both hold the lock."""
    import fcntl
    out = Path(out)
    path = out.parent / f".{out.name}.lock"
    while True:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
        except OSError as err:
            raise SparsynError(f"cannot write {what} {out} ({err.strerror}); choose a writable folder") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            fh.close()
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SparsynError(f"another sparsyn run is writing {what} {out} right now; wait for it to finish "
                                   "or choose another folder") from None
            raise
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break                               # the lock file we hold is the one at the path
        except FileNotFoundError:
            pass
        fh.close()                                  # a stale (deleted) lock file: retry on the new one
    try:
        yield
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        fh.close()


@contextmanager
def staged_output(out, marker, what: str = "--out", command: str = "sparsyn"):
    """``with staged_output(out, marker) as stage:`` write the whole output into ``stage``; on leaving the block
    normally it replaces ``out`` atomically (the marker is written into the stage first). On any exception the
    stage is deleted and ``out`` is left as it was. ``out`` is checked (:func:`check_out`) under the lock."""
    out = check_out(out, marker, what, command)
    with output_lock(out, what):
        out = check_out(out, marker, what, command)          # again, under the lock
        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        except OSError as err:
            raise SparsynError(f"cannot write {what} {out} ({err.strerror}); choose a writable folder") from None
        try:
            (stage / (marker if isinstance(marker, str) else marker[0])).touch()
            yield stage
            check_terminated()                     # a SIGTERM whose exception a __del__ swallowed
            replace_folder(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise


def replace_folder(stage: Path, out: Path) -> None:
    """Move ``stage`` to ``out``; an existing ``out`` (checked to be ours) is renamed away first, then deleted."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.rename(out, old / "prev")
        try:
            os.rename(stage, out)
        except BaseException:
            os.rename(old / "prev", out)          # put the previous output back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, out)
