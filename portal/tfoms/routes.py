"""ТФОМС file exchange pages; each part keeps its views in its own module."""

from portal.tfoms import attachment_views as _attachment_views  # noqa: F401
from portal.tfoms import ident_views as _ident_views  # noqa: F401
from portal.tfoms import plan_views as _plan_views  # noqa: F401
