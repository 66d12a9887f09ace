"""Shared steps of the batch identification tests: switch the procedure on, select people, form a
package, answer it the ТФОМС stand-in's way, upload through the page."""

from __future__ import annotations

import io
from datetime import date

from portal.admin.models import MoIntegration
from portal.extensions import db
from portal.tfoms import ident
from portal.tfoms.files import tfoms_dir
from portal.tfoms.models import IdentPackage, IdentRecord
from simulators.tfoms import Person, Register, answer_dbf
from tests import factories
from tests.conftest import csrf_token

PAGE = "/tfoms/ident"
HX = {"HX-Request": "true"}


def switch_on(mo) -> None:
    db.session.add(MoIntegration(mo_id=mo.id, key=ident.PROCEDURE, enabled=True))
    db.session.flush()


def insurers() -> None:
    for code, ogrn in factories.INSURERS:
        factories.make_insurer(code, ogrn)


def package_of(patients, mo=None) -> IdentPackage:
    """Select the patients with the button's service and form the МО's package (committed)."""
    for patient in patients:
        ident.identify_patient(patient)
    result = ident.form_packages((mo or patients[0].mo).id)
    db.session.commit()
    assert result.packages, result.message
    return result.packages[0]


def request_file(package: IdentPackage) -> bytes:
    return (tfoms_dir("ident") / package.file_name).read_bytes()


def register_for(**outcomes) -> Register:
    """Explicit stand-in register: {outcome: [patients]} (insured, errors, eerp, missing), each
    entry may add policy fields as (patient, {"rnpol": …})."""
    people = []
    for outcome, patients in outcomes.items():
        for item in patients:
            patient, extra = item if isinstance(item, tuple) else (item, {})
            people.append(
                Person(
                    patient.last_name,
                    patient.first_name,
                    patient.middle_name or "",
                    patient.birth_date,
                    outcome,
                    **extra,
                )
            )
    return Register(people)


def answer_for(package: IdentPackage, register: Register | None = None) -> bytes:
    return answer_dbf(request_file(package), register)


def upload(client, name: str, data: bytes, *, htmx: bool = True, **fields):
    token = csrf_token(client, PAGE)
    form = {"csrf_token": token, "file": (io.BytesIO(data), name), **fields}
    return client.post(
        f"{PAGE}/upload", data=form, headers=HX if htmx else {}, content_type="multipart/form-data"
    )


def statuses(package_id: int) -> dict[int, str]:
    db.session.expire_all()
    return dict(
        db.session.execute(
            db.select(IdentRecord.patient_id, IdentRecord.status).where(IdentRecord.package_id == package_id)
        ).all()
    )


def record_of(patient) -> IdentRecord:
    db.session.expire_all()
    return db.session.scalars(
        db.select(IdentRecord).where(IdentRecord.patient_id == patient.id).order_by(IdentRecord.id.desc())
    ).first()


def today_name(mo, n: int = 1, day: date | None = None) -> str:
    return f"{mo.f003_code}_{(day or date.today()):%d%m%Y}_{n}"
