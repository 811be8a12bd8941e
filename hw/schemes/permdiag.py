"""``permdiag`` hardware: its own engine (no shared-array PE) — :class:`~sparsyn.hw.permdiag_engine.PermDiagEngine`."""
from __future__ import annotations

from sparsyn.hw.permdiag_engine import PermDiagEngine

from .base import SchemeHardware

HARDWARE = SchemeHardware(engine=PermDiagEngine)
