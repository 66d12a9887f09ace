"""Blueprint only: create_app imports the views, so models import without the web layer."""

from flask import Blueprint

bp = Blueprint("clinical", __name__, url_prefix="/clinical")
api_bp = Blueprint("api", __name__, url_prefix="/api/v1")
