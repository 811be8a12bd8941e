"""``sparsyn flash``: program a board with a built bitstream."""
from __future__ import annotations

from .platforms import BOARDS


def add_parser(sub):
    p = sub.add_parser("flash", help="program a board with the bitstream 'sparsyn build' made",
                       description="Loads a bitstream into a board with the programmer amaranth-boards uses for it "
                                   "(iCEBreaker: iceprog; ULX3S: openFPGALoader; OrangeCrab: dfu-util; the ICEPROG / "
                                   "OPENFPGALOADER / DFU_UTIL environment variables override the tool).")
    p.add_argument("--board", required=True, metavar="NAME", help=f"one of: {', '.join(BOARDS)}")
    p.add_argument("--bitstream", metavar="FILE", help="bitstream (default: work/build/<board>/top.bin or .bit)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .flash import flash
    flash(args.board, args.bitstream)
    return 0
