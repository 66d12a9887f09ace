from flask import Blueprint

bp = Blueprint("clinical", __name__, url_prefix="/clinical")
api_bp = Blueprint("api", __name__, url_prefix="/api/v1")

from portal.clinical import api, routes  # noqa: E402,F401
