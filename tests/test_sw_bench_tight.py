"""sw/bench_tight.py on tiny matrices: operating points recomputed independently from the packed layers'
ROMs (grouped form and the chip's memory images for the array), PackCNN's sweep = its scheme, the best
alpha per gamma, the rate at equal pruned fraction, accuracy at equal stored bits, the goal verdicts, the
worker pool and the JSON report (no timing asserted)."""
import json

import numpy as np
import pytest

from sparsyn.sw import bench_tight as bt
from sparsyn.sw.packing import decode_packed
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.subword import subword_count


def test_alphas_per_array_and_matrix():
    assert bt.tight_alphas(4) == (2, 4)                    # a tight group spans one section of C rows
    assert bt.tight_alphas(8) == (2, 4, 8) and bt.tight_alphas(2) == (2,) and bt.tight_alphas(6) == (2, 4)
    assert bt.packcnn_alphas(512) == (2, 4, 8, 16)         # a PackCNN group spans all N rows
    assert bt.packcnn_alphas(10) == (2, 4, 8) and bt.packcnn_alphas(3) == (2,)
    for a in bt.tight_alphas(4):                            # every setting is a valid scheme for the array
        get_scheme("tight")(array=ArrayConfig(4, 4), alpha=a)
    for a in bt.PACKCNN_ALPHAS:
        for g in bt.PACKCNN_GAMMAS:
            get_scheme("packcnn")(array=ArrayConfig(4, 4), alpha=a, gamma=g)


def test_pruned_int_matrix_density():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 50))
    q = bt.pruned_int_matrix(w, 0.25)
    assert q.dtype == np.int64 and np.abs(q).max() <= 127
    assert np.count_nonzero(q) <= int(np.ceil(0.25 * q.size))
    # kept positions are the largest magnitudes
    kept = np.abs(w)[q != 0]
    assert kept.min() >= np.sort(np.abs(w).ravel())[-np.count_nonzero(q)] - 1e-12
    qs = bt.pruned_int_matrix(w, 0.25, subword=True)
    assert np.abs(qs).max() <= 119


