"""Permission matrix: every role × every page, fragment and action of the portal.

A role without the capability of a view gets the Russian 403; a user of one МО never reads
or changes another МО's data. A new route with an argument this file does not know fails the
test on purpose: add a sample for it below.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from datetime import date, timedelta
from pathlib import Path

from flask import url_for

from portal.admin.models import Certificate
from portal.auth.models import ApiToken, hash_token
from portal.auth.roles import ROLES, role_can
from portal.extensions import db
from portal.vimis.models import Semd, SemdVersion
from tests.conftest import login

PUBLIC = {"static", "auth.login", "main.healthz", "iemk.callback"}  # callback: a machine endpoint (SOAP)
SKIP_PREFIXES = ("api.",)  # the API authenticates by bearer token: tests/clinical/test_api.py


def _certificate(mo_id: int) -> Certificate:
    cert = Certificate(
        purpose="mo",
        mo_id=mo_id,
        subject="CN=Test",
        serial="1",
        valid_from=date.today() - timedelta(days=1),
        valid_to=date.today() + timedelta(days=100),
        cert_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
    )
    db.session.add(cert)
    db.session.flush()
    return cert


def _semd(side) -> Semd:
    """A SEMD of the side's event with a built version 1 (the registry, its fragments, the XML)."""
    event = side.event
    semd = Semd(
        event_id=event.id,
        semd_type=5,
        mo_id=event.mo_id,
        patient_id=event.patient_id,
        doctor_id=event.doctor_id,
        department_id=event.department_id,
        event_kind=event.kind,
        event_at=event.at,
        care_conditions=event.care_conditions,
        status="error",
        send_number=1,
        last_message="Нет адреса регистрации пациента",
        last_message_at=event.at,
    )
    db.session.add(semd)
    db.session.flush()
    db.session.add(
        SemdVersion(semd_id=semd.id, number=1, document_uuid=str(uuid.uuid4()), xml="<ClinicalDocument/>")
    )
    db.session.flush()
    return semd


def _plan_export(side):
    """A prophylactic plan of the side's МО and a PROF export of it (ТФОМС plan pages)."""
    from portal.tfoms.models import PlanExport
    from tests import factories

    plan = factories.make_plan(side.mo)
    export = PlanExport(mo_id=side.mo.id, batch=f"b{side.mo.id}", file_name=f"PROF_M{side.mo.registry_number}T35_26011",
                        year=2026, month=1, packet_number=1, record_count=0, content=b"PK")  # fmt: skip
    db.session.add(export)
    db.session.flush()
    return plan, export


def _ident_package(side):
    """An identification package of the side's МО (ТФОМС batch identification pages)."""
    from portal.tfoms.models import IdentPackage

    package = IdentPackage(mo_id=side.mo.id, name=f"{side.mo.f003_code}_01012026_1", formed_on=date(2026, 1, 1),
                           number=1)  # fmt: skip
    db.session.add(package)
    db.session.flush()
    return package


def _tfoms_packet(side):
    """A packet of the side's МО to ТФОМС, rejected (its actions apply) («Пакеты обмена с ТФОМС»)."""
    from portal.tfoms.models import TfomsPacket

    packet = TfomsPacket(channel="tfoms_auto", mo_id=side.mo.id, packet_type="HOSPITALISATION",
                         message_id=str(uuid.uuid4()), status="rejected")  # fmt: skip
    db.session.add(packet)
    db.session.flush()
    return packet


def _iemk_document(side):
    """A signed ИЭМК document of the side's МО (its XML download exists only once signed)."""
    from portal.admin.services import ensure_demo_certificate
    from portal.iemk.documents import ensure_documents, sign_documents
    from portal.iemk.models import IemkDocument
    from tests import factories

    ensure_demo_certificate("iemk", "Тест: подпись документов ИЭМК")
    event = factories.make_event(
        side.patients[0],
        "lab_blood",
        doctor_id=factories.make_staff(side.mo).id,
        data={"hemoglobin_g_l": 118, "diagnosis": "Z34.0"},
    )
    ensure_documents([event.id])
    doc = db.session.scalars(db.select(IemkDocument).where(IemkDocument.event_id == event.id)).one()
    assert sign_documents([doc], side.users["doctor"]).signed == [doc]
    return doc


