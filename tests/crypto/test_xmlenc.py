"""XML Encryption of the SOAP Body for ФСС, and the sign → encrypt / decrypt → verify order.

What the two sides see: the encrypted request shows nothing of the patient; the recipient gets
back exactly the signed Body and verifies every signer; a message for another certificate, a
changed ciphertext, an unencrypted or unsigned answer is refused with a Russian reason.
"""

from __future__ import annotations

import base64
import re

import pytest
from lxml import etree

from portal.crypto import (
    DecryptionError,
    SignatureError,
    decrypt_body,
    decrypt_message,
    encrypt_body,
    encrypt_message,
    generate_demo_certificate,
    is_encrypted,
    load_signing_key,
    reply_certificate,
    set_wsu_id,
    sign_envelope,
    verify_envelope,
    verify_signers,
)
from portal.crypto.xmlenc import AES256_CBC, GOST28147

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
XENC = "http://www.w3.org/2001/04/xmlenc#"
DS = "http://www.w3.org/2000/09/xmldsig#"
C14N = {"method": "c14n", "exclusive": True, "with_comments": False}

OGRN = "1027500716143"
BODY_ID = f"OGRN_{OGRN}"
MO = f"http://eln.fss.ru/actor/mo/{OGRN}"
DOCTOR = f"http://eln.fss.ru/actor/doc/{OGRN}_12345678964"
ACCOUNTANT = f"http://eln.fss.ru/actor/doc/{OGRN}_11223344595_acc"
FSS = "http://eln.fss.ru/actor/fss/ca/1027739443236"

# namespaces declared on the Envelope and used inside the Body (xsi:type QName too), text,
# a comment and Cyrillic: all of it must come back the same
REQUEST = f"""<soapenv:Envelope xmlns:soapenv="{SOAP}" xmlns:wsu="{WSU}"
    xmlns:ers="http://gtw.ws.fss.ru/openservice/ers" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <soapenv:Header/>
  <soapenv:Body>
    <ers:createErsRequest>
      <!-- Талон 1 -->
      <ers:medicalOrganization><ers:ogrn>{OGRN}</ers:ogrn><ers:orgName>ГБУЗ «Роддом № 1» &amp; Ко</ers:orgName></ers:medicalOrganization>
      <ers:secondName>Иванова</ers:secondName><ers:firstName>Мария</ers:firstName>
      <ers:snils xsi:type="xsd:string">12345678964</ers:snils>
      <ers:patronymic xsi:nil="true"/>
    </ers:createErsRequest>
  </soapenv:Body>
</soapenv:Envelope>"""


def _key(name: str):
    return load_signing_key(*generate_demo_certificate(name, organisation="ГБУЗ Роддом № 1"))


@pytest.fixture(scope="module")
def keys():
    return {
        DOCTOR: _key("Петрова Анна Сергеевна"),
        MO: _key("ГБУЗ Роддом № 1"),
        ACCOUNTANT: _key("Сидорова Ольга"),
        FSS: load_signing_key(
            *generate_demo_certificate("ФСС РФ", organisation="Фонд социального страхования")
        ),
        "other": _key("Чужая МО"),
    }


def _request() -> etree._Element:
    envelope = etree.fromstring(REQUEST)
    set_wsu_id(envelope.find(f"{{{SOAP}}}Body"), BODY_ID)
    return envelope


def _body(envelope: etree._Element) -> etree._Element:
    return envelope.find(f"{{{SOAP}}}Body")


def _wire(envelope: etree._Element) -> etree._Element:
    """What the other side parses."""
    return etree.fromstring(etree.tostring(envelope))


def _refused(envelope: etree._Element, key, **kwargs) -> DecryptionError:
    with pytest.raises(DecryptionError) as caught:
        decrypt_body(envelope, key, **kwargs)
    return caught.value


