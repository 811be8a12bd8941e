"""``sparsyn compress``: model -> manifest + ROM files + report.json."""
from __future__ import annotations

from .errors import SparsynError
from .report import format_table


def parse_options(pairs: list[str] | None) -> dict:
    """``["alpha=4", "density=0.2"]`` -> dict (values typed by the scheme's Option)."""
    opts = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SparsynError(f"scheme option {pair!r} is not of the form NAME=VALUE; e.g. --opt density=0.3")
        opts[key.strip()] = value.strip()
    return opts


#: The stored-bits table of ``compress`` (per layer + total).
BIT_TABLE = ["layer", "scheme", "n", "k", "nonzero", "weight_bits", "index_bits", "other_bits", "stored_bits",
             "rate_vs_int8", "rate_vs_fp32", "weights_rate_vs_int8"]


def quality_text(report: dict) -> str:
    """Top-1 accuracy, or (data without labels) the reconstruction errors of an autoencoder."""
    acc = report["accuracy"]
    if acc is None:
        r = report["reconstruction"]
        return (f"reconstruction MSE (test inputs, variance {r['input_variance']:.4g}): float {r['float']:.4g}, "
                f"compressed float {r['compressed_float']:.4g}, integer {r['int']:.4g} "
                f"(integer vs float output {r['int_vs_float']:.4g})")
    return (f"accuracy: float {acc['float']:.2f} %, compressed float {acc['compressed_float']:.2f} %, "
            f"integer {acc['int']:.2f} %")


def summary_line(report: dict) -> str:
    return (f"{quality_text(report)};  stored {report['stored_bits']} bits = weights {report['weight_bits']} "
            f"+ index {report['index_bits']} + other {report['other_bits']} "
            f"({report['rate_vs_int8']:.2f}x vs int8, {report['rate_vs_fp32']:.2f}x vs fp32; weights only "
            f"{report['weights_rate_vs_int8']:.2f}x vs int8)")


def data_line(rec: dict) -> str:
    """The data a report records, in one line: what, shape, split."""
    what = {"npz": lambda: f"{rec['file']} (sha256 {rec['sha256'][:12]}…)",
            "synthetic": lambda: f"synthetic {rec['name']} data (seed {rec['seed']})"}.get(rec.get("kind"),
                                                                                         lambda: rec.get("name"))()
    split = rec.get("split") or {}
    labels = f", {rec['classes']} classes" if rec.get("classes") else ", no labels"
    return (f"{what}: x {'×'.join(map(str, rec.get('x_shape', [])))}{labels}; {split.get('train')} train "
            f"(calibration, fine-tuning) / {split.get('test')} test (evaluation), split with seed {split.get('seed')}")


def add_parser(sub):
    p = sub.add_parser("compress", help="compress a model into packed weight ROMs + manifest",
                       description="Compress a model with one scheme; writes DIR/manifest.json, "
                                   "DIR/<layer>.<rom>.hex and DIR/report.json. "
                                   "'sparsyn schemes' lists schemes and their options.")
    p.add_argument("--model", default="default",
                   help="'default' (built-in digits CNN), 'zoo:NAME' (a tinyML reference network, trained briefly "
                        "on its synthetic data or on --data; NAME: " + ", ".join(_zoo_names()) + ") or a file "
                        "saved with torch.save(module, PATH)")
    p.add_argument("--data", default=None, metavar="FILE.npz",
                   help="your own data: numpy.savez(FILE, x=inputs, y=labels); x float32 N×C×H×W or N×F, y int64 "
                        "labels (optional: without them the report gives the reconstruction error); split with "
                        "seed 0, 25 %% test (default: the digits; a zoo model: its synthetic data)")
    p.add_argument("--scheme", default="dense", help="compression scheme (default: dense)")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="scheme option, repeatable")
    p.add_argument("--array", default="4x4", metavar="RxC",
                   help="systolic array the layers are packed for (default 4x4); recorded in the manifest, "
                        "and generate / sim / build use it")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (a previous sparsyn output there is replaced atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _zoo_names() -> list[str]:
    from .zoo import ZOO
    return list(ZOO)


def run(args) -> int:
    from .compress import compress

    from .schedule import ArrayConfig

    from sparsyn.hw.descriptor import manifest_descriptor

    array = ArrayConfig.parse(args.array)
    report = compress(args.model, args.scheme, parse_options(args.opt), args.out, progress=not args.quiet,
                      log=(lambda *a, **k: None) if args.quiet else print, array=array,
                      descriptor=manifest_descriptor, data=args.data)
    rows = list(report["layers"])
    if report.get("descriptor_bits"):     # the sequenced engine's per-layer table: stored like every ROM
        bits = report["descriptor_bits"]
        rows.append({"layer": "descriptor", "scheme": "table", "weight_bits": 0, "index_bits": 0,
                     "other_bits": bits, "stored_bits": bits})
    print(format_table(rows + [{"layer": "TOTAL", **report}], BIT_TABLE,
                       title=f"{report['model']} compressed with {report['scheme']} for a {array} array "
                             "(bits the chip stores: weights / index / other = tables + constants)"))
    print(summary_line(report))
    print(f"data: {data_line(report['data'])}")
    print(f"manifest: {report['manifest']}")
    return 0
