"""АИСТ_ЭРС in the demo region: a contract with ФСС for every demo МО, the МО's signature, the
demo ЭРС operators' doctor signatures and the accountant's, the exchange switched on — and, when
the local ФСС stand-in starts beside the portal, the stand-in told the contracts and the portal
given the stand-in's certificate (the stand-in makes a new key each time it starts).

Production has neither: contracts are entered on the page, certificates uploaded by the
administrator, and ФСС knows its contracts itself.
"""

from __future__ import annotations

import logging
from datetime import date

import requests

from portal.admin.models import Certificate
from portal.admin.services import add_certificate, enabled_mo_ids, ensure_demo_certificate, set_integration
from portal.auth.models import User
from portal.auth.roles import ERS_ACCOUNTANT, ERS_OPERATOR
from portal.clinical.models import Mo
from portal.ers.models import ErsContract
from portal.ers.rules import current_contract
from portal.extensions import db

log = logging.getLogger(__name__)

DEMO_CONTRACT_NUMBER = "14"


def ensure_demo_ers(mo_source_ids: list[str], user_logins: list[str]) -> int:
    """Contracts, certificates and the switched-on exchange for the demo МО; returns contracts made."""
    made = 0
    today = date.today()
    mos = db.session.scalars(db.select(Mo).where(Mo.source_id.in_(mo_source_ids))).all()
    enabled = enabled_mo_ids("ers")
    for mo in mos:
        if current_contract(mo.id) is None:
            db.session.add(
                ErsContract(
                    mo_id=mo.id,
                    number=DEMO_CONTRACT_NUMBER,
                    signed_on=date(today.year, 1, 1),
                    ends_on=date(today.year + 1, 12, 30),
                )
            )
            made += 1
        ensure_demo_certificate("mo", f"{mo.short_name}: подпись МО для ФСС", mo.id)
        if mo.id not in enabled:
            set_integration(mo, "ers", True, reason="Демо-регион")
    users = db.session.scalars(
        db.select(User).where(User.login.in_(user_logins), User.role.in_((ERS_OPERATOR, ERS_ACCOUNTANT)))
    ).all()
    for user in users:  # an operator linked to a doctor signs as the doctor too (the actor needs СНИЛС)
        if user.role == ERS_ACCOUNTANT:
            ensure_demo_certificate("accountant", f"{user.full_name}: ЭЦП бухгалтера", user.mo_id, user.id)
        elif user.staff is not None and user.staff.snils:
            ensure_demo_certificate("doctor", f"{user.staff.full_name}: ЭЦП врача", user.mo_id, user.id)
    db.session.flush()
    return made


def link_standin(base_url: str, timeout: float = 5) -> None:
    """Tell the ФСС stand-in every МО's current contract and keep its certificate as «Сертификат
    ФСС» (replacing the one of an earlier start). Called where the stand-in is started."""
    contracts = 0
    for mo in db.session.scalars(db.select(Mo).where(Mo.ogrn.is_not(None))):
        contract = current_contract(mo.id)
        if contract is None:
            continue
        requests.post(
            f"{base_url}/fss/_contracts",
            json={
                "ogrn": mo.ogrn,
                "number": contract.number,
                "date": contract.signed_on.isoformat(),
                "ends": contract.ends_on.isoformat(),
            },
            timeout=timeout,
        ).raise_for_status()
        contracts += 1
    pem = requests.get(f"{base_url}/fss/_certificate", timeout=timeout).text
    current = db.session.scalars(
        db.select(Certificate).where(Certificate.purpose == "fss", Certificate.mo_id.is_(None))
    ).all()
    if not any(c.cert_pem.strip() == pem.strip() for c in current):
        for old in current:
            db.session.delete(old)
        db.session.flush()
        cert, errors = add_certificate("fss", None, None, pem, None)
        if cert is None:
            raise ValueError(f"сертификат симулятора ФСС не принят: {errors}")
    db.session.commit()
    log.info("Симулятор ФСС: договоров передано %s, сертификат ФСС обновлён", contracts)
