"""The ФСС ЭРС client: zeep on the portal's reconstructed contract (portal/schemas/ers), every
request signed and encrypted as the ФСС profile wants it, every answer decrypted and its ФСС
signature checked (SPEC E-1, E-10, E-12).

Order (portal/crypto/xmlenc.py): the request Body gets wsu:Id "OGRN_{ОГРН}", each chosen signer
signs it in its own wsse:Security block (doctor, МО, accountant — each with its actor), then the
Body is encrypted to ФСС's certificate and the МО's reply certificate goes into the header. The
answer is decrypted with the МО's key and must carry a valid signature of ФСС's actor, made with
the certificate set as «Сертификат ФСС».

Actors: the ЭЛН specification (specs/fss-eln/mo_v20 §4.3) defines the МО's actor
`http://eln.fss.ru/actor/mo/{ОГРН}` and ФСС's `http://eln.fss.ru/actor/fss/ca/1027739443236`; its
doctor actor names a sick-leave block (`…/actor/doc/{ЭЛН}_{block}_doc`), which ЭРС has no use for.
ЭРС has no published profile, so the doctor's `…/actor/doc/{ОГРН}_{СНИЛС врача}` and the
accountant's `…/actor/acc/{ОГРН}` are ours.

Failures, sorted for the delivery mechanism like the ИЭМК client (portal/iemk/soap.py):
nothing left (refused, connect timeout, HTTP 5xx without SOAP, a SOAP Fault «Server») →
TransientError; the request left but no answer came → UnknownOutcome; an answer that is not
encrypted, cannot be decrypted, is unsigned or carries a bad ФСС signature → FssAnswerRefused;
a SOAP Fault «Client» (ФСС refused the request: its signatures, its encryption), an answer not
in the contract, a request the schema does not allow → ErsError. Both are DataErrors (no
automatic retry) and keep the envelopes for «Реестр запросов».
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree
from zeep import Client, Plugin, Settings
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault, TransportError, ValidationError, XMLParseError, XMLSyntaxError

from portal import crypto
from portal.exchange.delivery import DataError, TransientError, setting
from portal.exchange.http import NotSoap, connection_errors, plain, soap_transport

if TYPE_CHECKING:
    from portal.clinical.models import Mo

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "ers"
WSDL = SCHEMAS / "ErsService.wsdl"
ERS = "http://gtw.ws.fss.ru/openservice/ers"
BINDING = f"{{{ERS}}}ErsServiceBinding"
SYSTEM = "ФСС"
SOFTWARE = "Портал акушерского мониторинга"
SOFTWARE_VERSION = "1.0"
SPEC_VERSION = "1.0"

# Actors of the wsse:Security blocks (ЭЛН МО v2.0 §4.3).
MO_ACTOR = "http://eln.fss.ru/actor/mo/{ogrn}"
DOCTOR_ACTOR = "http://eln.fss.ru/actor/doc/{ogrn}_{snils}"  # ours: ЭЛН's /doc/ prefix, no ЭРС actor
ACCOUNTANT_ACTOR = "http://eln.fss.ru/actor/acc/{ogrn}"  # ours: neither ЭЛН nor ЭРС names one
FSS_ACTOR = "http://eln.fss.ru/actor/fss/ca/1027739443236"
BODY_ID = "OGRN_{ogrn}"


def mo_actor(ogrn: str) -> str:
    return MO_ACTOR.format(ogrn=ogrn)


def doctor_actor(ogrn: str, snils: str) -> str:
    return DOCTOR_ACTOR.format(ogrn=ogrn, snils="".join(ch for ch in snils if ch.isdigit()))


def accountant_actor(ogrn: str) -> str:
    return ACCOUNTANT_ACTOR.format(ogrn=ogrn)


class ErsError(DataError):
    """ФСС refused the request, or the request or answer does not fit the contract (Russian text).

    `request` is the envelope as signed (before encryption) and `response` the answer as received,
    when there were any, for «Реестр запросов»."""

    def __init__(self, message: str, *, request: str = "", response: str = "") -> None:
        super().__init__(message)
        self.request = request
        self.response = response


class FssAnswerRefused(ErsError):
    """An answer that does not come from ФСС as far as we can tell: not encrypted for us, not
    decryptable, unsigned, or a bad ФСС signature. `response` keeps the raw answer."""


@dataclass(frozen=True)
class Signers:
    """The signatures a user chose at the top of the page (E-1); each signs the request Body in
    its own wsse:Security block. The doctor's actor needs the doctor's СНИЛС."""

    mo: crypto.SigningKey | None = None
    doctor: crypto.SigningKey | None = None
    accountant: crypto.SigningKey | None = None
    doctor_snils: str | None = None

    def actors(self, ogrn: str) -> list[tuple[str, crypto.SigningKey]]:
        """(actor, key) in the order of signing: doctor, МО, accountant."""
        found: list[tuple[str, crypto.SigningKey]] = []
        if self.doctor is not None:
            if not (self.doctor_snils or "").strip():
                raise DataError("Для подписи врача нужен СНИЛС врача: укажите его в карточке сотрудника")
            found.append((doctor_actor(ogrn, self.doctor_snils), self.doctor))
        if self.mo is not None:
            found.append((mo_actor(ogrn), self.mo))
        if self.accountant is not None:
            found.append((accountant_actor(ogrn), self.accountant))
        return found


@dataclass
class Exchange:
    """One call: ФСС's result envelope as a dict (requestId, status, message, errorCode,
    errorText, errors [{code, message}], and data such as ersNumber), the request as signed
    (before encryption) and the answer as decrypted."""

    result: dict[str, Any]
    request_xml: str
    answer_xml: str


# --- the zeep plugin --------------------------------------------------------------------------


class _Profile(Plugin):
    """Signs and encrypts each request on its way out, decrypts and verifies each answer on its way
    in; keeps this thread's envelopes (one client serves several threads)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def start(
        self, ogrn: str, actors: list[tuple[str, crypto.SigningKey]], fss_cert_pem: str, reply_key
    ) -> None:
        local = self.local
        local.ogrn, local.actors, local.fss_cert_pem, local.reply_key = ogrn, actors, fss_cert_pem, reply_key
        local.request = local.answer = local.raw = ""

    def egress(self, envelope, http_headers, operation, binding_options):
        local = self.local
        soap = etree.QName(envelope).namespace
        body = envelope.find(f"{{{soap}}}Body")
        body_id = BODY_ID.format(ogrn=local.ogrn)
        crypto.set_wsu_id(body, body_id)
        for actor, key in local.actors:
            crypto.sign_envelope(envelope, key, [body_id], actor=actor)
        local.request = etree.tostring(envelope, encoding="unicode")
        crypto.encrypt_body(envelope, local.fss_cert_pem, reply_cert_pem=local.reply_key.cert_pem)
        return envelope, http_headers

    def ingress(self, envelope, http_headers, operation):
        local = self.local
        local.raw = etree.tostring(envelope, encoding="unicode")
        soap = etree.QName(envelope).namespace
        body = envelope.find(f"{{{soap}}}Body")
        if (
            body is not None
            and body.find(f"{{{soap}}}Fault") is not None
            and not crypto.is_encrypted(envelope)
        ):
            local.answer = local.raw  # ФСС's refusal comes in clear; zeep raises the Fault
            return envelope, http_headers
        try:
            crypto.decrypt_body(envelope, local.reply_key, what="Ответ ФСС")
        except crypto.DecryptionError as error:
            raise FssAnswerRefused(
                f"Ответ ФСС отклонён: ответ не расшифрован — {error.reason}",
                request=local.request,
                response=local.raw,
            ) from error
        local.answer = etree.tostring(envelope, encoding="unicode")
        try:
            crypto.verify_envelope(envelope, trusted_pem=local.fss_cert_pem, actor=FSS_ACTOR)
        except crypto.SignatureError as error:
            raise FssAnswerRefused(
                f"Ответ ФСС отклонён: подпись ФСС не прошла проверку — {error.reason}",
                request=local.request,
                response=local.raw,
            ) from error
        return envelope, http_headers


