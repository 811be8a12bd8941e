"""Per-scheme hardware: each module defines ``HARDWARE = SchemeHardware(...)`` (PE datapath factory and
engine); the scheme's software spec names its module (``Scheme.hardware``), see :mod:`.base`."""
from .base import ProductUnit, SchemeHardware, make_product, scheme_hardware  # noqa: F401
