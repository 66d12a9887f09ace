"""ВИМИС views: the callback service ВИМИС calls, the XML of each version, the registry."""

from __future__ import annotations

from flask import Response, abort, request
from lxml import etree

from portal.auth.access import requires
from portal.auth.scoping import get_scoped
from portal.extensions import csrf, db
from portal.vimis import bp, services
from portal.vimis import triggers as _triggers  # noqa: F401  (registers the intake hook)
from portal.vimis.models import Semd, SemdVersion

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CALLBACK_NS = "http://callback.mis.vimis.rosminzdrav.ru/"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _soap(body: str, status: int = 200) -> Response:
    envelope = (f'<?xml version="1.0" encoding="UTF-8"?><S:Envelope xmlns:S="{SOAP_ENV}">'
                f"<S:Body>{body}</S:Body></S:Envelope>")
    return Response(envelope, status=status, content_type="text/xml; charset=utf-8")


def _fault(code: str, message: str) -> Response:
    from xml.sax.saxutils import escape

    return _soap(f"<S:Fault><faultcode>S:{code}</faultcode><faultstring>{escape(message)}</faultstring></S:Fault>",
                 500)


def _child(element: etree._Element, name: str) -> str | None:
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            return (child.text or "").strip()
    return None


@bp.post("/callback")
@csrf.exempt
def callback() -> Response:
    """The МИС callback service of callback.wsdl: sendResult and sendInterimMsg (V-11)."""
    raw = request.get_data()
    try:
        envelope = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError as error:
        return _fault("Client", f"Некорректный XML: {error}")
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    operation = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if operation is None:
        return _fault("Client", "В SOAP-сообщении нет тела")
    name = etree.QName(operation).localname
    msg_id = _child(operation, "msg_id")
    if not msg_id:
        return _fault("Client", "Не указан msg_id")
    text = raw.decode("utf-8", errors="replace")
    try:
        if name == "sendResult":
            status = _child(operation, "status")
            if status not in ("0", "1"):
                return _fault("Client", f"Недопустимый статус результата: {status}")
            services.apply_callback_result(msg_id, int(status), _child(operation, "description") or "", text)
        elif name == "sendInterimMsg":
            services.apply_interim_message(msg_id, _child(operation, "description") or "", text)
        else:
            return _fault("Client", f"Неизвестная операция: {name}")
    except services.CallbackError as error:
        db.session.rollback()
        return _fault("Client", str(error))
    db.session.commit()
    return _soap(f'<{name}Response xmlns="{CALLBACK_NS}"/>')


@bp.get("/semd/<int:semd_id>/versions/<int:number>.xml")
@requires("vimis.view")
def version_xml(semd_id: int, number: int) -> Response:
    semd = get_scoped(Semd, semd_id)
    version = db.session.scalars(
        db.select(SemdVersion).where(SemdVersion.semd_id == semd.id, SemdVersion.number == number)
    ).first()
    if version is None or not version.xml:
        abort(404, description=f"Версия {number} СЭМД ещё не сформирована.")
    filename = f"semd-{semd.id}-v{number}.xml"
    return Response(version.xml, content_type="application/xml; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
