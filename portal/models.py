"""Imports every feature's models so that metadata (and Alembic) sees all tables.

Clinical models come first: admin and auth models refer to them.
"""

from portal.clinical.models import (  # noqa: F401, I001
    Attachment,
    ClinicalEvent,
    Department,
    Hospitalisation,
    Insurer,
    Mo,
    Patient,
    PatientPolicy,
    PlanPerson,
    Pregnancy,
    ProphylacticPlan,
    Staff,
)
from portal.admin.models import AuditLog, Certificate, MoIntegration, Setting  # noqa: F401
from portal.auth.models import ApiToken, LoginFailure, User  # noqa: F401
from portal.exchange.models import JournalEntry, ServiceRun, WorkItem  # noqa: F401, E402
from portal.vimis.models import Semd, SemdVersion  # noqa: F401, E402
from portal.ers.models import ErsContract, ErsRequest  # noqa: F401, E402
from portal.reports.models import ReportRun  # noqa: F401, E402
from portal.iemk.models import IemkCase, IemkDocument, VisitReport  # noqa: F401, E402
from portal.tfoms.models import IdentPackage, IdentRecord, PlanExport, PlanExportRecord  # noqa: F401, E402
