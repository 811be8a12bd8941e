"""Verilog generation from a manifest, the JSON listing, Verilator -Wall lint, and `sparsyn generate`."""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from sparsyn.hw.cycles import program_cycles
from sparsyn.hw.generate import LINT_WAIVERS, LISTING_NAME, WAIVER_NAME, generate, module_name
from sparsyn.hw.plan import EngineLimits
from sparsyn.sim.lint import lint
from sparsyn.sim.tools import have_simulator
from sparsyn.sw.cli import main
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.manifest import write_manifest
from sparsyn.sw.qmodel import FlattenLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.testing import pack_layer, random_maxpool_layer, random_quant_layer

needs_verilator = pytest.mark.skipif(bool(have_simulator("verilator")), reason=str(have_simulator("verilator")))

#: The array the test manifest is packed for (part of the compressed artefact).
ARRAY = ArrayConfig(2, 3)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    rng = np.random.default_rng(0)
    conv = random_quant_layer(rng, "conv", 1, 6, 6, 3, 3, 1, 1, name="conv1")
    pool = random_maxpool_layer(3, 6, 6, 2, name="pool1")
    flat = FlattenLayer("flat", (3, 3, 3), (27, 1, 1))
    fc = random_quant_layer(rng, "linear", 27, 1, 1, 5, relu=False, name="fc")
    model = QuantModel("tiny", (1, 6, 6), 0.1, [conv, pool, flat, fc], 5)
    path = write_manifest(tmp_path_factory.mktemp("man") / "tiny", model,
                          {layer.name: pack_layer(layer, array=ARRAY) for layer in (conv, fc)}, "dense", {}, ARRAY)
    return path, model


@pytest.fixture(scope="module")
def generated(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl")
    files = generate(manifest[0], None, out)          # the manifest's array
    return out, files


def test_generate_writes_one_module_per_layer(generated, manifest):
    out, files = generated
    model = manifest[1]
    names = sorted(f.name for f in files)
    assert names == sorted(["sparsyn_conv1.v", "sparsyn_pool1.v", "sparsyn_fc.v", WAIVER_NAME, LISTING_NAME])
    doc = json.loads((out / LISTING_NAME).read_text())
    assert [m["layer"] for m in doc["modules"]] == ["conv1", "pool1", "fc"]
    for rec in doc["modules"]:
        text = (out / rec["file"]).read_text()
        header = re.search(rf"module {rec['module']}\((.*?)\);", text).group(1)
        assert sorted(p.strip() for p in header.split(",")) == sorted(p["name"] for p in rec["ports"])
        if rec["kind"] != "maxpool":
            layer = model.layer(rec["layer"])
            program = get_scheme("dense")(array=ARRAY).schedule(layer)[0]
            assert rec["cycles"] == json.loads(json.dumps(program_cycles(program, layer)))
            assert rec["array"] == {"rows": 2, "cols": 3, "lanes": 1}
            ports = {p["name"]: (p["dir"], p["width"]) for p in rec["ports"]}
            assert ports["act_in__payload"] == ("input", 8) and ports["act_out__valid"] == ("output", 1)
            assert ports["cycles"] == ("output", 32) and ports["start"] == ("input", 1)
    assert doc["array"] == {"rows": 2, "cols": 3}
    vlt = (out / WAIVER_NAME).read_text()
    assert all(f"lint_off -rule {rule}" in vlt for rule in LINT_WAIVERS)


@needs_verilator
def test_generated_verilog_is_lint_clean(generated):
    out, files = generated
    for f in files:
        if f.suffix == ".v":
            text = lint(f)
            assert "%Warning" not in text and "%Error" not in text


@needs_verilator
def test_lint_reports_unwaived_warnings(tmp_path):
    bad = tmp_path / "sparsyn_bad.v"
    # an undriven wire: a real design problem that no waiver covers
    bad.write_text("module sparsyn_bad(output [3:0] q);\n  wire [3:0] y;\n  assign q = y;\nendmodule\n")
    with pytest.raises(SparsynError, match="verilator lint of sparsyn_bad.v failed: %Warning-UNDRIVEN"):
        lint(bad)


@pytest.mark.skipif(bool(have_simulator("icarus")), reason=str(have_simulator("icarus")))
def test_generated_verilog_compiles_in_icarus(generated, tmp_path):
    out, files = generated
    for f in files:
        if f.suffix == ".v":
            proc = subprocess.run([shutil.which("iverilog"), "-g2012", "-o", str(tmp_path / "a.vvp"), str(f)],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr


def test_generate_refuses_layer_that_does_not_fit(manifest, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SparsynError, match="layer conv1 does not fit the activation buffer"):
        generate(manifest[0], None, out, EngineLimits(act_elements=20))
    assert not out.exists()                       # nothing half-written


def test_generate_refuses_another_array(manifest, tmp_path):
    """The array is part of the compressed artefact: the manifest's is used, another one is refused."""
    out = tmp_path / "never"
    with pytest.raises(SparsynError, match=r"packed for a 2x3 array, not 3x2.*--array 3x2") as err:
        generate(manifest[0], ArrayConfig(3, 2), out)
    assert "\n" not in str(err.value)
    assert not out.exists()
    files = generate(manifest[0], ArrayConfig(2, 3), tmp_path / "same")     # the same array is accepted
    assert json.loads((tmp_path / "same" / LISTING_NAME).read_text())["array"] == {"rows": 2, "cols": 3}
    assert len(files) == 5


def test_generate_missing_manifest(tmp_path):
    with pytest.raises(SparsynError, match="not found"):
        generate(tmp_path / "nope", ArrayConfig(2, 2), tmp_path / "out")


@needs_verilator
def test_cli_generate(manifest, tmp_path, capsys):
    out = tmp_path / "rtl"
    assert main(["generate", "--manifest", str(manifest[0]), "--out", str(out), "--lint"]) == 0
    text = capsys.readouterr().out
    assert "sparsyn_conv1" in text and "clean" in text and "2x3" in text
    doc = json.loads((out / LISTING_NAME).read_text())
    assert doc["array"] == {"rows": 2, "cols": 3}


def test_cli_generate_refuses_another_array(manifest, tmp_path, capsys):
    out = tmp_path / "rtl"
    assert main(["generate", "--manifest", str(manifest[0]), "--array", "3x2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsyn: error:") and "2x3" in err and "3x2" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("array", ["4", "4x", "0x4", "axb"])
def test_cli_generate_bad_array(manifest, tmp_path, capsys, array):
    assert main(["generate", "--manifest", str(manifest[0]), "--array", array, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sparsyn: error:" in err and ("RxC" in err or "zero dimension" in err)


def test_cli_generate_missing_manifest(tmp_path, capsys):
    assert main(["generate", "--manifest", str(tmp_path / "x"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_module_names_are_identifiers():
    assert module_name("features.0") == "sparsyn_features_0"


@needs_verilator
def test_generate_model_top(manifest, tmp_path):
    files = generate(manifest[0], None, tmp_path, model_top=True)
    top = tmp_path / "sparsyn_model_tiny.v"
    assert top in files
    doc = json.loads((tmp_path / LISTING_NAME).read_text())
    rec = doc["modules"][-1]
    assert rec["kind"] == "model" and rec["module"] == "sparsyn_model_tiny"
    assert rec["cycles"]["total"] > sum(m["cycles"]["total"] for m in doc["modules"][:-1] if m["kind"] != "maxpool")
    assert "%Warning" not in lint(top)
