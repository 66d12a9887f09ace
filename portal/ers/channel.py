"""ФСС ЭРС as a channel of the shared delivery mechanism (SPEC E-1, E-10, E-12).

A request row (`ErsRequest`) is checked and queued by `services.new_request`; the job sends it:

    prepare  — the contract again, the chosen signers' certificates (valid today), ФСС's certificate
    transmit — `client.send`: signed per signer, encrypted to ФСС; REGISTERED → «Принят ФСС»,
               waiting for the result; an immediate PROCESSING_ERROR (1204 …) fails the request
    check    — `client.result` (getResultById): PROCESSED → done (an ЭРС number …),
               PROCESSING_ERROR → failed with ФСС's codes, otherwise asked again later

ФСС unreachable: the request stays «Ожидает отправки в ФСС» and goes when ФСС returns (back-off
of the mechanism). Each exchange's request (signed, before encryption) and answer (decrypted)
are kept on the row for «Реестр запросов».
"""

from __future__ import annotations

from datetime import date

from portal.admin.models import Certificate
from portal.crypto import SigningKey
from portal.ers import models as m
from portal.exchange.delivery import (
    Channel,
    DataError,
    Outcome,
    memo,
    register_channel,
)
from portal.exchange.models import DONE, FAILED, WAITING, JournalEntry, WorkItem
from portal.extensions import db
from portal.models_base import utcnow

SIGNER_ROLES = {"doctor": "врача", "mo": "МО", "accountant": "бухгалтера"}


class ErsChannel(Channel):
    name = "ers"
    title = "ФСС ЭРС"
    procedure = "ers"  # «Обмен с ФСС ЭРС» switched on for the МО
    poll_seconds = 10  # ФСС processes in seconds; the operator waits for the number
    batch_size = 50

    def request(self, item: WorkItem) -> m.ErsRequest:
        return memo(
            ("ers_request", item.subject_id),
            lambda: db.session.get(m.ErsRequest, item.subject_id),
            per_item=True,
        )

    def subject(self, item: WorkItem) -> tuple[str, int]:
        return "ers_request", item.subject_id

    def packet_type(self, item: WorkItem) -> str:
        return m.METHODS.get(self.request(item).method, self.request(item).method)

    def label(self, item: WorkItem) -> str:
        request = self.request(item)
        return f"{request.info} (запрос № {request.id})"

    def prepare(self, item: WorkItem) -> tuple:
        from portal.ers.rules import contract_refusal, current_contract

        request = self.request(item)
        refusal = contract_refusal(current_contract(request.mo_id))
        if refusal:
            raise DataError(refusal)
        signers = signers_of(request)
        return signers, fss_certificate(request.mo_id), signers.mo

    def transmit(self, item: WorkItem, prepared: object) -> Outcome:
        from portal.ers import client

        signers, fss_pem, reply_key = prepared
        request = self.request(item)
        try:
            exchange = client.send(request.mo, request.method, request.data, signers, fss_pem, reply_key)
        except client.ErsError as error:
            request.request_xml, request.answer_xml = error.request or request.request_xml, error.response
            raise
        request.request_xml, request.answer_xml = exchange.request_xml, exchange.answer_xml
        request.sent_at = utcnow()
        return self._outcome(request, exchange.result, "Отправка")

    def check(self, item: WorkItem) -> Outcome:
        from portal.ers import client

        request = self.request(item)
        if not request.fss_request_id:  # the answer with the requestId was lost: send again
            return Outcome.not_found("ФСС не сообщил номер запроса: запрос отправляется снова")
        signers = signers_of(request)
        exchange = client.result(
            request.mo,
            request.fss_request_id,
            request.method,
            signers,
            fss_certificate(request.mo_id),
            signers.mo,
        )
        request.answer_xml = exchange.answer_xml
        return self._outcome(request, exchange.result, "Запрос результата")

    def _outcome(self, request: m.ErsRequest, result: dict, operation: str) -> Outcome:
        from portal.ers import client

        status = result.get("status") or ""
        request.fss_request_id = result.get("requestId") or request.fss_request_id
        if status in (m.REGISTERED, m.READY_TO_PROCESS, m.PROCESSING):
            request.status = status
            return Outcome.accepted(
                f"{request.info}: {m.STATUSES[status].lower()}, номер запроса ФСС {request.fss_request_id}",
                external_id=request.fss_request_id,
                operation=operation,
            )
        if status == m.PROCESSED:
            if request.method == "getErsData":
                return self._ers_data(request, result, operation)
            request.ers_number = result.get("ersNumber") or request.ers_number
            number = f", номер ЭРС {request.ers_number}" if request.ers_number else ""
            return Outcome.done(f"{request.info}: обработан ФСС{number}", operation=operation)
        errors = result.get("errors") or []
        first = errors[0] if errors else {}
        request.error_code = str(first.get("code") or result.get("errorCode") or "") or None
        request.error_text = first.get("message") or result.get("errorText") or result.get("message")
        return Outcome.failed(
            client.error_text(result) or f"ФСС ответил статусом {status}", operation=operation
        )

    def _ers_data(self, request: m.ErsRequest, result: dict, operation: str) -> Outcome:
        """getErsData: the woman's certificates at ФСС; the active one becomes her number."""
        found = [
            {
                "number": str(data.get("ersNumber") or ""),
                "status": str(data.get("ersStatus") or ""),
                "registerDate": str(data.get("registerDate") or "")[:10] or None,
                "orgName": data.get("orgName"),
                "ogrn": data.get("ogrn"),
                "tickets": [
                    str(t.get("ticketType"))
                    for t in ((data.get("tickets") or {}).get("storage") or [])
                    if isinstance(t, dict)
                ],
            }
            for data in result.get("ersData") or []
            if isinstance(data, dict)
        ]
        active = next((f for f in found if f["status"] == "ACTIVE"), None)
        request.result = {"found": active, "all": found}
        request.ers_number = active["number"] if active else None
        if active is None:
            return Outcome.done(f"{request.info}: действующих ЭРС в ФСС нет", operation=operation)
        return Outcome.done(
            f"{request.info}: в ФСС есть ЭРС № {active['number']} ({active['orgName'] or active['ogrn']})",
            operation=operation,
        )

    def on_outcome(self, item: WorkItem, entry: JournalEntry) -> None:
        request = self.request(item)
        if item.state == DONE:
            request.status, request.answered_at = m.PROCESSED, entry.at
        elif item.state == FAILED:
            request.status = m.PROCESSING_ERROR if request.fss_request_id else m.REFUSED
            request.answered_at = entry.at
            if not request.error_text:
                request.error_text = entry.message
        elif item.state != WAITING:
            request.status = m.QUEUED


