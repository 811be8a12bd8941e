"""sw/bench_tight.py table functions on tiny matrices: rates recomputed independently from the packed
layers' ROMs (grouped form and the chip's memory images for the array), the 1/density bound, the goal
verdicts and the JSON report (no timing asserted)."""
import json

import numpy as np
import pytest

from sparsyn.sw import bench_tight as bt
from sparsyn.sw.packing import decode_packed
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.subword import subword_count


def test_config_for_alpha_per_density():
    cfg = {d: bt.config_for(d, 4) for d in (0.5, 0.25, 0.1, 0.05)}
    assert cfg[0.5] == {"alpha": 2}                         # scheme options only: the array is given apart
    assert all(cfg[d] == {"alpha": 4} for d in (0.25, 0.1, 0.05))
    assert bt.config_for(0.05, 16)["alpha"] <= 16          # never above the array's columns (section height)
    assert bt.config_for(0.05, 2)["alpha"] == 2
    for d in (0.5, 0.05):                                   # every setting is a valid scheme for the array
        for scheme, opts, _, _ in bt.scheme_settings(d, 4, (0.0, 0.05)):
            get_scheme(scheme)(array=ArrayConfig(4, 4), **opts)
    assert [bt.packcnn_alpha(d) for d in (0.5, 0.25, 0.1, 0.05)] == [2, 4, 16, 16]


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
def test_rate_rows_match_packed_layers(subword):
    """Every rate in the table equals the figure recomputed from the packed layer's ROMs."""
    rng = np.random.default_rng(1)
    mats = {"tiny": rng.standard_normal((16, 60))}
    keep = {}
    rows = bt.rate_rows(mats, (0.5, 0.25), ArrayConfig(4, 4), gammas=(0.0, 0.5),
                        subword_points={("tiny", 0.25)} if subword else (), keep=keep, log=lambda *_: None)
    labels = {r["scheme"] for r in rows}
    assert {"tight", "tight lossless", "packcnn g=0", "packcnn g=0.5"} <= labels
    if subword:
        assert "tight+sub" in labels
    assert len(keep) == len(rows)
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
        if "lossless" in r["scheme"] or r["scheme"].endswith("g=0"):
            assert r["conflict_pruned"] == 0
        if r["gamma"]:
            assert r["alpha"] == bt.packcnn_alpha(r["density"])
        else:
            assert r["alpha"] == bt.config_for(r["density"], 4)["alpha"]


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


def _row(matrix, d, scheme, rate, bound, pruned=0.0, gamma=None):
    return {"matrix": matrix, "density": d, "scheme": scheme, "alpha": 4, "h": 4, "matrix_rate": rate,
            "bound": bound, "of_bound": rate / bound, "conflict_pruned": pruned, "gamma": gamma}


def test_goal_rows_verdicts():
    rows = [_row("m", 0.1, "tight", 9.5, 10, 0.01), _row("m", 0.1, "tight lossless", 9.0, 10),
            _row("m", 0.1, "packcnn g=0", 4.0, 10, gamma=0.0), _row("m", 0.1, "packcnn g=0.05", 5.0, 10, 0.1, 0.05),
            _row("n", 0.5, "tight", 1.7, 2, 0.02), _row("n", 0.5, "tight lossless", 1.5, 2),
            _row("n", 0.5, "packcnn g=0", 1.0, 2, gamma=0.0)]
    g = {r["matrix"]: r for r in bt.goal_rows(rows)}
    assert g["m"]["lossless_ratio"] == pytest.approx(9.0 / 4.0) and g["m"]["goal_2x_lossless"] == "PASS"
    assert g["m"]["budget_ratio"] == pytest.approx(9.5 / 5.0) and g["m"]["goal_2x_budget"] == "BELOW"
    assert g["m"]["goal_90_bound"] == "PASS" and g["m"]["goal_90_lossless"] == "PASS"
    assert g["n"]["goal_2x_lossless"] == "BELOW" and g["n"]["goal_90_bound"] == "BELOW"
    assert g["n"]["goal_90_lossless"] == "BELOW" and "budget_ratio" not in g["n"]


def test_report_written_and_printed(tmp_path, capsys):
    rows = [_row("vgg x", 0.1, "tight", 9.5, 10, 0.01), _row("vgg x", 0.1, "tight lossless", 9.0, 10),
            _row("vgg x", 0.1, "packcnn g=0", 4.0, 10, gamma=0.0),
            _row("vgg x", 0.1, "packcnn g=0.05", 5.0, 10, 0.1, 0.05)]
    goals = bt.goal_rows(rows)
    cycles = [{"model": "t", "layer": "fc", "scheme": "tight", "speedup_vs_dense": 3.0},
              {"model": "p g=0.25", "layer": "fc", "scheme": "packcnn", "speedup_vs_dense": 2.0}]
    doc = {"rates": rows, "goals": goals, "accuracy": [{"model": "dense int8", "int_acc": 98.0}], "cycles": cycles,
           "anneal": [{"n": 8, "k": 9, "seconds": 0.1}], "anchors": bt.anchor_rows(goals, cycles),
           "float_accuracy": 98.5, "seconds": 1.0}
    anchors = {a["figure"]: a for a in doc["anchors"]}
    assert anchors["Tight / PackCNN rate"]["measured"] == pytest.approx(9.5 / 5.0)
    assert anchors["Tight / PackCNN rate"]["paper"] == pytest.approx(14.13 / 5.88, abs=0.01)
    assert anchors["throughput tight / packcnn"]["measured"] == pytest.approx(1.5)
    path = bt.write_report(doc, ArrayConfig(4, 4), tmp_path / "out" / "tight.json")
    back = json.loads(path.read_text())
    assert back["goals"][0]["goal_2x_lossless"] == "PASS"
    assert back["rates"][0]["matrix_rate"] == 9.5
    out = capsys.readouterr().out
    assert "goals:" in out and "PASS" in out and "paper anchors" in out
