"""Blueprint only: create_app imports the views, so models import without the web layer."""

from flask import Blueprint

bp = Blueprint("auth", __name__)