def test_round_trip_restores_the_body_exactly(keys):
    envelope = _request()
    before = etree.tostring(_body(envelope), **C14N)
    encrypt_body(envelope, keys[FSS].cert_pem)
    wire = etree.tostring(envelope)
    assert "Иванова".encode() not in wire and b"12345678964" not in wire and b"createErsRequest" not in wire
    assert is_encrypted(envelope)

    received = etree.fromstring(wire)
    body = _body(received)
    assert body.get(f"{{{WSU}}}Id") == BODY_ID  # the signatures' target stays addressable
    data = body.find(f"{{{XENC}}}EncryptedData")
    assert data.get("Type") == "http://www.w3.org/2001/04/xmlenc#Content"
    assert (
        data.find(f"{{{XENC}}}EncryptionMethod").get("Algorithm")
        == "http://www.w3.org/2009/xmlenc11#aes256-gcm"
    )
    encrypted_key = data.find(f"{{{DS}}}KeyInfo/{{{XENC}}}EncryptedKey")
    assert (
        encrypted_key.find(f"{{{XENC}}}EncryptionMethod").get("Algorithm")
        == "http://www.w3.org/2009/xmlenc11#rsa-oaep"
    )
    certificate = encrypted_key.findtext(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    assert base64.b64decode(certificate) == keys[FSS].cert_der  # the recipient is identified

    decrypt_body(received, keys[FSS])
    assert etree.tostring(_body(received), **C14N) == before
    assert not is_encrypted(received)
    assert (
        received.find(
            f".//{{{SOAP}}}Body//*[@xsi:type='xsd:string']",
            {"xsi": "http://www.w3.org/2001/XMLSchema-instance"},
        )
        is not None
    )


def test_several_recipients_and_the_cbc_algorithm(keys):
    envelope = _request()
    before = etree.tostring(_body(envelope), **C14N)
    encrypt_body(envelope, [keys[FSS].cert_pem, keys[MO].cert_pem], method=AES256_CBC)
    for reader in (FSS, MO):
        received = _wire(envelope)
        decrypt_body(received, keys[reader])
        assert etree.tostring(_body(received), **C14N) == before


def test_a_message_for_another_certificate_is_refused(keys):
    envelope = _wire(_encrypted(keys))
    error = _refused(envelope, keys["other"], what="Ответ ФСС")
    assert str(error).startswith("Ответ ФСС не расшифрован: сообщение зашифровано для другого сертификата")
    assert "CN=ФСС РФ" in str(error)


def test_a_wrong_private_key_is_refused(keys):
    """The EncryptedKey claims our certificate, but the key was wrapped for someone else."""
    xml = etree.tostring(_encrypted(keys)).replace(
        base64.b64encode(keys[FSS].cert_der), base64.b64encode(keys["other"].cert_der)
    )
    error = _refused(etree.fromstring(xml), keys["other"])
    assert "сеансовый ключ не расшифровывается этим закрытым ключом" in str(error)


def test_a_tampered_ciphertext_is_refused(keys):
    xml = etree.tostring(_encrypted(keys))
    values = re.findall(rb"<xenc:CipherValue>([^<]+)<", xml)
    content = values[-1]  # the data; values[0] is the wrapped key
    raw = bytearray(base64.b64decode(content))
    raw[40] ^= 1
    tampered = xml.replace(content, base64.b64encode(bytes(raw)))
    error = _refused(etree.fromstring(tampered), keys[FSS], what="Ответ ФСС")
    assert str(error) == (
        "Ответ ФСС не расшифрован: шифротекст повреждён или изменён (не сходится контрольный код)."
    )
    assert error.reason.startswith("шифротекст повреждён")


def test_an_unencrypted_body_is_refused_when_encryption_is_required(keys):
    error = _refused(_request(), keys[FSS], what="Ответ ФСС")
    assert str(error) == "Ответ ФСС не расшифрован: тело сообщения не зашифровано (нет xenc:EncryptedData)."
    # plaintext smuggled next to the encrypted data is not accepted either
    envelope = _encrypted(keys)
    etree.SubElement(_body(envelope), "injected").text = "1"
    assert "другие элементы" in str(_refused(envelope, keys[FSS]))


def test_a_gost_encrypted_message_is_refused_as_unsupported(keys):
    xml = etree.tostring(_encrypted(keys)).replace(
        b"http://www.w3.org/2009/xmlenc11#aes256-gcm", GOST28147.encode()
    )
    assert f"алгоритм шифрования {GOST28147} не поддерживается" in str(
        _refused(etree.fromstring(xml), keys[FSS])
    )


def test_a_body_cannot_be_encrypted_twice(keys):
    envelope = _encrypted(keys)
    with pytest.raises(ValueError, match="already encrypted"):
        encrypt_body(envelope, keys[FSS].cert_pem)


def _encrypted(keys) -> etree._Element:
    envelope = _request()
    encrypt_body(envelope, keys[FSS].cert_pem)
    return envelope


def test_sign_encrypt_then_decrypt_verify_end_to_end(keys):
    # МИС: three signers over the plaintext Body, then encryption for ФСС with our reply certificate
    request = _request()
    for actor in (DOCTOR, MO, ACCOUNTANT):
        sign_envelope(request, keys[actor], [BODY_ID], actor=actor)
    encrypt_body(request, keys[FSS].cert_pem, reply_cert_pem=keys[MO].cert_pem)

    # ФСС: the signatures cannot be checked while the Body is encrypted ...
    at_fss = _wire(request)
    with pytest.raises(SignatureError, match="изменён после подписания"):
        verify_envelope(at_fss, actor=MO)
    # ... decrypt first, then every signer verifies
    decrypt_body(at_fss, keys[FSS])
    signers = verify_signers(at_fss, [DOCTOR, MO, ACCOUNTANT], trusted={MO: keys[MO].cert_pem})
    assert signers[DOCTOR] == keys[DOCTOR].subject
    assert reply_certificate(at_fss) == keys[MO].cert_pem

    # ФСС answers: signed with its actor, encrypted for the certificate the request named
    answer = etree.fromstring(
        f'<S:Envelope xmlns:S="{SOAP}" xmlns:wsu="{WSU}"><S:Header/>'
        '<S:Body wsu:Id="OGRN_1027739443236"><createErsResponse xmlns="http://gtw.ws.fss.ru/openservice/ers">'
        "<ersNumber>1234567890</ersNumber></createErsResponse></S:Body></S:Envelope>"
    )
    sign_envelope(answer, keys[FSS], ["OGRN_1027739443236"], actor=FSS)
    encrypt_body(answer, reply_certificate(at_fss))

    # МИС: decrypt, then verify ФСС's signature pinned to its certificate
    received = _wire(answer)
    decrypt_body(received, keys[MO], what="Ответ ФСС")
    assert verify_envelope(received, trusted_pem=keys[FSS].cert_pem, actor=FSS) == keys[FSS].subject
    assert received.findtext(".//{http://gtw.ws.fss.ru/openservice/ers}ersNumber") == "1234567890"


def test_a_tampered_or_unsigned_answer_is_refused(keys):
    body = (
        f'<S:Envelope xmlns:S="{SOAP}" xmlns:wsu="{WSU}"><S:Header/>'
        '<S:Body wsu:Id="OGRN_1027739443236"><r xmlns="urn:ers"><ersNumber>1</ersNumber></r></S:Body></S:Envelope>'
    )
    # tampered before encryption (someone re-encrypted a changed answer): the signature fails
    answer = etree.fromstring(body)
    sign_envelope(answer, keys[FSS], ["OGRN_1027739443236"], actor=FSS)
    changed = etree.fromstring(etree.tostring(answer).replace(b"<ersNumber>1<", b"<ersNumber>2<"))
    encrypt_body(changed, keys[MO].cert_pem)
    received = _wire(changed)
    decrypt_body(received, keys[MO])
    with pytest.raises(SignatureError, match="изменён после подписания") as caught:
        verify_envelope(received, trusted_pem=keys[FSS].cert_pem, actor=FSS)
    assert caught.value.actor == FSS

    # encrypted but not signed
    unsigned = etree.fromstring(body)
    encrypt_body(unsigned, keys[MO].cert_pem)
    received = _wire(unsigned)
    decrypt_body(received, keys[MO])
    with pytest.raises(SignatureError, match="нет подписи"):
        verify_envelope(received, trusted_pem=keys[FSS].cert_pem, actor=FSS)

    # signed by someone else under the ФСС actor
    forged = etree.fromstring(body)
    sign_envelope(forged, keys["other"], ["OGRN_1027739443236"], actor=FSS)
    encrypt_body(forged, keys[MO].cert_pem)
    received = _wire(forged)
    decrypt_body(received, keys[MO])
    with pytest.raises(SignatureError, match="не доверенным сертификатом"):
        verify_envelope(received, trusted_pem=keys[FSS].cert_pem, actor=FSS)


def test_whole_message_variant_round_trip(keys):
    request = _request()
    sign_envelope(request, keys[MO], [BODY_ID], actor=MO)
    signed = etree.tostring(request, **C14N)
    outer = _wire(encrypt_message(request, keys[FSS].cert_pem))
    assert outer.find(f"{{{SOAP}}}Header/*") is None  # nothing readable outside
    assert b"wsse:Security" not in etree.tostring(outer)
    inner = decrypt_message(outer, keys[FSS])
    assert etree.tostring(inner, **C14N) == signed
    assert verify_envelope(inner, actor=MO) == keys[MO].subject
    with pytest.raises(DecryptionError, match="другого сертификата"):
        decrypt_message(outer, keys[MO])
