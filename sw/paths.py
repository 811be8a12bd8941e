"""Where generated output goes: one git-ignored work folder, ``./work`` unless ``SPARSYN_WORK`` says otherwise."""
import os
from pathlib import Path


def work_dir() -> Path:
    """The root of all generated output (Verilog, ROMs, builds, caches, waveforms)."""
    return Path(os.environ.get("SPARSYN_WORK", "work")).resolve()


def cache_dir() -> Path:
    path = work_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
