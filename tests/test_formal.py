"""Formal proofs (``sparsyn prove``, SymbiYosys + Z3): every fast proof passes in the default suite, the slow ones
behind the ``slow`` marker; and the proofs can fail — a wrong unit or a wrong reference is caught."""
import numpy as np
import pytest

from sparsyn.sim import formal
from sparsyn.sw.errors import SparsynError

FAST = [p for p in formal.proofs() if not p.slow]
SLOW = [p for p in formal.proofs() if p.slow]


@pytest.mark.parametrize("proof", FAST, ids=[p.name for p in FAST])
def test_fast_proof_passes(proof, tmp_path):
    row = formal.run_proof(proof, tmp_path, timeout=600)
    assert row["status"] == "pass", open(row["log"]).read()[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("proof", SLOW, ids=[p.name for p in SLOW])
def test_slow_proof_passes(proof, tmp_path):
    row = formal.run_proof(proof, tmp_path, timeout=3600)
    assert row["status"] == "pass", open(row["log"]).read()[-2000:]


def test_every_scheme_pe_and_the_requant_unit_have_proofs():
    from sparsyn.hw.schemes import scheme_hardware
    from sparsyn.sw.schemes import scheme_names
    names = " ".join(p.name for p in formal.proofs())
    for scheme in scheme_names():
        if scheme_hardware(scheme).product is None:
            continue                      # own engine, no shared-array PE (permdiag: simulated, see README)
        key = "tight" if scheme == "packcnn" else scheme
        assert f"pe_{key}" in names, scheme
    assert {p.mode for p in formal.proofs() if p.unit == "requant"} == {"bmc"}
    assert {"requant_signed", "requant_relu"} <= {p.name.rsplit("_m", 1)[0] for p in formal.proofs()}


def _fails(build, tmp_path, name, mode="prove", depth=2):
    return formal.run_proof(formal.Proof("mutant", name, build, mode=mode, depth=depth), tmp_path / name,
                            timeout=300)["status"] == "fail"


def test_proofs_catch_wrong_units(tmp_path, monkeypatch):
    """A reference off by one, a pattern PE built from another table than the spec, a requant clamp at 126: each
    proof fails (the harnesses are not vacuous)."""
    from sparsyn.hw.schemes import make_product
    from sparsyn.sw.array_format import bits_for_range
    from sparsyn.sw.schemes import PackedLayer, get_scheme
    from sparsyn.sw.schemes.pattern import pattern_rom

    def dense_off_by_one():
        packed = PackedLayer("dense", {"weight_bits": 8}, {})
        ref = formal.table_reference(get_scheme("dense"), packed, 8)
        return formal._product_harness(make_product(packed), lambda m, e, xs: ref(m, e, xs) + 1)
    assert _fails(dense_off_by_one, tmp_path, "dense_off_by_one")

    def pattern_other_table():
        table = np.zeros((3, 4), dtype=bool)
        for i, pos in enumerate([(0, 1), (1, 2), (2, 3)]):
            table[i, list(pos)] = True
        meta = {"group": 4, "keep": 2, "patterns": 3, "zero_id": False, "weight_bits": 8, "index_bits": bits_for_range(3)}
        spec = PackedLayer("pattern", meta, {"patterns": pattern_rom(table)})
        hw = PackedLayer("pattern", meta, {"patterns": pattern_rom(table[[0, 2, 1]])})
        ref = formal.pattern_reference(get_scheme("pattern"), spec)
        return formal._unit_vector_harness(make_product(hw), ref.unit_vectors)
    assert _fails(pattern_other_table, tmp_path, "pattern_other_table")

    import torch

    import sparsyn.sw.golden as golden
    real_im2col = golden.im2col
    monkeypatch.setattr(golden, "im2col", lambda layer, x: torch.roll(real_im2col(layer, x), 1, dims=2))
    assert _fails(lambda: formal._lane_address_harness(2, 5, 5, 3, 2, 1), tmp_path, "im2col_other_reference")
    monkeypatch.setattr(golden, "im2col", real_im2col)

    import sparsyn.hw.requant as requant
    monkeypatch.setattr(requant, "ACT_MAX", 126)
    assert _fails(lambda: formal._requant_harness(False, 0x4001), tmp_path, "requant_clamp_126", "bmc", 9)


def test_prove_cli_refuses_an_unknown_unit(capsys):
    from sparsyn.sw.cli import main
    assert main(["prove", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no proof named 'nope'" in err and "units: pe, requant, im2col" in err


def test_run_proofs_writes_a_summary(tmp_path):
    rows = formal.run_proofs("pe_ternary_t2", tmp_path, log=lambda *a: None)
    assert [r["status"] for r in rows] == ["pass"]
    assert (tmp_path / "prove.json").is_file()
    with pytest.raises(SparsynError):
        formal.run_proofs("nope", tmp_path, log=lambda *a: None)