def _ers_request(side):
    """A processed «Обновить данные ЭРС» request of the side's МО, with both envelopes kept."""
    from portal.ers.models import PROCESSED, ErsRequest

    request = ErsRequest(
        mo_id=side.mo.id,
        patient_id=side.patients[0].id,
        pregnancy_id=side.pregnancy.id,
        method="getErsData",
        info="Данные ЭРС",
        status=PROCESSED,
        request_xml="<Envelope/>",
        answer_xml="<Envelope/>",
        batch=str(uuid.uuid4()),
    )
    db.session.add(request)
    db.session.flush()
    return request


def _report_run(side, folder):
    """A finished ЭРС report of the side's МО with its file."""
    from portal.reports.models import DONE, ReportRun

    path = folder / f"report-{side.mo.id}.pdf"
    path.write_bytes(b"%PDF-1.4\n%%EOF\n")
    run = ReportRun(kind="ers_requests", title="Отчёт", params={}, user_id=side.users["ers_operator"].id,
                    mo_id=side.mo.id, status=DONE, file_path=str(path))  # fmt: skip
    db.session.add(run)
    db.session.flush()
    return run


def _samples(region):
    """Values for URL arguments: the object of МО «a» (own) and of МО «b» (other), or a global one."""
    token = ApiToken(name="matrix", token_hash=hash_token("matrix-token"), prefix="matrix-t")
    db.session.add(token)
    certs = {side: _certificate(getattr(region, side).mo.id) for side in ("a", "b")}
    semds = {side: _semd(getattr(region, side)) for side in ("a", "b")}
    plan_exports = {side: _plan_export(getattr(region, side)) for side in ("a", "b")}
    ident_packages = {side: _ident_package(getattr(region, side)) for side in ("a", "b")}
    tfoms_packets = {side: _tfoms_packet(getattr(region, side)) for side in ("a", "b")}
    iemk_docs = {side: _iemk_document(getattr(region, side)) for side in ("a", "b")}
    ers_requests = {side: _ers_request(getattr(region, side)) for side in ("a", "b")}
    folder = Path(tempfile.mkdtemp(prefix="matrix-reports-"))
    report_runs = {side: _report_run(getattr(region, side), folder) for side in ("a", "b")}
    db.session.commit()
    owned = {
        "patient_id": lambda s: s.patients[0].id,
        "mo_id": lambda s: s.mo.id,
        "user_id": lambda s: s.users["doctor"].id,
        "certificate_id": lambda s: certs["a" if s is region.a else "b"].id,
        "cert_id": lambda s: certs["a" if s is region.a else "b"].id,
        "semd_id": lambda s: semds["a" if s is region.a else "b"].id,
        "plan_id": lambda s: plan_exports["a" if s is region.a else "b"][0].id,
        "export_id": lambda s: plan_exports["a" if s is region.a else "b"][1].id,
        "package_id": lambda s: ident_packages["a" if s is region.a else "b"].id,
        "packet_id": lambda s: tfoms_packets["a" if s is region.a else "b"].id,
        "doc_id": lambda s: iemk_docs["a" if s is region.a else "b"].id,
        "request_id": lambda s: ers_requests["a" if s is region.a else "b"].id,
        "batch": lambda s: ers_requests["a" if s is region.a else "b"].batch,
        "run_id": lambda s: report_runs["a" if s is region.a else "b"].id,
    }
    shared = {
        "token_id": token.id,
        "key": "iemk",
        "number": 1,
        "local_uid": "00000000-0000-0000-0000-000000000000",
        "which": "request",
    }
    return owned, shared


def _rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or rule.endpoint.startswith(SKIP_PREFIXES):
            continue
        yield rule


