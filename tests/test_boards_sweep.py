"""``sparsyn sweep`` (sparsyn.boards.sweep): executors agree, resume from the cache, failing points, refusals.

Small sweeps only: schemes dense + ternary (0 penalty epochs, 1 fine-tuning epoch), arrays 2x2 / 4x4,
stages compress + sim on Icarus. The board stage runs in the ``slow`` test at the end.
"""
import json
import shutil
import sys

import pytest

from sparsyn.boards.sweep import (DETERMINISTIC_FIELDS, MARKER, pareto, plan_points, point_key, run_point,
                                  source_hash, sweep)
from sparsyn.sim.tools import have_simulator
from sparsyn.sw.cli import main
from sparsyn.sw.errors import SparsynError

TINY = {"penalty_epochs": ["0"], "finetune_epochs": ["1"]}
needs_icarus = pytest.mark.skipif(bool(have_simulator("icarus")), reason=str(have_simulator("icarus")))


def _small_points():
    return plan_points("default", ["dense", "ternary"], ["2x2", "4x4"], [], TINY, ["compress", "sim"], "icarus")


def _det(records):
    return [{f: r[f] for f in DETERMINISTIC_FIELDS} for r in records]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "local"
    return out, sweep(_small_points(), out, executor="local", workers=2, progress=False, log=lambda *a: None)


# ---- planning ----------------------------------------------------------------------------------

def test_plan_applies_an_option_axis_only_to_schemes_that_have_it():
    points = plan_points("default", ["dense", "ternary"], ["2x2"], [], {"finetune_epochs": ["1", "2"]},
                         ["compress"], "icarus")
    assert [(p["scheme"], p["options"]) for p in points] == [
        ("dense", {}), ("ternary", {"finetune_epochs": "1"}), ("ternary", {"finetune_epochs": "2"})]
    assert all(p["board"] is None and p["simulator"] is None for p in points)
    built = plan_points("default", ["dense"], ["2x2", "2x3"], ["icebreaker", "ulx3s-85f"], {},
                        ["build", "compress"], "icarus")
    assert [(p["array"], p["board"]) for p in built] == [("2x2", "icebreaker"), ("2x2", "ulx3s-85f"),
                                                         ("2x3", "icebreaker"), ("2x3", "ulx3s-85f")]
    assert built[0]["stages"] == ["compress", "build"]
    src = source_hash()
    assert len({point_key(p, src) for p in built}) == 4 and point_key(built[0], src) != point_key(built[0], "x")


def test_pareto_front():
    pts = [(10, 90.0), (5, 80.0), (20, 95.0), (12, 85.0), (5, 70.0)]
    assert pareto(pts, maximize_y=True) == [(5, 80.0), (10, 90.0), (20, 95.0)]
    assert pareto([(1, 9), (2, 5), (3, 7), (4, 1)], maximize_y=False) == [(1, 9), (2, 5), (4, 1)]


# ---- executors, cache, failures ---------------------------------------------------------------

@needs_icarus
def test_local_sweep_records(local_sweep):
    out, res = local_sweep
    assert (res["points"], res["computed"], res["failed"]) == (4, 4, 0)
    recs = res["records"]
    assert [(r["config"]["scheme"], r["config"]["array"]) for r in recs] == [
        ("dense", "2x2"), ("dense", "4x4"), ("ternary", "2x2"), ("ternary", "4x4")]
    for r in recs:
        assert r["error"] is None and r["cycles_exact"] and r["bit_exact"] and not r["cached"]
        assert r["stored_bits"] == r["weight_bits"] + r["index_bits"] + r["other_bits"] > 0
        assert r["cycles"] > 0 and 0 < r["accuracy"] <= 100 and r["lut"] is None
    # dense on 4x4 is the main job's figures (README): the point runs the real stages; its RTL cycles are every
    # simulated layer's, the two max-pools (2112) included since 'sparsyn sim' checks them too
    assert (recs[1]["stored_bits"], recs[1]["cycles"]) == (23624, 4652)
    lines = [json.loads(l) for l in (out / "sweep.jsonl").read_text().splitlines()]
    assert _det(lines) == _det(recs)
    assert json.loads((out / "sweep.json").read_text())["records"] == lines
    assert len(list((out / "points").glob("*.json"))) == 4 and (out / MARKER).is_file()
    assert (out / "pareto-accuracy-bits.png").stat().st_size > 1000