def _key(cert: Certificate | None, role: str, today: date) -> SigningKey | None:
    if cert is None:
        return None
    if not cert.key_pem:
        raise DataError(f"У сертификата {SIGNER_ROLES[role]} «{cert.subject}» нет закрытого ключа")
    if not cert.valid_from <= today <= cert.valid_to:
        raise DataError(
            f"Сертификат {SIGNER_ROLES[role]} «{cert.subject}» действует с {cert.valid_from:%d.%m.%Y} "
            f"по {cert.valid_to:%d.%m.%Y}: запрос не отправлен"
        )
    from portal.admin.services import key_of

    return key_of(cert)


def signers_of(request: m.ErsRequest):
    """The signatures the operator chose (certificate ids by role), each valid today (E-1)."""
    from portal.ers.client import Signers

    chosen = request.signers or {}
    today = utcnow().date()
    certs = {
        role: db.session.get(Certificate, cert_id) if cert_id else None for role, cert_id in chosen.items()
    }
    mo_key = _key(certs.get("mo"), "mo", today)
    if mo_key is None:
        raise DataError("Не выбрана подпись МО: выберите сертификат МО вверху страницы")
    doctor_snils = None
    if certs.get("doctor") is not None and request.user_id:
        from portal.auth.models import User

        user = db.session.get(User, request.user_id)
        doctor_snils = user.staff.snils if user and user.staff else None
    return Signers(
        mo=mo_key,
        doctor=_key(certs.get("doctor"), "doctor", today),
        accountant=_key(certs.get("accountant"), "accountant", today),
        doctor_snils=doctor_snils,
    )


def fss_certificate(mo_id: int) -> str:
    """ФСС's certificate to encrypt to (the МО's, else the region's), valid today."""
    from portal.admin.services import NoCertificate, valid_certificate

    try:
        return valid_certificate("fss", mo_id, with_key=False).cert_pem
    except NoCertificate as error:
        raise DataError(str(error)) from None


CHANNEL = register_channel(ErsChannel())