_clients: dict[tuple[str, float], tuple[Client, _Profile]] = {}
_services: dict[tuple[str, str, float], Any] = {}
_lock = threading.Lock()


def _wsdl(mo_id: int) -> str:
    """The official WSDL when the setting names one, else ours."""
    return (setting("ers.wsdl", mo_id) or "").strip() or str(WSDL)


def _service(wsdl: str, endpoint: str, timeout: float) -> tuple[Any, _Profile]:
    with _lock:
        cached = _clients.get((wsdl, timeout))
        if cached is None:
            profile = _Profile()
            client = Client(
                wsdl,
                transport=soap_transport(endpoint, timeout),
                settings=Settings(strict=False),
                plugins=[profile],
            )
            cached = _clients[(wsdl, timeout)] = (client, profile)
        client, profile = cached
        proxy = _services.get((wsdl, endpoint, timeout))
        if proxy is None:
            bindings = client.wsdl.bindings
            binding = BINDING if BINDING in bindings else next(iter(bindings))
            proxy = _services[(wsdl, endpoint, timeout)] = client.create_service(binding, endpoint)
        return proxy, profile


# --- the request's common blocks --------------------------------------------------------------


def system_info() -> dict[str, str]:
    return {"specVersion": SPEC_VERSION, "software": SOFTWARE, "softwareVerison": SOFTWARE_VERSION}


def medical_organization(mo: Mo) -> dict[str, Any]:
    """The МО with its current contract with ФСС (E-3); a request without one is not sent."""
    from portal.ers.rules import contract_refusal, current_contract

    if not (mo.ogrn or "").strip():
        raise DataError("У МО не указан ОГРН: ФСС не примет запрос")
    if not (mo.inn or "").strip():
        raise DataError("У МО не указан ИНН: ФСС не примет запрос")
    contract = current_contract(mo.id)
    refusal = contract_refusal(contract)
    if refusal:
        raise DataError(refusal)
    return {
        "orgName": mo.name,
        "inn": mo.inn.strip(),
        "ogrn": mo.ogrn.strip(),
        "kpp": (mo.kpp or "").strip() or None,
        "contractNumber": contract.number,
        "conractDate": contract.signed_on,
    }