@needs_icarus
def test_dask_local_cluster_gives_identical_records(local_sweep, tmp_path):
    pytest.importorskip("distributed")
    res = sweep(_small_points(), tmp_path / "dask", executor="dask", workers=2, progress=False,
                log=lambda *a: None)
    assert res["computed"] == 4
    assert _det(res["records"]) == _det(local_sweep[1]["records"])


@needs_icarus
def test_interrupted_sweep_recomputes_only_the_missing_point(local_sweep, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(local_sweep[0], out)
    before = local_sweep[1]["records"]
    (out / "points" / f"{before[2]['key']}.json").unlink()
    res = sweep(_small_points(), out, executor="local", workers=1, progress=False, log=lambda *a: None)
    assert (res["computed"], res["cached"]) == (1, 3)
    assert [r["cached"] for r in res["records"]] == [True, True, False, True]
    assert _det(res["records"]) == _det(before)
    assert (out / "points" / f"{before[2]['key']}.json").is_file()


def test_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    argv = ["sweep", "--schemes", "dense,ternary", "--arrays", "2x2", "--opt", "tile=0",
            "--opt", "finetune_epochs=1", "--stages", "compress", "--workers", "1", "--quiet",
            "--out", str(tmp_path / "fail")]
    assert main(argv) == 0
    recs = [json.loads(l) for l in (tmp_path / "fail" / "sweep.jsonl").read_text().splitlines()]
    dense, ternary = recs
    assert dense["error"] is None and dense["stored_bits"] > 0 and dense["cycles"] is None
    assert ternary["error"] and "\n" not in ternary["error"] and "tile" in ternary["error"]
    assert ternary["stored_bits"] is None
    assert len(list((tmp_path / "fail" / "points").glob("*.json"))) == 1   # failures are not cached
    assert "1 failed" in capsys.readouterr().out


def test_run_point_refuses_other_sources(tmp_path):
    cfg = plan_points("default", ["dense"], ["2x2"], [], {}, ["compress"], "icarus")[0]
    rec = run_point(cfg, "0" * 64, tmp_path)
    assert "different sparsyn sources" in rec["error"] and rec["stored_bits"] is None


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--schemes", "dense,nope"], "unknown scheme 'nope'"),
    (["--boards", "nope"], "unknown board 'nope'"),
    (["--stages", "compress,synth"], "unknown stage 'synth'"),
    (["--stages", "sim"], "must include compress"),
    (["--executor", "ray"], "unknown executor 'ray'"),
    (["--arrays", "2x"], "not of the form RxC"),
    (["--arrays", "0x2"], "zero dimension"),
    (["--arrays", ","], "--arrays is empty"),
    (["--schemes", ""], "--schemes is empty"),
    (["--opt", "tile"], "not of the form NAME=V1,V2"),
    (["--opt", "tile="], "is empty"),
    (["--opt", "alpha=2", "--schemes", "dense"], "has an option 'alpha'"),
    (["--stages", "compress,build"], "build stage needs --boards"),
    (["--boards", "icebreaker", "--stages", "compress"], "do not include build"),
    (["--workers", "0"], "--workers 0"),
    (["--scheduler", "tcp://x:1"], "--scheduler is for --executor dask"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, words):
    assert main(["sweep", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsyn: error:") and "\n" not in err and words in err, err
    assert not (tmp_path / "o").exists()


def test_out_must_be_new_or_an_earlier_sweep(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["sweep", "--out", str(tmp_path), "--stages", "compress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "non-empty folder that sparsyn sweep did not write" in err and "\n" not in err
    assert (tmp_path / "mine.txt").read_text() == "keep"
    with pytest.raises(SparsynError, match="existing file"):
        sweep([], tmp_path / "mine.txt", progress=False)
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / MARKER).write_text("{}")
    (prev / "sweep.jsonl").write_text("")
    assert sweep([], prev, progress=False, log=lambda *a: None)["points"] == 0


def test_dask_executor_without_dask_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed -> ImportError
    assert main(["sweep", "--executor", "dask", "--stages", "compress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install sparsyn[dask]" in err and "\n" not in err


# ---- board stage -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.fpga
def test_build_point_reports_resources_and_fmax(tmp_path):
    cfg = plan_points("default", ["dense"], ["2x3"], ["icebreaker"], {}, ["compress", "build"], "icarus")[0]
    rec = run_point(cfg, source_hash(), tmp_path)
    assert rec["error"] is None, rec["error"]
    assert rec["lut"] > 0 and rec["ff"] > 0 and rec["ebr"] > 0 and rec["fmax_mhz"] > 0