def _url(app, rule, side, owned, shared):
    values = {}
    for arg in rule.arguments:
        if arg in owned:
            values[arg] = owned[arg](side)
        elif arg in shared:
            values[arg] = shared[arg]
        else:
            raise AssertionError(
                f"{rule.rule}: no sample for argument «{arg}» — add it to tests/test_permissions.py"
            )
    with app.test_request_context():
        return url_for(rule.endpoint, **values)


def _expected(app, rule, role):
    view = app.view_functions[rule.endpoint]
    capability = getattr(view, "capability", None)
    return 200 if capability is None or role_can(role, capability) else 403


def _csrf(client):
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_every_page_and_fragment_for_every_role(app, client, region):
    owned, shared = _samples(region)
    problems = []
    for role in ROLES:
        user = region.a.users[role]
        login(client, user)
        for rule in _rules(app):
            if "GET" not in rule.methods:
                continue
            url = _url(app, rule, region.a, owned, shared)
            expected = _expected(app, rule, role)
            for headers in ({}, {"HX-Request": "true", "HX-Target": "results"}):
                status = client.get(url, headers=headers).status_code
                ok = status == expected or (expected == 200 and status in (302, 303))
                if not ok:
                    problems.append(f"{role} GET {url} {headers and 'HX'}: {status}, expected {expected}")
    assert not problems, "\n".join(problems)


def test_other_mo_objects_are_forbidden(app, client, region):
    owned, shared = _samples(region)
    problems = []
    for role in ROLES:
        if role == "central_admin":
            continue
        login(client, region.a.users[role])
        token = _csrf(client)
        for rule in _rules(app):
            if not set(rule.arguments) & set(owned) or _expected(app, rule, role) == 403:
                continue
            url = _url(app, rule, region.b, owned, shared)
            for method in sorted(rule.methods & {"GET", "POST"}):
                if method == "GET":
                    status = client.get(url).status_code
                else:
                    status = client.post(url, data={"csrf_token": token}).status_code
                if status not in (403, 404):
                    problems.append(f"{role} {method} {url} (other МО): {status}")
    assert not problems, "\n".join(problems)


def test_central_admin_reaches_other_mo_objects(app, client, region):
    owned, shared = _samples(region)
    login(client, region.central)
    problems = []
    for rule in _rules(app):
        if "GET" not in rule.methods or not set(rule.arguments) & set(owned):
            continue
        url = _url(app, rule, region.b, owned, shared)
        status = client.get(url).status_code
        if status not in (200, 302):
            problems.append(f"central GET {url}: {status}")
    assert not problems, "\n".join(problems)


def test_actions_refused_to_roles_without_the_capability(app, client, region):
    owned, shared = _samples(region)
    problems = []
    for role in ROLES:
        login(client, region.a.users[role])
        token = _csrf(client)
        for rule in _rules(app):
            if "POST" not in rule.methods or rule.endpoint == "auth.logout":
                continue
            if _expected(app, rule, role) != 403:
                continue
            url = _url(app, rule, region.a, owned, shared)
            status = client.post(url, data={"csrf_token": token}).status_code
            if status != 403:
                problems.append(f"{role} POST {url}: {status}, expected 403")
    assert not problems, "\n".join(problems)


def test_anonymous_is_sent_to_login(app, client, region):
    owned, shared = _samples(region)
    for rule in _rules(app):
        if "GET" in rule.methods:
            response = client.get(_url(app, rule, region.a, owned, shared))
            assert response.status_code == 302 and "/login" in response.headers["Location"], rule.rule


def test_mo_user_without_an_mo_sees_nothing(app, client, region):
    doctor = region.a.users["doctor"]
    doctor.mo_id = None
    db.session.commit()
    login(client, doctor)
    page = client.get("/clinical/patients").get_data(as_text=True)
    assert "Пациенты не найдены" in page
    assert client.get(f"/clinical/patients/{region.a.patients[0].id}").status_code == 403