# --- calls ------------------------------------------------------------------------------------


def _result(answer: Any) -> dict[str, Any]:
    result = plain(answer) or {}
    if not isinstance(result, dict):
        raise ErsError(f"Ответ ФСС не разобран: ожидался результат запроса, получено {type(result).__name__}")
    errors = result.get("errors")
    items = (errors or {}).get("error") if isinstance(errors, dict) else errors
    result["errors"] = [
        {"code": item.get("code"), "message": item.get("message")}
        for item in items or []
        if isinstance(item, dict)
    ]
    return result


def _fault(failure: Fault, request: str, response: str) -> Exception:
    code = str(failure.code or "")
    text = (failure.message or "без описания").strip()
    if code.rsplit(":", 1)[-1].lower().startswith("server"):
        return TransientError(f"ФСС ответил ошибкой сервера: {text}")
    return ErsError(f"ФСС отказал: {text}", request=request, response=response)


def send(
    mo: Mo,
    method: str,
    body: dict[str, Any],
    signers: Signers,
    fss_cert_pem: str,
    reply_key: crypto.SigningKey,
) -> Exchange:
    """Send one request (`method` = an operation: createErs, putTicket1 …) with `body` = the
    operation's elements (systemInfo and medicalOrganization are added when absent)."""
    if not (fss_cert_pem or "").strip():
        raise DataError("Не задан сертификат ФСС: выберите «Сертификат ФСС» в настройках ЭРС")
    if reply_key is None:
        raise DataError("Нет ключа МО для расшифровки ответа ФСС: загрузите сертификат МО с закрытым ключом")
    params = dict(body)
    params.setdefault("systemInfo", system_info())
    if "medicalOrganization" not in params:
        params["medicalOrganization"] = medical_organization(mo)
    ogrn = str(params["medicalOrganization"].get("ogrn") or mo.ogrn or "").strip()
    actors = signers.actors(ogrn)
    if not actors:
        raise DataError("Запрос в ФСС не подписан: выберите ЭЦП МО (и ЭЦП врача или бухгалтера)")
    endpoint = setting("ers.endpoint", mo.id)
    timeout = float(setting("ers.timeout", mo.id) or 60)
    proxy, profile = _service(_wsdl(mo.id), endpoint, timeout)
    profile.start(ogrn, actors, fss_cert_pem, reply_key)
    local = profile.local
    try:
        with connection_errors(SYSTEM, timeout):
            try:
                operation = getattr(proxy, method)
            except AttributeError:
                raise ErsError(f"В WSDL ФСС нет метода {method}") from None
            try:
                answer = operation(**params)
            except ErsError:
                raise
            except TransportError as failure:
                if failure.status_code >= 500:
                    raise TransientError(f"ФСС ответил ошибкой HTTP {failure.status_code}") from failure
                raise ErsError(
                    f"ФСС ответил HTTP {failure.status_code}: проверьте адрес сервиса ЭРС",
                    request=local.request,
                ) from failure
            except Fault as failure:
                raise _fault(failure, local.request, local.raw) from failure
            except ValidationError as failure:
                raise ErsError(
                    f"Запрос не соответствует схеме ФСС: {failure}", request=local.request
                ) from failure
            except (NotSoap, XMLSyntaxError, XMLParseError) as failure:
                raise ErsError(
                    f"ФСС вернул ответ не в формате SOAP: {failure}",
                    request=local.request,
                    response=local.raw,
                ) from failure
            except ZeepError as failure:
                raise ErsError(
                    f"Ответ ФСС не разобран по WSDL: {failure}", request=local.request, response=local.raw
                ) from failure
        return Exchange(_result(answer), local.request, local.answer)
    finally:
        local.actors = local.reply_key = None


def result(
    mo: Mo,
    request_id: str,
    method: str,
    signers: Signers,
    fss_cert_pem: str,
    reply_key: crypto.SigningKey,
) -> Exchange:
    """getResultById: how ФСС processed the request `request_id` of operation `method`."""
    return send(
        mo,
        "getResultById",
        {"requestType": method, "requestId": request_id},
        signers,
        fss_cert_pem,
        reply_key,
    )


def error_text(result: dict[str, Any]) -> str:
    """ФСС's errors as the seed shows them: «Код: 1204 Сообщение: …», several joined by «; »."""
    errors = [e for e in result.get("errors") or [] if e.get("code") or e.get("message")]
    if not errors and (result.get("errorCode") or result.get("errorText")):
        errors = [{"code": result.get("errorCode"), "message": result.get("errorText")}]
    return "; ".join(
        f"Код: {e.get('code') or '—'} Сообщение: {e.get('message') or ''}".strip() for e in errors
    )
