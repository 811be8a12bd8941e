"""``sparsyn bench --models`` (:mod:`sparsyn.boards.model_bench`): the quick run on two tiny zoo networks and two
schemes writes the JSON with every column, its cycles are the per-layer cycle models summed (recomputed here from
the manifests it wrote, without the bench's code), fits are booleans against the devices' block RAM, the anchors are
there; bad input is refused in one line."""
import json

import numpy as np
import pytest

from sparsyn.boards.devices import DEVICES
from sparsyn.boards.model_bench import (QUICK_TRAINING, SHORT_TRAINING, TARGETS, device_fit, fallback_options,
                                        run_config, select_configs)
from sparsyn.sw.testing import one_line_error, run_cli

ROW_KEYS = {"network", "config", "scheme", "array", "options", "engine", "weight_bits", "index_bits", "table_bits",
            "constant_bits", "descriptor_bits", "stored_bits", "buffers", "buffer_bits", "up5k", "ecp5_25f",
            "ecp5_85f", "fit", "cycles", "useful_macs", "mac_units", "utilization", "layers", "manifest"}


def _independent_cycles(manifest, engine: str) -> tuple[int, int]:
    """(cycles, useful MACs) of a manifest: every compute layer's own cycle model + 1, one hand-over per compute
    layer but the last (its N*Ho*Wo elements, the pools after it, a start cycle), each residual add's stream."""
    from sparsyn.hw.add import add_cycles
    from sparsyn.hw.engines import plan_layer
    from sparsyn.hw.plan import EngineLimits, LayerPlan, with_phases
    from sparsyn.hw.pools import is_pool, pool_cycles
    from sparsyn.sw.manifest import load_manifest, resolve_array
    from sparsyn.sw.qmodel import AddLayer, QuantLayer
    model, packed, doc = load_manifest(manifest)
    array = resolve_array(doc, None)
    big = EngineLimits(1 << 30, 1 << 30, 1 << 30, 1 << 30)
    plans = {l.name: plan_layer(l, packed[l.name], array, big) for l in model.compute_layers}
    if engine == "sequenced":          # one datapath: every layer held for the most phases any layer needs
        phases = max(p.phases for p in plans.values() if isinstance(p, LayerPlan))
        plans = {n: with_phases(p, phases) if isinstance(p, LayerPlan) else p for n, p in plans.items()}
    total, pending, macs = 0, None, 0
    for layer in model.layers:
        if isinstance(layer, QuantLayer):
            if pending is not None:
                total += pending + 1                  # the previous compute layer's hand-over, then start
            total += plans[layer.name].model["total"] + 1
            pending = layer.n * layer.pixels
            macs += int(np.count_nonzero(layer.weight)) * layer.pixels
        elif is_pool(layer):
            if pending is not None:
                pending += pool_cycles(layer)
        elif isinstance(layer, AddLayer):
            total += add_cycles(layer)
    return total, macs


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "models"
    r = run_cli("bench", "--models", "--quick", "--network", "kws-dscnn", "--network", "ic-resnet8",
                "--scheme", "dense", "--scheme", "tight", "--array", "2x2", "--out", str(out), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, json.loads((out / "models.json").read_text()), r.stdout


def test_quick_run_writes_every_column(quick_bench):
    out, doc, stdout = quick_bench
    assert doc["networks"] == ["kws-dscnn-tiny", "ic-resnet8-tiny"]
    assert [(r["network"], r["config"]) for r in doc["rows"]] == [
        (n, c) for n in doc["networks"] for c in ("dense 2x2", "tight 2x2 alpha=2")]
    for r in doc["rows"]:
        assert "error" not in r, r
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["stored_bits"] == sum(r[k] for k in ("weight_bits", "index_bits", "table_bits", "constant_bits",
                                                      "descriptor_bits")) > 0
        assert r["buffers"] == sum(r["buffer_bits"].values()) > 0
        assert (out / r["manifest"] / "manifest.json").is_file()
        assert r["training"] == QUICK_TRAINING.get(r["scheme"], {})
    assert (out / "models.txt").read_text().strip() in stdout
    assert (out / "models.png").is_file() and (out / ".sparsyn-model-bench").is_file()


def test_cycles_are_the_per_layer_cycle_models_summed(quick_bench):
    out, doc, _ = quick_bench
    engines = {r["network"]: r["engine"] for r in doc["rows"]}
    assert engines == {"kws-dscnn-tiny": "sequenced", "ic-resnet8-tiny": "layer-sum"}   # a chain, a graph
    for r in doc["rows"]:
        cycles, macs = _independent_cycles(out / r["manifest"], r["engine"])
        assert r["cycles"] == cycles, (r["network"], r["config"])
        assert r["useful_macs"] == macs
        assert r["utilization"] == pytest.approx(macs / (r["mac_units"] * cycles))
        assert sum(l["useful_macs"] for l in r["layers"]) == macs


def test_fits_are_booleans_against_the_devices(quick_bench):
    _, doc, _ = quick_bench
    for r in doc["rows"]:
        for col, part in TARGETS.items():
            assert isinstance(r[col], bool)
            need = r["stored_bits"] + r["buffers"]
            assert r["fit"][col]["need"] == need
            dev = DEVICES[part]
            assert r["fit"][col]["have"] == dev.bram_bits + dev.spram_bits
            if not dev.spram_bits:                       # the UP5K's placements: test_up5k_fit_moves_...
                assert r[col] == (need <= dev.bram_bits)


def test_anchors_are_printed(quick_bench):
    out, doc, stdout = quick_bench
    figures = {(a["network"], a["design"].split(" ")[0]): a for a in doc["anchors"]}
    assert figures[("kws-dscnn", "VexRiscv")]["cycles"] == 25.2e6
    assert figures[("kws-dscnn", "fpgaConvNet")]["latency_ms"] == 4.21
    assert figures[("ic-resnet8", "fpgaConvNet")]["latency_ms"] == 3.15
    assert figures[("ic-resnet8", "hls4ml")]["latency_ms"] == 7.64
    assert figures[("ad-autoencoder", "hls4ml")]["latency_ms"] == pytest.approx(0.0187)
    assert all(a["source"] for a in doc["anchors"])
    for text in ("25.2 M cycles", "4.21 ms", "3.15 ms", "27.3 ms", "18.7 us", "memory-level"):
        assert text in stdout


def test_up5k_column_is_the_board_memory_check(quick_bench):
    """Arrays of at most 4 PEs: the UP5K column is the iCEBreaker inference top's own memory check — the tiny DS-CNN
    chain is placed (EBR / SPRAM blocks within the device), the tiny ResNet-8 graph is refused by the board (no
    whole-model engine for graphs), with its reason under the table."""
    out, doc, stdout = quick_bench
    for r in doc["rows"]:
        board = r["fit"]["up5k"]["board"]
        assert r["up5k"] is board["fits"] is r["fit"]["up5k"]["fits"]
        if r["network"] == "kws-dscnn-tiny":
            assert board["fits"], board
            assert 0 < board["ebr"] <= board["ebr_available"] == 30
            assert board["spram"] <= board["spram_available"] == 4
            assert set(board["placement"]) == {"weights", "scratch", "acts"}
        else:
            assert not board["fits"] and "graph" in board["reason"], board
    assert "(board)" in stdout and "not on the icebreaker (its memory check):" in stdout


def test_reuse_measures_the_earlier_manifests_again(quick_bench, tmp_path):
    """--reuse: the same network / scheme / array / options are measured from a copy of the earlier run's manifest
    (no compression: same seal, same figures); the earlier folder is left as it was."""
    out, doc, _ = quick_bench
    before = sorted(p.name for p in out.rglob("*"))
    again = tmp_path / "again"
    r = run_cli("bench", "--models", "--quick", "--network", "kws-dscnn", "--scheme", "dense", "--array", "2x2",
                "--reuse", str(out), "--out", str(again), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    new = json.loads((again / "models.json").read_text())
    (row,) = new["rows"]
    (old,) = [o for o in doc["rows"] if (o["network"], o["config"]) == (row["network"], row["config"])]
    assert row["reused_from"] == str(out / old["manifest"])
    for key in ("stored_bits", "cycles", "useful_macs", "utilization", "up5k", "ecp5_25f", "ecp5_85f"):
        assert row[key] == old[key], key
    seal = lambda d: json.loads((d / row["manifest"] / "manifest.json").read_text())["seal"]     # noqa: E731
    assert seal(again) == seal(out)
    assert sorted(p.name for p in out.rglob("*")) == before


def test_reuse_refuses_a_folder_that_is_not_a_model_bench(tmp_path):
    r = run_cli("bench", "--models", "--quick", "--network", "kws-dscnn", "--reuse", str(tmp_path),
                "--out", str(tmp_path / "o"))
    assert "not an output folder of 'sparsyn bench --models'" in one_line_error(r)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("training,expect", [({}, {"alpha": 2}),
                                             (SHORT_TRAINING, {"alpha": 2, "prune_steps": 1, "finetune_epochs": 1})])
def test_training_table_reaches_the_compressor(monkeypatch, tmp_path, training, expect):
    """--training short: the compressor gets the short training options on top of the configuration's (and the row
    says so); full: the configuration's options only."""
    import sparsyn.sw.compress as compress_module
    from sparsyn.sw.errors import SparsynError
    seen = {}

    def fake_compress(**kw):
        seen.update(kw)
        raise SparsynError("stop here")
    monkeypatch.setattr(compress_module, "compress", fake_compress)
    row = run_config("kws-dscnn", "tight", "1x2", {"alpha": 2}, tmp_path, training, [], lambda *a: None, False)
    assert seen["options"] == expect and seen["model"] == "zoo:kws-dscnn"
    assert row["error"] == "stop here" and row["training"] == training.get("tight", {})


def test_reuse_takes_the_earlier_refusals(monkeypatch, tmp_path):
    """A configuration an earlier run refused (same network, scheme, array, options and training) is refused again
    without compressing; another training is compressed."""
    import sparsyn.sw.compress as compress_module
    from sparsyn.boards.model_bench import MARKER
    from sparsyn.sw.errors import SparsynError
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / MARKER).touch()
    row = {"network": "kws-dscnn", "config": "tight 1x2 alpha=2", "scheme": "tight", "array": "1x2",
           "options": {"alpha": 2}, "training": {}, "error": "layer 31 refused it"}
    (earlier / "models.json").write_text(json.dumps({"rows": [row]}))
    calls = []

    def fake_compress(**kw):
        calls.append(kw)
        raise SparsynError("compressed")
    monkeypatch.setattr(compress_module, "compress", fake_compress)
    args = ("kws-dscnn", "tight", "1x2", {"alpha": 2}, tmp_path / "stage")
    again = run_config(*args, {}, [], lambda *a: None, False, [earlier])
    assert again["error"] == "layer 31 refused it" and again["reused_from"] == str(earlier / "models.json")
    assert calls == []
    short = run_config(*args, SHORT_TRAINING, [], lambda *a: None, False, [earlier])
    assert short["error"] == "compressed" and len(calls) == 1


def test_up5k_fit_moves_weights_and_scratch_to_spram():
    """Block RAM alone; the shared weight memory, the scratch, both in SPRAM; index / tables / input buffers never."""
    up5k, ecp = DEVICES["iCE40UP5K"], DEVICES["LFE5U-25F"]
    ebr = up5k.bram_bits
    buf = {"input": 1000, "scratch": 0, "accumulator": 0, "own": 0, "branch": 0}

    def where(stored, scratch=0, weights=0, device=up5k):
        fit = device_fit(device, {"stored_bits": stored}, {**buf, "scratch": scratch}, spram_weights=weights)
        assert fit["fits"] == (fit["placement"] is not None)
        return fit["placement"]
    assert where(ebr - 1000) == "block RAM"
    assert where(ebr - 1000 + 300_000, weights=300_000) == "weights in SPRAM"
    assert where(ebr - 1000, scratch=200_000) == "scratch in SPRAM"
    assert where(ebr - 1000 + 300_000, scratch=200_000, weights=300_000) == "weights + scratch in SPRAM"
    assert where(ebr + 1, weights=0) is None                      # what is not weights / scratch stays in EBR
    assert where(ebr - 1000 + 8 * 1024 * 1024, weights=8 * 1024 * 1024) is None      # > the 4 SPRAMs
    assert where(ecp.bram_bits - 1000, device=ecp) == "block RAM"
    assert where(ecp.bram_bits, weights=1000, device=ecp) is None                     # no SPRAM on the ECP5


def test_refused_configurations_are_retried_with_options_for_the_small_layer():
    """VWW's classifier has 2 outputs: a 4x4 block, a group of 4 columns cannot fit it."""
    layers = [{"name": "c1", "kind": "conv", "kernel": (3, 3), "n": 8, "k": 27, "groups": 1},
              {"name": "pw", "kind": "conv", "kernel": (1, 1), "n": 16, "k": 8, "groups": 1},
              {"name": "fc", "kind": "linear", "kernel": (1, 1), "n": 2, "k": 256, "groups": 1}]
    assert fallback_options("permdiag", {"p": 4}, layers) == {"p": 4, "layer_p": {"fc": 2}}
    assert fallback_options("packcnn", {}, layers) == {"layer_alpha": {"fc": 2}}
    assert fallback_options("tight", {"alpha": 4}, layers) == {"alpha": 2}
    assert fallback_options("tight", {"alpha": 2}, layers) is None            # nothing left to change
    assert fallback_options("dense", {}, layers) is None


def test_select_configs():
    assert select_configs(["tight"], ["1x2", "2x2"]) == [("tight", "1x2", {"alpha": 2}), ("tight", "2x2", {"alpha": 2})]
    assert select_configs(["tight"], ["1x3"]) == [("tight", "1x3", {"alpha": 2, "dense_first": 0})]
    assert {a for s, a, _ in select_configs(["dense"])} == {"2x2", "4x4"}
    assert [o for _, _, o in select_configs(["permdiag"], ["2x1"])] == [{"p": 4}, {"p": 4, "convs": 1}]


@pytest.mark.parametrize("args,expect", [
    (["--models", "--network", "resnet50"], "unknown network 'resnet50' for the model benchmark"),
    (["--models", "--scheme", "sparse"], "unknown scheme 'sparse'"),
    (["--models", "--array", "4by4"], "is not of the form RxC"),
    (["--models", "--fpga"], "--fpga does not apply to the model benchmark"),
    (["--network", "kws-dscnn"], "--network applies to the model benchmark (--models)"),
    (["--reuse", "work"], "--reuse applies to the model benchmark (--models)"),
    (["--training", "short"], "--training applies to the model benchmark (--models)"),
    (["--models", "--quick", "--training", "short"], "--quick already trains short"),
    (["--scheme", "dense"], "no per-scheme benchmark for 'dense'"),
])
def test_bad_input_is_one_line(args, expect):
    assert expect in one_line_error(run_cli("bench", *args))
