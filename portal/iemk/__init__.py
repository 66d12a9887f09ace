"""ИЭМК N3.Health (Нетрика): the regional integrated electronic medical record (SPEC I).

`pix` talks to the patient index (PixService): a patient must be registered there, and known by
its IdGlobal, before any case or document about them can be sent to EMKService. Blueprint only:
create_app imports the views, so models import without the web layer.
"""

from flask import Blueprint

bp = Blueprint("iemk", __name__, url_prefix="/iemk")
