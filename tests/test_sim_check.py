"""``rtl_check`` / ``sparsyn sim`` on a compressed default model, bad inputs, and the simulator benchmark."""
import json
import subprocess
import sys

import pytest

from sparsyn.sim.check import format_table, rtl_check
from sparsyn.sw.errors import SparsynError


def sparsyn(*args):
    return subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", *args], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="session")
def dense_manifest(tmp_path_factory):
    from sparsyn.sw.compress import compress
    out = tmp_path_factory.mktemp("digits-dense")
    report = compress("default", "dense", {}, out, progress=False, log=lambda *a, **k: None, array="4x4")
    return report["manifest"]


def test_rtl_check_every_layer_bit_exact(simulator, dense_manifest, tmp_path):
    rows = rtl_check(dense_manifest, simulator=simulator, images=2, out_dir=tmp_path, progress=False)
    # a row per layer with hardware: the engines' and the max-pool units' (flatten has none)
    assert [(r["layer"], r["scheme"]) for r in rows] == [("conv1", "dense"), ("pool1", "maxpool"), ("conv2", "dense"),
                                                         ("pool2", "maxpool"), ("fc", "dense")]
    for r in rows:
        assert r["bit_exact"] and r["reference_exact"] and r["mismatch"] is None, r
        # exact, for every image: no tolerance
        assert r["cycles_exact"] and r["cycles_measured"] == r["cycles_model"], r
        assert r["cycles_all"] == r["cycles_model_all"] and len(r["cycles_all"]) == 2, r
        if r["scheme"] == "dense":
            assert 0 < r["utilization"] <= 1
        else:
            assert r["utilization"] is None            # a pool has no PEs
    table = format_table(rows)
    assert "cycles_measured" in table and "conv2" in table and "maxpool" in table and "NO" not in table


def test_cli_sim_prints_table_and_json(dense_manifest, tmp_path):
    js = tmp_path / "sim.json"
    r = sparsyn("sim", "--manifest", str(dense_manifest), "--simulator", "icarus", "--json", str(js))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("conv1", "pool1", "conv2", "pool2", "fc"))]
    assert len(lines) == 5 and all(" yes " in ln + " " for ln in lines), r.stdout
    doc = json.loads(js.read_text())
    assert doc["simulator"] == "icarus" and len(doc["layers"]) == 5
    assert all(row["bit_exact"] for row in doc["layers"])


@pytest.mark.parametrize("args, text", [
    (["--simulator", "modelsim"], "unknown simulator 'modelsim'"),
    (["--array", "4by4"], "is not of the form RxC"),
    (["--images", "0"], "--images 0 is out of range"),
    (["--array", "2x2"], "the manifest was packed for a 4x4 array, not 2x2"),
])
def test_cli_sim_bad_options(dense_manifest, args, text):
    r = sparsyn("sim", "--manifest", str(dense_manifest), "--simulator", "icarus", *args)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.startswith("sparsyn: error:") and text in err and "\n" not in err
    assert "Traceback" not in r.stderr


def test_cli_sim_missing_manifest(tmp_path):
    r = sparsyn("sim", "--manifest", str(tmp_path / "nope"), "--simulator", "icarus")
    assert r.returncode == 2 and "not found" in r.stderr and "\n" not in r.stderr.strip()


def test_rtl_check_unknown_simulator_before_any_work(tmp_path):
    with pytest.raises(SparsynError, match="unknown simulator"):
        rtl_check(tmp_path / "does-not-matter", simulator="xsim")


@pytest.mark.slow
def test_sim_bench_measures_both_simulators_and_the_cycle_model(tmp_path):
    """Not timed: checks that every figure is present and consistent with the others of the same run."""
    from sparsyn.sim.bench import run_sim_bench
    from sparsyn.sim.tools import have_simulator
    if have_simulator("icarus") or have_simulator("verilator"):
        pytest.skip("needs both simulators")
    doc = run_sim_bench(quick=True, out=tmp_path / "bench.json", progress=False)
    ic, vl = doc["simulators"]["icarus"], doc["simulators"]["verilator"]
    assert ic["sim_cycles"] == vl["sim_cycles"] > doc["largest_layer"]["cycles_model"]
    assert vl["build_s"] > 0 and ic["build_s"] > 0
    assert doc["ratios"]["verilator_speedup_run"] == pytest.approx(ic["run_s"] / vl["run_s"])
    assert [r["layer"] for r in doc["cycle_model"]["layers"]] == ["conv1", "conv2", "fc"]
    assert all(r["cycles_exact"] and r["bit_exact"] for r in doc["cycle_model"]["layers"])
    assert all(r["cycles_measured"] == r["cycles_model"] for r in doc["cycle_model"]["layers"])
    assert json.loads((tmp_path / "bench.json").read_text())["images"] == doc["images"]
