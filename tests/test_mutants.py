"""The mutation check's own guarantees (the full run is ``make mutate``): every listed bug still applies to the
source (no stale mutant), the scratch copy is what the tests import, a listed bug is killed and the same run
without the bug passes."""
from sparsyn.sim.mutants import MUTANTS, Mutant, check_scratch_import, run_mutant, source_root


def test_every_mutant_applies_to_the_source():
    assert len(MUTANTS) >= 12 and len({m.name for m in MUTANTS}) == len(MUTANTS)
    for m in MUTANTS:
        assert (source_root() / m.file).read_text().count(m.old) == 1, m.name
        assert m.old != m.new and m.tests, m.name
        for t in m.tests:
            assert (source_root() / t.split("::")[0]).is_file(), (m.name, t)


def test_a_mutant_is_killed_and_its_control_survives():
    check_scratch_import()
    mutant = next(m for m in MUTANTS if m.name == "ternary_sign")
    assert run_mutant(mutant)["status"] == "killed"
    control = Mutant("control", mutant.file, mutant.old, mutant.old, mutant.tests, "no change")
    assert run_mutant(control)["status"] == "survived"
