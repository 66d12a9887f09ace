"""portal.crypto: WS-Security signatures, detached CMS signatures and the CRC-32 checksum.

What a receiver sees: a signed message verifies and names its signer; any change to a signed
element, a missing signature or a foreign certificate is refused with a Russian reason.
"""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.x509.oid import NameOID
from lxml import etree

from portal.crypto import (
    SignatureError,
    SigningKeyError,
    WsSecurity,
    crc32_checksum,
    detached_signature,
    generate_demo_certificate,
    load_signing_key,
    set_wsu_id,
    sign_envelope,
    verify_detached,
    verify_envelope,
)

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"

ENVELOPE = f"""<S:Envelope xmlns:S="{SOAP}">
  <S:Header>
    <To xmlns="{WSA}">https://ips-test.rosminzdrav.ru/386f2299dd31b</To>
    <Action xmlns="{WSA}">sendDocument</Action>
    <MessageID xmlns="{WSA}">f7e12d2b-6d85-44c7-9bef-c6bc1c67c5db</MessageID>
  </S:Header>
  <S:Body>
    <sendDocument xmlns="http://vimis.rosminzdrav.ru/">
      <vmcl xmlns="">3</vmcl>
      <docType xmlns="">17</docType>
      <document xmlns="">PENsaW5pY2FsRG9jdW1lbnQvPg==</document>
    </sendDocument>
  </S:Body>
</S:Envelope>"""


@pytest.fixture(scope="module")
def pems() -> tuple[str, str]:
    return generate_demo_certificate("МИС роддома", organisation="ГБУЗ Роддом № 1")


@pytest.fixture(scope="module")
def key(pems):
    return load_signing_key(*pems)


@pytest.fixture(scope="module")
def other_key():
    return load_signing_key(*generate_demo_certificate("Чужая система"))


def _envelope() -> etree._Element:
    envelope = etree.fromstring(ENVELOPE)
    set_wsu_id(envelope.find(f"{{{SOAP}}}Body"), "body")
    header = envelope.find(f"{{{SOAP}}}Header")
    set_wsu_id(header.find(f"{{{WSA}}}To"), "id-to")
    set_wsu_id(header.find(f"{{{WSA}}}Action"), "id-action")
    set_wsu_id(header.find(f"{{{WSA}}}MessageID"), "id-messageid")
    return envelope


def _signed(key, **kwargs) -> bytes:
    envelope = _envelope()
    sign_envelope(envelope, key, ["body", "id-to", "id-action", "id-messageid"], **kwargs)
    return etree.tostring(envelope)


def _refused(xml: bytes, **kwargs) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_envelope(etree.fromstring(xml), **kwargs)
    return str(caught.value)


def test_demo_certificate_is_usable(key, pems):
    assert "CN=МИС роддома" in key.subject and "O=ГБУЗ Роддом № 1" in key.subject
    assert key.cert_pem == pems[0]
    assert (key.not_after - key.certificate.not_valid_before_utc).days >= 729
    assert key.certificate.public_key().key_size == 2048


def test_demo_certificate_for_a_long_mo_name_is_shortened():
    name = "Государственное учреждение здравоохранения «Вологодская областная клиническая больница № 1»"
    key = load_signing_key(*generate_demo_certificate(name, organisation=name))
    common_name = key.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert len(common_name.encode()) <= 64  # the limit cryptography applies to a CN, in UTF-8 bytes
    assert common_name.startswith("Государственное") and common_name.endswith("…")


def test_a_key_that_does_not_match_the_certificate_is_refused(pems, other_key):
    other_pem = other_key.private_key.private_bytes(*_pkcs8()).decode()
    with pytest.raises(SigningKeyError, match="не соответствует сертификату"):
        load_signing_key(pems[0], other_pem)
    with pytest.raises(SigningKeyError):
        load_signing_key("не сертификат", pems[1])


def _pkcs8():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()


