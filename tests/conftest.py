"""Shared pytest fixtures (kept generic: other areas may add theirs here)."""
import pytest

from sparsyn.sim.tools import SIMULATORS, have_simulator


@pytest.fixture(params=SIMULATORS)
def simulator(request) -> str:
    """Each RTL simulator in turn ("icarus", "verilator"); skipped with the reason when one is missing."""
    reason = have_simulator(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="session")
def compressed_digits():
    """``compressed_digits(scheme, array, **opts) -> (qmodel, packed)``: the default digits model compressed as
    ``sparsyn compress`` does, once per configuration in the test session (short schedules keep it quick)."""
    from sparsyn.sim.check import compressed_default
    from sparsyn.sw.schemes import get_scheme
    cache = {}

    def get(scheme, array, **opts):
        key = (scheme, str(array), tuple(sorted(opts.items())))
        if key not in cache:
            qmodel, packed, _, _ = compressed_default(get_scheme(scheme)(array=array, **opts), images=1)
            cache[key] = (qmodel, packed)
        return cache[key]
    return get


#: Short compression schedules per scheme for tests of the hardware (the structure, not the accuracy, is tested).
QUICK_OPTS = {"dense": {}, "packcnn": {"prune_steps": 1, "finetune_epochs": 1},
              "tight": {"alpha": 2, "prune_steps": 1, "finetune_epochs": 1, "anneal_steps": 20},
              "ternary": {"penalty_epochs": 2, "finetune_epochs": 2},
              "permdiag": {"p": 4, "epochs": 2}, "pattern": {"prune_steps": 2, "finetune_epochs": 1},
              # one multiplier per PE: the convs' PEs take 4 phases per step, the linear layer's 2
              "pattern-m1": {"prune_steps": 2, "finetune_epochs": 1, "mults": 1}}


@pytest.fixture(scope="session")
def quick_opts():
    return QUICK_OPTS


@pytest.fixture(scope="session")
def dense_row_manifest(tmp_path_factory):
    """The default digits model compressed with ``--scheme dense --array 1x2`` (a 1-row array: the pass store), once
    per session; read-only for the tests."""
    from sparsyn.sw.testing import run_cli
    out = tmp_path_factory.mktemp("dense-1x2") / "dense"
    r = run_cli("compress", "--scheme", "dense", "--array", "1x2", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def dense_manifest(tmp_path_factory):
    """The default digits model compressed with ``sparsyn compress --scheme dense --array 2x2`` (the CLI, as a user
    runs it), once per session; read-only for the tests (one that edits a manifest copies it first)."""
    from sparsyn.sw.testing import run_cli
    out = tmp_path_factory.mktemp("dense-2x2") / "dense"
    r = run_cli("compress", "--scheme", "dense", "--array", "2x2", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    return out
