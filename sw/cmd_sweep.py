"""``sparsyn sweep``: the design space (scheme x array x board x options) through the real stages."""
from __future__ import annotations

from .errors import SparsynError


def add_parser(sub):
    p = sub.add_parser("sweep", help="design-space sweep: scheme x array x board x options, cached, in parallel",
                       description="Run every point of the cross product (compress for the point's array, RTL "
                                   "check, board build) as an independent task on a local process pool or a Dask "
                                   "cluster. Finished points are cached in DIR/points/ by content hash, so a "
                                   "re-run computes only the missing ones. Writes DIR/sweep.jsonl, DIR/sweep.json, "
                                   "a table and Pareto plots (PNG). An --opt axis applies to the schemes that have "
                                   "that option; the others get one point.")
    p.add_argument("--model", default="default",
                   help="'default' (built-in digits CNN) or a file saved with torch.save(module, PATH)")
    p.add_argument("--schemes", default="dense", metavar="A,B", help="schemes (default: dense)")
    p.add_argument("--arrays", default="4x4", metavar="RxC,...", help="arrays to compress for (default: 4x4)")
    p.add_argument("--boards", default="", metavar="NAME,...", help="boards for the build stage")
    p.add_argument("--opt", action="append", metavar="NAME=V1,V2",
                   help="a scheme-option axis, repeatable (applied to the schemes that have the option)")
    p.add_argument("--stages", default=None, metavar="compress,sim,build",
                   help="stages of every point (default: compress,sim, plus build when --boards is given)")
    p.add_argument("--simulator", default="icarus", choices=["icarus", "verilator"],
                   help="simulator of the sim stage (default: icarus)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (new, empty, or an earlier sweep's)")
    p.add_argument("--executor", default="local", help="local (process pool, default) or dask")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: the number of cores; dask without --scheduler: "
                        "LocalCluster size)")
    p.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="address of a running Dask scheduler (e.g. tcp://host:8786); default: a LocalCluster")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _axis(text: str, what: str) -> list[str]:
    from sparsyn.boards.sweep import parse_axis
    return parse_axis(text, what)


def run(args) -> int:
    from sparsyn.boards.sweep import (EXECUTORS, check_sweep_out, format_records, parse_opt_axes, plan_points,
                                      sweep)
    if args.executor not in EXECUTORS:
        raise SparsynError(f"unknown executor {args.executor!r}; choose {' or '.join(EXECUTORS)}")
    if args.workers is not None and args.workers < 1:
        raise SparsynError(f"--workers {args.workers} must be 1 or more")
    if args.scheduler and args.executor != "dask":
        raise SparsynError("--scheduler is for --executor dask")
    boards = _axis(args.boards, "--boards") if args.boards.strip() else []
    stages = (_axis(args.stages, "--stages") if args.stages is not None
              else ["compress", "sim"] + (["build"] if boards else []))
    points = plan_points(args.model, _axis(args.schemes, "--schemes"), _axis(args.arrays, "--arrays"), boards,
                         parse_opt_axes(args.opt), stages, args.simulator)
    check_sweep_out(args.out)
    result = sweep(points, args.out, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                   progress=not args.quiet)
    print(format_records(result["records"]))
    print(f"{result['points']} points: {result['computed']} computed, {result['cached']} from the cache, "
          f"{result['failed']} failed; {result['wall_s']:.1f} s on the {args.executor} executor")
    print(f"results: {args.out}/sweep.jsonl, {args.out}/sweep.json")
    for plot in result["plots"]:
        print(f"plot: {plot}")
    return 0