def test_signed_envelope_verifies_and_names_the_signer(key, pems):
    xml = _signed(key, timestamp=300)
    envelope = etree.fromstring(xml)  # what the receiver parses
    assert "CN=МИС роддома" in verify_envelope(envelope)
    assert "CN=МИС роддома" in verify_envelope(envelope, trusted_pem=pems[0])

    security = envelope.find(f"S:Header/{{{WSSE}}}Security", namespaces={"S": SOAP})
    assert security.get(f"{{{SOAP}}}mustUnderstand") == "1"
    token = security.find(f"{{{WSSE}}}BinarySecurityToken")
    assert (
        token.get("{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Id")
        == "id-x509"
    )
    assert base64.b64decode(token.text) == key.cert_der
    uris = [r.get("URI") for r in security.iter(f"{{{DS}}}Reference")]
    assert uris == ["#body", "#id-to", "#id-action", "#id-messageid", "#id-timestamp"]
    algorithms = {e.get("Algorithm") for e in security.iter() if e.get("Algorithm")}
    assert algorithms == {
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    }


def test_reindented_but_unchanged_signed_elements_still_verify(key):
    """Whitespace between header elements is outside every signed element."""
    xml = _signed(key).replace(b"</To>", b"</To>\n\n   ")
    assert verify_envelope(etree.fromstring(xml))


def test_tampered_body_is_refused(key):
    xml = _signed(key).replace(b'<docType xmlns="">17</docType>', b'<docType xmlns="">8</docType>')
    assert "#body изменён после подписания" in _refused(xml)


def test_tampered_header_is_refused(key):
    xml = _signed(key).replace(b"f7e12d2b-6d85", b"00000000-6d85")
    message = _refused(xml)
    assert message.startswith("Подпись ответа не прошла проверку:") and "#id-messageid" in message


def test_tampered_signed_info_or_value_is_refused(key):
    xml = _signed(key)
    value = re.search(rb"<ds:SignatureValue>([^<]+)<", xml).group(1)
    forged = base64.b64encode(bytes(b ^ 1 for b in base64.b64decode(value)))
    assert "SignatureValue" in _refused(xml.replace(value, forged))
    # drop a reference: the digests still match, the signature over SignedInfo does not
    xml_without_action = re.sub(rb'<ds:Reference URI="#id-action">.*?</ds:Reference>', b"", xml, flags=re.S)
    assert "SignatureValue" in _refused(xml_without_action)


def test_missing_signature_is_refused():
    message = _refused(etree.tostring(_envelope()))
    assert message.startswith("Ответ не подписан")


def test_unsigned_body_is_refused(key):
    envelope = _envelope()
    sign_envelope(envelope, key, ["id-to", "id-action"])
    assert "soap:Body" in _refused(etree.tostring(envelope))


def test_wrapped_duplicate_id_is_refused(key):
    """A second element with the signed wsu:Id (signature wrapping) must not pass."""
    xml = _signed(key)
    envelope = etree.fromstring(xml)
    header = envelope.find(f"{{{SOAP}}}Header")
    copy = etree.fromstring(etree.tostring(envelope.find(f"{{{SOAP}}}Body")))
    header.append(copy)
    assert "#body" in _refused(etree.tostring(envelope))


def test_foreign_certificate_is_refused(key, other_key, pems):
    # signed correctly, but by someone else than the trusted party
    assert "не доверенным сертификатом" in _refused(_signed(other_key), trusted_pem=pems[0])
    # the token swapped for another certificate: the signature no longer matches it
    xml = _signed(key)
    token = re.search(rb"<wsse:BinarySecurityToken[^>]*>([^<]+)<", xml).group(1)
    swapped = xml.replace(token, base64.b64encode(other_key.cert_der))
    assert "SignatureValue" in _refused(swapped)


def test_gost_signed_message_is_refused_as_unsupported(key):
    xml = _signed(key).replace(
        b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        b"urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34102012-gostr34112012-256",
    )
    assert "не поддерживается" in _refused(xml)


