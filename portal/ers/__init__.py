"""ФСС «Электронный родовой сертификат» (АИСТ_ЭРС, SPEC E): contract with ФСС, signed and
encrypted requests (createErs, visits, talons) and their asynchronous results, the request registry.
"""

from flask import Blueprint

bp = Blueprint("ers", __name__, url_prefix="/ers")
