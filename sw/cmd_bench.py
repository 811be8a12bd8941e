"""``sparsyn bench``: benchmarks whose figures are measured in the same run and printed as ratios."""
from __future__ import annotations

import importlib
from pathlib import Path

from .errors import SparsynError
from .report import write_json

#: --scheme NAME -> (module, function) of that scheme's benchmark.
SCHEME_BENCHES = {
    "tight": ("sparsyn.sw.bench_tight", "run_tight_bench"),
    "packcnn": ("sparsyn.sw.bench_tight", "run_tight_bench"),
    "ternary": ("sparsyn.sw.bench_ternary", "run_ternary_bench"),
    "pattern": ("sparsyn.sw.bench_pattern", "run_pattern_bench"),
    "permdiag": ("sparsyn.sw.bench_permdiag", "run_permdiag_bench"),
}
#: The scheme benchmarks that run on worker processes (``--jobs``).
JOBS_BENCHES = {"tight", "packcnn"}


def add_parser(sub):
    p = sub.add_parser("bench", help="benchmarks: simulators, FPGA sweep, per-scheme compression",
                       description="Without flags: simulator benchmark (Verilator vs Icarus, RTL cycles vs "
                                   "the analytic model). --fpga: array-size sweep through synthesis and "
                                   "place & route. --scheme NAME: that scheme's compression/accuracy/cycle tables. "
                                   "--models: the MLPerf Tiny networks per scheme and array (stored bits, memory-level "
                                   "fit per device, cycles, latency) beside published anchors.")
    p.add_argument("--fpga", action="store_true", help="FPGA resource / Fmax sweep over array sizes")
    p.add_argument("--boards", action="store_true",
                   help="the whole digits model per board (iCEBreaker, ULX3S-85F) and scheme (inference top): LC, FF, "
                        "EBR, SPRAM, DSP, timed Fmax, cycles and images/s, array utilization, link time per image")
    p.add_argument("--board", action="append", metavar="NAME",
                   help="with --boards: only this board (repeatable; icebreaker, ulx3s-85f)")
    p.add_argument("--models", action="store_true",
                   help="the MLPerf Tiny zoo networks per scheme and array: stored bits by kind, memory-level fit on "
                        "the iCE40UP5K / ECP5-25F / ECP5-85F, cycles per inference, MAC utilization, latency at the "
                        "board bench's timed Fmax, beside published anchors (--quick: the -tiny networks)")
    p.add_argument("--network", action="append", metavar="NAME",
                   help="with --models: only this network (repeatable; ic-resnet8, kws-dscnn, vww-mobilenet, "
                        "ad-autoencoder)")
    p.add_argument("--out", metavar="DIR",
                   help="with --models: the output folder (default work/bench/models; replaced as a whole)")
    p.add_argument("--training", choices=("full", "short"), default=None,
                   help="with --models: each scheme's training (full: its defaults; short: fewer pruning steps and "
                        "epochs, same structure options and packing search; stored bits and cycles keep their "
                        "meaning, accuracy does not)")
    p.add_argument("--reuse", action="append", metavar="DIR",
                   help="with --models: the output folder of an earlier run (repeatable); its manifests of the same "
                        "network, scheme, array and options are measured again instead of compressed again (after a "
                        "change to the engines, not to a compressor)")
    p.add_argument("--mutants", action="store_true",
                   help="mutation check: apply each listed bug to a scratch copy, run its tests, report killed / "
                        "survived (every mutant must be killed; also 'make mutate')")
    p.add_argument("--scheme", action="append", metavar="NAME",
                   help=f"per-scheme benchmark ({', '.join(sorted(SCHEME_BENCHES))}); with --models: only this "
                        "scheme (repeatable, any scheme)")
    p.add_argument("--quick", action="store_true", help="smaller sweep (for a quick look)")
    p.add_argument("--array", action="append", default=None, metavar="RxC",
                   help="with --scheme: the array the models are packed for (default 4x4); with --models: only this "
                        "array (repeatable; default: the arrays that fit the UP5K per scheme, and 4x4); the FPGA "
                        "sweep compresses for each of its own array sizes")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="with --scheme tight/packcnn: worker processes for its independent pieces (default 2, "
                        "fewer on a machine with fewer CPUs)")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.set_defaults(func=run)


def _call(module, func, **kw):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            raise SparsynError(f"benchmark {module} is not part of this build") from None
        raise
    return getattr(mod, func)(**kw)


def run(args) -> int:
    if args.models:
        return _run_models(args)
    for flag in ("network", "out", "reuse", "training"):
        if getattr(args, flag) is not None:
            raise SparsynError(f"--{flag} applies to the model benchmark (--models)")
    if args.array is not None and not args.scheme:
        raise SparsynError("--array applies to the per-scheme benchmarks (--scheme NAME) and --models; the FPGA "
                           "sweep (--fpga) runs its own array sizes")
    if args.board and not args.boards:
        raise SparsynError("--board applies to the board benchmark (--boards)")
    if args.jobs is not None and not args.scheme:
        raise SparsynError("--jobs applies to the per-scheme benchmarks (--scheme tight / packcnn)")
    if args.scheme:
        if len(args.scheme) > 1 or (args.array and len(args.array) > 1):
            raise SparsynError("the per-scheme benchmark takes one --scheme and one --array; several apply to "
                               "--models")
        scheme = args.scheme[0]
        if scheme not in SCHEME_BENCHES:
            raise SparsynError(f"no per-scheme benchmark for {scheme!r}; choose from "
                               f"{', '.join(sorted(SCHEME_BENCHES))} (or --models --scheme {scheme})")
        module, func = SCHEME_BENCHES[scheme]
        kw = {}
        if args.array is not None:
            from .schedule import ArrayConfig
            kw["array"] = ArrayConfig.parse(args.array[0])
        if args.jobs is not None:
            if scheme not in JOBS_BENCHES:
                raise SparsynError(f"--jobs applies to the benchmarks of {', '.join(sorted(JOBS_BENCHES))}, "
                                   f"not --scheme {scheme}")
            if args.jobs < 1:
                raise SparsynError(f"--jobs must be at least 1, got {args.jobs}")
            kw["jobs"] = args.jobs
        doc = _call(module, func, quick=args.quick, **kw)
    elif args.mutants:
        doc = _call("sparsyn.sim.mutants", "run_mutant_bench", quick=args.quick)
    elif args.fpga:
        doc = _call("sparsyn.boards.bench", "run_fpga_bench", quick=args.quick)
    elif args.boards:
        doc = _call("sparsyn.boards.infer_bench", "run_board_bench", quick=args.quick, boards=args.board)
    else:
        doc = _call("sparsyn.sim.bench", "run_sim_bench", quick=args.quick)
    if args.json:
        write_json(Path(args.json), doc)
    return 0


def _run_models(args) -> int:
    """``--models``: refuses the other benchmarks' flags, then :func:`sparsyn.boards.model_bench.run_model_bench`."""
    for flag, name in (("fpga", "--fpga"), ("boards", "--boards"), ("mutants", "--mutants"), ("board", "--board"),
                       ("jobs", "--jobs")):
        if getattr(args, flag):
            raise SparsynError(f"{name} does not apply to the model benchmark (--models)")
    doc = _call("sparsyn.boards.model_bench", "run_model_bench", networks=args.network, schemes=args.scheme,
                arrays=args.array, out=args.out, quick=args.quick, reuse=args.reuse,
                **({"training": args.training} if args.training else {}))
    if args.json:
        write_json(Path(args.json), doc)
    return 0
