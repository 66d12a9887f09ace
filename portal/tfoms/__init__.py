"""ТФОМС file exchange: batch identification by DBF (seed 4.3), the attachment file (4.5.1) and
the prophylactic-plan export with its error answer (4.5.2).

Blueprint only: create_app imports the views, so models import without the web layer.
"""

from flask import Blueprint

bp = Blueprint("tfoms", __name__, url_prefix="/tfoms")
