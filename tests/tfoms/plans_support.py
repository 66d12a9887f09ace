"""Shared set-up of the prophylactic-plan tests: plans with people of two СМО, form posts, answers."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import date
from types import SimpleNamespace

from portal.admin.services import set_integration
from portal.clinical.models import PLAN_PERSON_NEW, PLAN_PERSON_SENT, PlanPerson
from portal.extensions import db
from portal.tfoms.models import PlanExport
from tests import factories
from tests.conftest import csrf_token, login

YEAR = date.today().year
YY = f"{YEAR % 100:02d}"


def setup_plans(region) -> SimpleNamespace:
    """МО «a» with the ТФОМС plan exchange switched on: a ПОВН plan of the II quarter with five
    people (two new, two sent, one accepted — two СМО), a ДВН plan of the same period with one
    new person, and a ПОВН plan of МО «b»."""
    mo = region.a.mo
    set_integration(mo, "tfoms_prof", True)
    factories.make_insurer("35001", name="СМО «Капитал»")
    factories.make_insurer("35002", name="СМО «Согаз»")
    plan = factories.make_plan(mo, kind="5", year=YEAR, quarter=2, name="ПОВН II квартал")
    dvn = factories.make_plan(mo, kind="1", year=YEAR, quarter=2, name="ДВН II квартал")
    patients = [
        factories.make_patient(
            mo, last_name="Иванова", first_name="Мария", middle_name="Петровна", insurer_code="35001"
        ),
        factories.make_patient(
            mo, last_name="Петрова", first_name="Анна", middle_name=None, insurer_code="35002"
        ),
        factories.make_patient(mo, last_name="Сидорова", first_name="Ольга", insurer_code="35001"),
        factories.make_patient(mo, last_name="Кузнецова", first_name="Ирина", insurer_code="35002"),
        factories.make_patient(mo, last_name="Смирнова", first_name="Елена", insurer_code="35001"),
        factories.make_patient(mo, last_name="Орлова", first_name="Дарья", insurer_code="35001"),
    ]
    people = [
        factories.make_plan_person(plan, patients[0], quarter=2),
        factories.make_plan_person(plan, patients[1], quarter=3),
        factories.make_plan_person(plan, patients[2], quarter=2, status=PLAN_PERSON_SENT),
        factories.make_plan_person(plan, patients[3], quarter=2, status=PLAN_PERSON_SENT),
        factories.make_plan_person(plan, patients[4], quarter=2, status="accepted"),
    ]
    dvn_person = factories.make_plan_person(dvn, patients[5], quarter=2)
    other_plan = factories.make_plan(region.b.mo, kind="5", year=YEAR, quarter=2)
    other_person = factories.make_plan_person(other_plan, region.b.patients[0], quarter=2)
    db.session.commit()
    return SimpleNamespace(
        mo=mo, plan=plan, dvn=dvn, patients=patients, people=people, dvn_person=dvn_person,
        other_plan=other_plan, other_person=other_person,
    )  # fmt: skip


def form(plans, **fields) -> dict:
    data = {"plan": [str(p.id) for p in plans], "report_month": "1", "report_year": str(YEAR), "packet": "1"}
    data.update(fields)
    return data


def post_export(client, plans, htmx: bool = False, **fields):
    token = csrf_token(client, "/tfoms/plans")
    data = form(plans, **fields)
    data["csrf_token"] = token
    headers = {"HX-Request": "true", "HX-Target": "export-panel"} if htmx else {}
    return client.post("/tfoms/plans/export", data=data, headers=headers)


def statuses(*people) -> list[str]:
    db.session.expire_all()
    return [db.session.get(PlanPerson, p.id).status for p in people]


def exports() -> list[PlanExport]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(PlanExport).order_by(PlanExport.id)))


def unzip(export: PlanExport) -> tuple[list[str], bytes]:
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        names = archive.namelist()
        return names, archive.read(names[0])


def oshib_pr(
    fname_i: str, errors=(), *, fname: str = "ERR_PROF", encoding: str = "windows-1251", version: str = "1.0"
) -> bytes:
    """An OSHIB_PR answer: errors are (OSHIB, NOMER_Z, COMMENT or None)."""
    zaps = "".join(
        f"<ZAP_OSHIB><OSHIB>{code}</OSHIB><NOMER_Z>{nomer}</NOMER_Z>"
        + (f"<COMMENT>{comment}</COMMENT>" if comment else "")
        + "</ZAP_OSHIB>"
        for code, nomer, comment in errors
    )
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<OSHIB_PR><VERSION>{version}</VERSION>'
        f"<DATA>{date.today().isoformat()}</DATA><FNAME>{fname}</FNAME><FNAME_I>{fname_i}</FNAME_I>{zaps}</OSHIB_PR>"
    )
    return text.encode(encoding)


def zipped(name: str, payload: bytes, *more: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, payload)
        for extra_name, extra in more:
            archive.writestr(extra_name, extra)
    return buffer.getvalue()


def upload(client, name: str, data: bytes, htmx: bool = False):
    token = csrf_token(client, "/tfoms/plans")
    headers = {"HX-Request": "true", "HX-Target": "upload-result"} if htmx else {}
    return client.post(
        "/tfoms/plans/answers",
        data={"csrf_token": token, "file": (io.BytesIO(data), name)},
        headers=headers,
        content_type="multipart/form-data",
    )


def exported(client, user, plans, **fields) -> PlanExport:
    """Log in, export and return the (last) export made."""
    login(client, user)
    response = post_export(client, plans, **fields)
    assert response.status_code == 200, re.sub(r"\s+", " ", response.get_data(as_text=True))[-1500:]
    return exports()[-1]


__all__ = ["PLAN_PERSON_NEW"]
