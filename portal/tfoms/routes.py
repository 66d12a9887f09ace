"""ТФОМС file exchange pages; each part keeps its views in its own module."""

from flask import request

from portal.tfoms import attachment_views as _attachment_views  # noqa: F401
from portal.tfoms import bp
from portal.tfoms import ident_views as _ident_views  # noqa: F401
from portal.tfoms import packet_views as _packet_views  # noqa: F401
from portal.tfoms import plan_views as _plan_views  # noqa: F401
from portal.tfoms.files import max_upload_bytes

# Views that take an answer file, which may be larger than the app's request limit.
UPLOAD_ENDPOINTS = frozenset({"tfoms.ident_upload", "tfoms.plans_answer"})


@bp.url_value_preprocessor
def _answer_upload_limit(endpoint: str | None, values: dict | None) -> None:
    """The upload views get TFOMS_MAX_UPLOAD_BYTES (plus room for the form around the file) and
    refuse a larger file themselves, with a message. URL value preprocessors run before every
    before_request, and the CSRF check there reads the form."""
    if endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = max_upload_bytes() + 1024 * 1024