@pytest.mark.parametrize("subword", [False, True])
def test_operating_points_match_packed_layers(subword):
    """Every figure of every operating point equals the one recomputed from the packed layer's ROMs; the
    PackCNN points are the sweep's best alpha per gamma, with the sweep's rate and pruned fraction."""
    rng = np.random.default_rng(1)
    mats = {"tiny": rng.standard_normal((16, 60))}
    keep = {}
    tables = bt.rate_tables(mats, (0.5, 0.25), ArrayConfig(4, 4), alphas=(2, 4, 8), gammas=(0.0, 0.5),
                            subword_points={("tiny", 0.25)} if subword else (), keep=keep, log=lambda *_: None)
    rows, sweep = tables["rates"], tables["sweep"]
    labels = {r["scheme"] for r in rows}
    assert labels >= {"tight a=2", "tight a=4", "tight lossless a=4", "packcnn g=0", "packcnn g=0.5"}
    assert ("tight+sub a=4" in labels) == subword and ("tight+sub lossless a=4" in labels) == subword
    assert len(keep) == len(rows)
    assert len(sweep) == 2 * 3 * 2                          # densities x alphas x gammas
    for r in rows:
        packed, w_packed, chip = keep[(r["matrix"], r["density"], r["scheme"])]
        w_int = bt.pruned_int_matrix(mats["tiny"], r["density"], subword=r["subword"])
        n, k = w_int.shape
        assert np.array_equal(decode_packed(packed), w_packed)
        # slots: one entry word per (row of a section, group); 16 rows = whole sections of 4
        slots = len(packed.roms["entries"].words)
        assert r["packed_slots"] == slots
        assert r["matrix_rate"] == pytest.approx(n * k / slots)
        bits = (len(packed.roms["entries"].words) * packed.roms["entries"].width
                + len(packed.roms["lanes"].words) * packed.roms["lanes"].width)
        assert r["grouped_bits"] == bits and r["grouped_bit_rate"] == pytest.approx(8 * n * k / bits)
        # what the chip stores for the matrix as one layer on the 4x4 array: its memory images
        assert chip.meta["array"] == {"rows": 4, "cols": 4, "lanes": r["alpha"]} and r["h"] == 4
        assert np.array_equal(get_scheme(chip.scheme).decode(chip), w_packed)
        weight = chip.roms["weights"].bits
        index = chip.roms["lanes"].bits
        other = chip.roms["passes"].bits + chip.roms["bias"].bits + chip.roms["requant"].bits
        assert (r["weight_bits"], r["index_bits"], r["other_bits"], r["stored_bits"]) == \
            (weight, index, other, weight + index + other) and r["stored_bits"] == chip.rom_bits
        assert r["rate_vs_int8"] == pytest.approx(8 * n * k / chip.rom_bits)
        assert r["weights_rate_vs_int8"] == pytest.approx(8 * n * k / weight)
        assert r["rate_vs_int8"] < r["weights_rate_vs_int8"] and "chip_note" not in r
        nnz = np.count_nonzero(w_int)
        assert r["bound"] == pytest.approx(n * k / nnz)
        assert r["of_bound"] == pytest.approx(r["matrix_rate"] / r["bound"])
        entries = subword_count(w_int) if r["subword"] else nnz
        kept = subword_count(w_packed) if r["subword"] else np.count_nonzero(w_packed)
        assert r["conflict_pruned"] == pytest.approx((entries - kept) / entries)
        # the packed matrix only loses entries, never changes a kept weight (non-subword)
        if not r["subword"]:
            assert np.all((w_packed == 0) | (w_packed == w_int))
        if r["lossless"]:
            assert r["conflict_pruned"] == 0
        if r["scheme"].startswith("tight"):
            assert r["alpha"] == int(r["scheme"].split("a=")[1]) and r["gamma"] is None
        else:
            # PackCNN: the highest-rate alpha of the sweep at this gamma (ties: the smaller alpha), and the
            # sweep's figures (column_combine straight) are those of the packed scheme
            pts = [p for p in sweep if p["density"] == r["density"] and p["gamma"] == r["gamma"]]
            best = max(pts, key=lambda p: (p["matrix_rate"], -p["alpha"]))
            assert r["alpha"] == best["alpha"] and r["lossless"] == (r["gamma"] == 0)
            assert r["matrix_rate"] == pytest.approx(best["matrix_rate"])
            assert r["conflict_pruned"] == pytest.approx(best["conflict_pruned"])
            capped = r["alpha"] == max(r["alphas_tried"]) and best["fill"] >= bt.CAPPED_FILL
            assert r["alpha_capped"] == ("yes" if capped else "no") and r["alphas_tried"] == [2, 4, 8]


def test_packcnn_point_is_the_scheme():
    """The sweep's shortcut (column_combine + conflict_prune, rate = K / groups) gives the packed scheme's
    slot rate and pruned fraction at every alpha and gamma."""
    rng = np.random.default_rng(3)
    w = bt.pruned_int_matrix(rng.standard_normal((24, 90)), 0.15)
    nnz = np.count_nonzero(w)
    for a in (2, 4, 8, 16):
        for g in (0.0, 0.05, 0.25, 0.5):
            p = bt.packcnn_point(w, a, g)
            packed, w_packed, info = bt.pack_with("packcnn", w, {"alpha": a, "gamma": g}, False,
                                                  array=ArrayConfig(4, 4))
            assert p["matrix_rate"] == pytest.approx(w.size / len(packed.roms["entries"].words)), (a, g)
            assert p["conflict_pruned"] == pytest.approx(info["pruned"] / nnz) and 0 < p["fill"] <= 1
            if g == 0:
                assert p["conflict_pruned"] == 0


