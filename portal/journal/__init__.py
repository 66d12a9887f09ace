"""Blueprint only: create_app imports the views, so the queries import without the web layer."""

from flask import Blueprint

bp = Blueprint("journal", __name__, url_prefix="/journal")
