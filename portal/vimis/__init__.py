"""ВИМИС «АКиНЕО»: triggers → SEMD (CDA builders, checks) → signed send → ФЛК result; registry.

Blueprint only: create_app imports the views, so models import without the web layer.
"""

from flask import Blueprint

bp = Blueprint("vimis", __name__, url_prefix="/vimis")