def test_best_alpha_frontier_and_rate_at_equal_pruned():
    def pt(a, g, rate, pruned):
        return {"alpha": a, "gamma": g, "matrix_rate": rate, "conflict_pruned": pruned}
    sweep = [pt(2, 0, 2.0, 0), pt(4, 0, 2.0, 0), pt(2, 0.05, 2.0, 0.01), pt(4, 0.05, 3.5, 0.05),
             pt(8, 0.05, 3.0, 0.02)]
    best = bt.best_alpha_points(sweep)
    assert best[0]["alpha"] == 2                            # a tie goes to the smaller alpha
    assert best[0.05]["alpha"] == 4
    points = [pt(16, 0, 2.0, 0.0), pt(16, 0.05, 4.0, 0.1), pt(16, 0.25, 3.0, 0.15), pt(16, 0.5, 5.0, 0.2)]
    front = bt.packcnn_frontier(points)
    assert [p["gamma"] for p in front] == [0, 0.05, 0.5]   # (0.15, 3.0) is dominated by (0.1, 4.0)
    assert bt.packcnn_at(points, 0.0)["rate"] == pytest.approx(2.0)
    at = bt.packcnn_at(points, 0.05)
    assert at["rate"] == pytest.approx(3.0) and at["lo"]["gamma"] == 0 and at["hi"]["gamma"] == 0.05
    assert bt.packcnn_at(points, 0.15)["rate"] == pytest.approx(4.5)
    assert bt.packcnn_at(points, 0.3)["rate"] == pytest.approx(5.0)    # beyond: its best, no extrapolation
    assert bt.packcnn_at([], 0.1)["rate"] is None
    assert bt.packcnn_at([pt(4, 0.05, 3.0, 0.02)], 0.01)["rate"] is None   # below its least pruning: unknown


def _row(matrix, d, scheme, rate, bound, pruned=0.0, gamma=None, alpha=4, lossless=False):
    return {"matrix": matrix, "density": d, "scheme": scheme, "alpha": alpha, "h": 4, "matrix_rate": rate,
            "bound": bound, "of_bound": rate / bound, "conflict_pruned": pruned, "gamma": gamma,
            "lossless": lossless, "subword": False}


def _rows():
    return [_row("m", 0.1, "tight a=2", 6.0, 10, 0.0, alpha=2), _row("m", 0.1, "tight a=4", 9.5, 10, 0.01),
            _row("m", 0.1, "tight lossless a=4", 9.0, 10, lossless=True),
            _row("m", 0.1, "packcnn g=0", 4.0, 10, gamma=0.0, alpha=16, lossless=True),
            {**_row("m", 0.1, "packcnn g=0.05", 6.0, 10, 0.05, 0.05, alpha=16), "alpha_capped": "yes"},
            _row("m", 0.1, "packcnn g=0.5", 12.0, 10, 0.3, 0.5, alpha=16),
            _row("n", 0.5, "tight a=2", 1.7, 2, 0.02, alpha=2), _row("n", 0.5, "tight a=4", 1.6, 2, 0.02),
            _row("n", 0.5, "tight lossless a=4", 1.5, 2, lossless=True),
            _row("n", 0.5, "packcnn g=0", 1.0, 2, gamma=0.0, alpha=2, lossless=True)]


def test_goal_rows_headline_at_equal_pruned_fraction():
    g = {r["matrix"]: r for r in bt.goal_rows(_rows())}
    m = g["m"]
    # tight's best alpha is 4 (9.5x, 1 % pruned); PackCNN at 1 % pruned: between g=0 (4.0x, 0 %) and
    # g=0.05 (6.0x, 5 %): 4.0 + 0.2 * 2.0 = 4.4x
    assert (m["tight_alpha"], m["tight"], m["tight_pruned"]) == (4, 9.5, 0.01)
    assert m["packcnn_at_tight_pruned"] == pytest.approx(4.4)
    assert m["ratio_equal_pruned"] == pytest.approx(9.5 / 4.4) and m["goal_2x"] == "PASS"
    assert m["packcnn_lo"].startswith("g=0 a=16") and m["packcnn_hi"].startswith("g=0.05 a=16")
    assert m["ratio_lossless"] == pytest.approx(9.0 / 4.0) and m["goal_2x_lossless"] == "PASS"
    assert m["packcnn_lossless_alpha"] == 16 and m["tight_a4"] == 9.5
    # the g=0.05 point it leans on is flagged alpha-capped (largest alpha tried, groups full)
    assert m["packcnn_alpha_capped"] == "yes" and m["packcnn_lossless_capped"] == "no"
    assert m["goal_90_bound"] == "PASS"
    n = g["n"]
    # tight's best is alpha 2 here; its 2 % pruned is beyond PackCNN's only point (lossless): PackCNN's best
    assert n["tight_alpha"] == 2 and n["tight_a4"] == 1.6
    assert n["packcnn_at_tight_pruned"] == pytest.approx(1.0) and n["ratio_equal_pruned"] == pytest.approx(1.7)
    assert n["goal_2x"] == "BELOW" and n["goal_2x_lossless"] == "BELOW" and n["goal_90_bound"] == "BELOW"
    assert n["packcnn_alpha_capped"] == "no"


