"""``tensorwire.formats.flower``, the name the design brief gives the Flower adapters:
the very module :mod:`tensorwire.integrations.flower`."""

import sys

from ..integrations import flower

sys.modules[__name__] = flower
