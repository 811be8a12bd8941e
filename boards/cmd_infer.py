"""``sparsyn infer``: run test images on a board (or its simulated RTL) and check every output."""
from __future__ import annotations

from .platforms import BOARDS


def add_parser(sub):
    p = sub.add_parser("infer", help="run test images on a flashed board over UART, bit-exact vs the golden model",
                       description="Streams test images to the board's inference bitstream over its UART host link, "
                                   "reads the logits, checks every one against the golden model and prints accuracy, "
                                   "on-chip cycles, link and wall time per image. --port sim runs the same host code "
                                   "against the RTL of the same top in Amaranth's simulator, --port sim:icarus / "
                                   "sim:verilator against its Verilog in Icarus / Verilator (cocotb); the UART at "
                                   "bit level.")
    p.add_argument("--board", required=True, metavar="NAME", help=f"one of: {', '.join(BOARDS)}")
    p.add_argument("--manifest", required=True, metavar="PATH", help="the compressed model the board was built for")
    p.add_argument("--port", required=True, metavar="DEV",
                   help="serial port (e.g. /dev/ttyUSB1), or a simulated board: sim (= sim:amaranth), sim:icarus, "
                        "sim:verilator")
    p.add_argument("--images", type=int, default=10, metavar="N", help="test images (default 10)")
    p.add_argument("--data", metavar="FILE.npz",
                   help="stream the test split of this data (default: the data the manifest was compressed with)")
    p.add_argument("--baud", type=int, default=None, metavar="RATE", help="UART rate the bitstream was built with "
                   "(default 1000000)")
    p.add_argument("--weights", choices=("auto", "ebr", "spram", "passstore"), default="auto",
                   help="as given to 'sparsyn build' (spram, passstore: the weights are loaded over the link first)")
    p.add_argument("--scratch", choices=("auto", "ebr", "spram"), default="auto",
                   help="as given to 'sparsyn build' (where the activation scratch is)")
    p.add_argument("--acts", choices=("auto", "ebr", "spram"), default="auto",
                   help="as given to 'sparsyn build' (where the activation buffer is)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds to wait for a reply (default 2)")
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from sparsyn.sw.errors import SparsynError
    from sparsyn.sw.report import write_json

    from .infer import DEFAULT_BAUD, format_infer, run_infer
    if not Path(args.manifest).exists():
        raise SparsynError(f"manifest {args.manifest} does not exist; create one with 'sparsyn compress --out DIR'")
    report = run_infer(args.manifest, args.board, args.port, images=args.images, baud=args.baud or DEFAULT_BAUD,
                       timeout_s=args.timeout, weights=args.weights, scratch=args.scratch, acts=args.acts,
                       data=args.data)
    print(format_infer(report))
    if args.report:
        write_json(Path(args.report), report)
    return 0