def _acc(model, scheme, bits, acc, lossless=False):
    return {"model": model, "scheme": scheme, "model_stored_bits": bits, "int_acc": acc, "lossless": lossless}


def test_accuracy_at_equal_stored_bits():
    acc = [_acc("dense int8", "dense", 23000, 98.2),
           _acc("t1", "tight", 12000, 96.0), _acc("t2", "tight", 9000, 90.0), _acc("t3", "tight", 20000, 98.0),
           _acc("tl", "tight", 13000, 97.0, lossless=True),
           _acc("p1", "packcnn", 10000, 80.0), _acc("p2", "packcnn", 14000, 94.0), _acc("p3", "packcnn", 13000, 70.0),
           _acc("p4", "packcnn", 16000, 97.0)]
    assert [r["model"] for r in bt.accuracy_frontier([a for a in acc if a["scheme"] == "packcnn"])] == \
        ["p1", "p2", "p4"]                                   # p3: more bits than p1 and less accurate
    rows = {r["tight"]: r for r in bt.equal_bits_rows(acc)}
    assert set(rows) == {"t1", "t2", "t3"}                   # the lossless tight model is not a tight point
    # t1 at 12000 bits: between p1 (10000, 80) and p2 (14000, 94) -> 87
    assert rows["t1"]["packcnn_acc_at_bits"] == pytest.approx(87.0)
    assert rows["t1"]["tight_minus_packcnn"] == pytest.approx(9.0) and rows["t1"]["packcnn_between"] == "p1 .. p2"
    assert (rows["t1"]["closest_packcnn"], rows["t1"]["closest_bits"], rows["t1"]["closest_acc"]) == ("p3", 13000, 70.0)
    assert rows["t2"]["packcnn_acc_at_bits"] is None        # PackCNN has no model of 9000 bits or fewer
    assert rows["t3"]["packcnn_acc_at_bits"] == 97.0        # above PackCNN's largest: its best
    assert rows["t3"]["packcnn_between"] == "p4"


def test_sweep_and_timing_tables():
    sweep = [{"matrix": "m", "n": 512, "k": 4608, "density": d, "alpha": a, "gamma": g, "matrix_rate": r,
              "conflict_pruned": 0.01 * a, "seconds": 0.1 * a}
             for d in (0.5, 0.1) for g in (0.0, 0.5) for a, r in ((2, 2.0), (16, 5.0))]
    rows = bt.sweep_rows(sweep)
    assert len(rows) == 4 and rows[0]["a=2"] == "2.00x / 2.00 %" and rows[0]["best_alpha"] == 16
    t = bt.combine_timing_rows(sweep)
    assert [r["density"] for r in t] == [0.5, 0.1]
    assert t[0]["s g=0"] == pytest.approx(1.6) and t[0]["max_s"] == pytest.approx(1.6) and t[0]["goal"] == "PASS"
    assert bt.combine_timing_rows(sweep, shape=(128, 1152)) == []


def test_worker_pool_gives_the_inline_results():
    """Two worker processes compute the same operating points as the inline run (order aside)."""
    rng = np.random.default_rng(5)
    mats = {"tiny": rng.standard_normal((8, 40))}
    tasks = bt.rate_tasks(mats, (0.25,), ArrayConfig(4, 4), alphas=(2, 4), gammas=(0.0, 0.5))
    inline = bt.collect_rates(tasks, bt.run_tasks(tasks, 1, log=lambda *_: None))
    lines = []
    pooled = bt.collect_rates(tasks, bt.run_tasks(tasks, 2, log=lines.append))

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(pooled["rates"]) == strip(inline["rates"]) and len(inline["rates"]) == 5
    assert [p["matrix_rate"] for p in pooled["sweep"]] == [p["matrix_rate"] for p in inline["sweep"]]
    assert any("packcnn sweep" in s for s in lines) and any("tight a=4" in s for s in lines)


