"""Imports every feature's models so that metadata (and Alembic) sees all tables."""

from portal.admin.models import AuditLog, Certificate, MoIntegration, Setting  # noqa: F401
from portal.auth.models import ApiToken, LoginFailure, User  # noqa: F401
from portal.clinical.models import (  # noqa: F401
    ClinicalEvent,
    Department,
    Hospitalisation,
    Mo,
    Patient,
    Pregnancy,
    Staff,
)
