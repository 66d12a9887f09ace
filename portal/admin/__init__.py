"""Blueprint only: create_app imports the views, so models import without the web layer."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