def test_rate_row_says_why_chip_figures_are_missing():
    rng = np.random.default_rng(2)
    w = bt.pruned_int_matrix(rng.standard_normal((3, 40)), 0.25)
    keep = {}
    # a PackCNN group of 4 columns needs 4 rows: no PE for it on a 3-row matrix, the grouped form still counts
    r = bt.rate_row("m", 0.25, w, "packcnn", {"alpha": 4, "gamma": 0.5}, False, "p", keep, ArrayConfig(4, 4))
    assert "cannot be packed" in r["chip_note"] and "stored_bits" not in r and r["matrix_rate"] > 0
    assert keep[("m", 0.25, "p")][2] is None
    r = bt.rate_row("m", 0.25, w, "tight", {"alpha": 2}, True, "t", keep, ArrayConfig(4, 4), chip_max_weights=100)
    assert "not built" in r["chip_note"] and "stored_bits" not in r
    r = bt.rate_row("m", 0.25, w, "tight", {"alpha": 2}, True, "t", keep, ArrayConfig(4, 4))
    assert r["stored_bits"] == keep[("m", 0.25, "t")][2].rom_bits


def test_report_written_and_printed(tmp_path, capsys):
    rows = [{**r, "matrix": "vgg 8x9" if r["matrix"] == "m" else r["matrix"]} for r in _rows()]
    goals = bt.goal_rows(rows)
    cycles = [{"model": "t", "layer": "fc", "scheme": "tight", "speedup_vs_dense": 3.0},
              {"model": "p g=0.25", "layer": "fc", "scheme": "packcnn", "speedup_vs_dense": 2.0}]
    acc = [_acc("t1", "tight", 12000, 96.0), _acc("p1", "packcnn", 10000, 80.0)]
    doc = {"rates": rows, "goals": goals, "packcnn_sweep": [], "combine_timing": [],
           "accuracy": [{"model": "dense int8", "int_acc": 98.0}, *acc], "equal_bits": bt.equal_bits_rows(acc),
           "cycles": cycles, "anneal": [{"n": 8, "k": 9, "seconds": 0.1}],
           "anchors": bt.anchor_rows(goals, cycles, rows),
           "float_accuracy": 98.5, "seconds": 1.0, "jobs": 2}
    anchors = {a["figure"]: a for a in doc["anchors"]}
    assert anchors["Tight / PackCNN rate"]["measured"] == f"{9.5 / 4.4:.2f} at d = 0.1"
    assert anchors["Tight / PackCNN rate"]["paper"] == pytest.approx(14.13 / 5.88, abs=0.01)
    assert anchors["PackCNN matrix rate"]["measured"] == "12.00 at d = 0.1"
    assert anchors["throughput vs dense array"]["measured"] == pytest.approx(3.0)
    path = bt.write_report(doc, ArrayConfig(4, 4), tmp_path / "out" / "tight.json")
    back = json.loads(path.read_text())
    assert back["goals"][0]["goal_2x"] == "PASS"
    assert back["rates"][1]["matrix_rate"] == 9.5
    out = capsys.readouterr().out
    assert "HEADLINE" in out and "PASS" in out and "paper anchors" in out and "equal stored bits" in out
    assert "slot rate = dense slots / packed slots" in out


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--jobs", "2"], "--jobs applies to the per-scheme benchmarks"),
    (["bench", "--scheme", "ternary", "--jobs", "2"], "--jobs applies to the benchmarks of packcnn, tight"),
    (["bench", "--scheme", "tight", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_cli_jobs_refused_where_it_does_not_apply(argv, needle, capsys):
    from sparsyn.sw.cli import main
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_cli_passes_jobs(monkeypatch):
    from sparsyn.sw import cmd_bench
    from sparsyn.sw.cli import main
    seen = {}
    monkeypatch.setattr(cmd_bench, "_call", lambda module, func, **kw: seen.update(kw) or {})
    assert main(["bench", "--scheme", "packcnn", "--quick", "--jobs", "1", "--array", "2x2"]) == 0
    assert seen == {"quick": True, "jobs": 1, "array": ArrayConfig(2, 2)}
