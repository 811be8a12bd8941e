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