def test_expired_timestamp_is_refused(key):
    stale = _envelope()  # an answer whose wsu:Timestamp expired an hour ago (a replay)
    sign_envelope(stale, key, ["body"], timestamp=-3600)
    assert "истёк" in _refused(etree.tostring(stale))
    assert verify_envelope(etree.fromstring(_signed(key, timestamp=300)))


def test_ws_security_for_zeep_signs_added_headers_and_checks_answers(key, other_key, pems):
    added = []

    def add_headers(envelope):
        header = envelope.find(f"{{{SOAP}}}Header")
        reply_to = etree.SubElement(header, f"{{{WSA}}}ReplyTo")
        etree.SubElement(reply_to, f"{{{WSA}}}Address").text = "https://mis.example/callback"
        added.append(set_wsu_id(reply_to, "id-replyto"))
        return ["id-replyto"]

    wsse = WsSecurity(key, add_headers, trusted_pem=pems[0])
    envelope, headers = wsse.apply(etree.fromstring(ENVELOPE), {"SOAPAction": '"sendDocument"'})
    assert headers == {"SOAPAction": '"sendDocument"'} and added
    received = etree.fromstring(etree.tostring(envelope))
    assert verify_envelope(received)
    uris = [r.get("URI") for r in received.iter(f"{{{DS}}}Reference")]
    assert uris == ["#body", "#id-replyto"]

    assert wsse.verify(received) is received and "МИС роддома" in wsse.last_signer
    foreign = WsSecurity(other_key).apply(etree.fromstring(ENVELOPE), {})[0]
    with pytest.raises(SignatureError, match="не доверенным"):
        wsse.verify(etree.fromstring(etree.tostring(foreign)))
    with pytest.raises(SignatureError, match="Ответ не подписан"):
        wsse.verify(etree.fromstring(ENVELOPE))
    # an unsigned SOAP Fault passes through, so zeep can raise the service's own fault text
    fault = etree.fromstring(
        f'<S:Envelope xmlns:S="{SOAP}"><S:Body><S:Fault><faultcode>S:Server</faultcode>'
        "<faultstring>Сервис недоступен</faultstring></S:Fault></S:Body></S:Envelope>"
    )
    assert wsse.verify(fault) is fault
    assert WsSecurity(key, verify_answers=False).verify(etree.fromstring(ENVELOPE)) is not None


def test_detached_signature_round_trip(key, pems):
    document = "<ClinicalDocument>Иванова Мария\r\n</ClinicalDocument>\n".encode()
    signature = detached_signature(key, document)
    assert signature[:1] == b"\x30"  # DER
    assert "CN=МИС роддома" in verify_detached(signature, document)
    assert "CN=МИС роддома" in verify_detached(signature, document, trusted_pem=pems[0])


def test_detached_signature_of_changed_document_or_other_signer_is_refused(key, other_key, pems):
    document = b"<ClinicalDocument>1</ClinicalDocument>"
    signature = detached_signature(key, document)
    with pytest.raises(SignatureError, match="документ изменён"):
        verify_detached(signature, b"<ClinicalDocument>2</ClinicalDocument>")
    with pytest.raises(SignatureError, match="не доверенным"):
        verify_detached(detached_signature(other_key, document), document, trusted_pem=pems[0])
    corrupted = signature[:-5] + bytes(b ^ 0xFF for b in signature[-5:])
    with pytest.raises(SignatureError):
        verify_detached(corrupted, document)
    with pytest.raises(SignatureError, match="повреждена"):
        verify_detached(b"not a signature", document)
    with pytest.raises(SignatureError, match="не подписан"):
        verify_detached(b"", document)


def test_crc32_is_the_ieee_checksum_in_decimal():
    assert crc32_checksum(b"123456789") == "3421780262"  # the CRC-32 check value 0xCBF43926
    assert crc32_checksum(b"") == "0"
    assert crc32_checksum(b"The quick brown fox jumps over the lazy dog") == "1095738169"  # 0x414FA339
