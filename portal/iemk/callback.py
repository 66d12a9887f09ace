"""The portal's asynchronous answers service for ИЭМК (SPEC I-6): `POST /iemk/callback`.

ИЭМК posts sendDocumentResult (IemkDocuments.wsdl, port IemkCallback) to the ReplyTo address of
each AddMedRecord (setting `iemk.callback_url`). A machine endpoint: no login, no CSRF token.
A readable result updates the document through the channel and is acknowledged; a malformed
message or an unknown localUid gets a SOAP Fault «Client» naming what is wrong and changes
nothing; a TransientError of the channel (or any failure of ours) a Fault «Server»: ИЭМК sends
the answer again later.
`GET /iemk/callback?wsdl` shows the contract with this address.
"""

from __future__ import annotations

import logging

from flask import Response, request, url_for
from lxml import etree

from portal.exchange.delivery import TransientError
from portal.extensions import csrf, db
from portal.iemk import bp, emk

log = logging.getLogger("iemk")

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ADDRESS = "{http://schemas.xmlsoap.org/wsdl/soap/}address"


def _envelope(body: etree._Element, status: int) -> Response:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"s": SOAP_ENV})
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(body)
    return Response(
        etree.tostring(envelope, xml_declaration=True, encoding="utf-8"),
        status=status,
        content_type="text/xml; charset=utf-8",
    )


def _fault(code: str, text: str, fault_code: str = "s:Client") -> Response:
    """SOAP 1.1 Fault with the WSDL's detail (ФНСИ 305 code, message)."""
    fault = etree.Element(f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = fault_code
    etree.SubElement(fault, "faultstring").text = text
    detail = etree.SubElement(
        etree.SubElement(fault, "detail"), f"{{{emk.NS_DOCS}}}fault", nsmap={None: emk.NS_DOCS}
    )
    etree.SubElement(detail, f"{{{emk.NS_DOCS}}}code").text = code
    etree.SubElement(detail, f"{{{emk.NS_DOCS}}}message").text = text
    return _envelope(fault, 500)


def _acknowledgment() -> Response:
    answer = etree.Element(f"{{{emk.NS_DOCS}}}sendDocumentResultResponse", nsmap={None: emk.NS_DOCS})
    etree.SubElement(answer, f"{{{emk.NS_DOCS}}}acknowledgment").text = "accepted"
    return _envelope(answer, 200)


@bp.route("/callback", methods=["GET", "POST"])
@csrf.exempt
def callback() -> Response:
    if request.method == "GET":
        if not {key.lower() for key in request.args} & {"wsdl", "singlewsdl"}:
            return Response(
                "Сервис асинхронных ответов ИЭМК: POST SOAP 1.1 sendDocumentResult или GET ?wsdl\n",
                400,
                mimetype="text/plain",
            )
        wsdl = etree.parse(str(emk.DOCS_WSDL), etree.XMLParser(resolve_entities=False, no_network=True))
        here = url_for("iemk.callback", _external=True)
        for port in wsdl.iter("{http://schemas.xmlsoap.org/wsdl/}port"):
            if port.get("name") == "IemkCallbackPort":
                for address in port.iter(SOAP_ADDRESS):
                    address.set("location", here)
        return Response(etree.tostring(wsdl, xml_declaration=True, encoding="utf-8"), mimetype="text/xml")

    from portal.iemk.channel import receive_result

    try:
        local_uid, result = emk.parse_result_callback(request.get_data())
    except emk.CallbackError as error:
        return _fault("VALIDATION_ERROR", str(error))
    try:
        known = receive_result(local_uid, result)
    except TransientError as error:  # e.g. the upload's own outcome is not written yet
        db.session.rollback()
        return _fault("INTERNAL_ERROR", f"Ответ не принят сейчас, повторите позже: {error}", "s:Server")
    except Exception:
        log.exception("ИЭМК: ответ о документе %s не применён", local_uid)
        db.session.rollback()
        return _fault(
            "INTERNAL_ERROR", "Внутренняя ошибка портала: ответ не принят, повторите позже", "s:Server"
        )
    if not known:
        db.session.rollback()
        return _fault(
            "REGISTRY_ITEM_NOT_FOUND", f"Документ с localUid {local_uid} портал в ИЭМК не передавал"
        )
    db.session.commit()
    return _acknowledgment()
