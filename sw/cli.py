"""``sparsyn`` command line: thin subcommands over library functions (each a module with add_parser/run)."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SparsynError

#: Subcommand modules, in --help order. Each has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = [
    "sparsyn.sw.cmd_run",
    "sparsyn.sw.cmd_compress",
    "sparsyn.sw.cmd_generate",
    "sparsyn.sim.cmd_sim",
    "sparsyn.sim.cmd_prove",
    "sparsyn.boards.cmd_build",
    "sparsyn.boards.cmd_flash",
    "sparsyn.boards.cmd_infer",
    "sparsyn.sw.cmd_sweep",
    "sparsyn.sw.cmd_bench",
    "sparsyn.sw.cmd_schemes",
]

DESCRIPTION = """\
sparsyn turns a PyTorch CNN into compressed, packed weight ROMs and the Verilog of an accelerator
that runs them, checks the RTL bit-exactly against an integer golden model, and builds it for
iCE40 / ECP5 boards.

typical flow:
  sparsyn run                                   everything on the built-in digits model
  sparsyn compress --model default --scheme dense --out work/digits
  sparsyn generate --manifest work/digits --out work/rtl
  sparsyn sim --manifest work/digits --simulator verilator
  sparsyn build --board icebreaker --manifest work/digits
  sparsyn flash --board icebreaker
  sparsyn infer --board icebreaker --manifest work/digits --port /dev/ttyUSB1   (or --port sim)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsyn", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # command not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv=None) -> int:
    import signal
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .interrupt import Terminated, check_terminated, on_sigterm, reset
    reset()
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = int(args.func(args) or 0)
        check_terminated()
        return code
    except SparsynError as err:
        print(f"sparsyn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparsyn: interrupted (nothing half-written is left)", file=sys.stderr)
        return 130
    except Terminated:
        print("sparsyn: terminated (nothing half-written is left)", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
