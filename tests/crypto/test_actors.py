"""Several signers of one SOAP message (the ФСС profile): one wsse:Security block per actor.

What a receiver sees: each named signer's signature verifies and names its subject; a missing,
changed or borrowed signature is refused with the actor named; single-signer use is unchanged.
"""

from __future__ import annotations

import base64
import re

import pytest
from lxml import etree

from portal.crypto import (
    SignatureError,
    generate_demo_certificate,
    load_signing_key,
    set_wsu_id,
    sign_envelope,
    verify_envelope,
    verify_signers,
)

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"

OGRN = "1027500716143"
BODY_ID = f"OGRN_{OGRN}"
MO = f"http://eln.fss.ru/actor/mo/{OGRN}"
DOCTOR = f"http://eln.fss.ru/actor/doc/{OGRN}_12345678964"
ACCOUNTANT = f"http://eln.fss.ru/actor/doc/{OGRN}_11223344595_acc"
FSS = "http://eln.fss.ru/actor/fss/ca/1027739443236"

REQUEST = f"""<soapenv:Envelope xmlns:soapenv="{{soap}}" xmlns:wsu="{WSU}">
  <soapenv:Header/>
  <soapenv:Body>
    <createErsRequest xmlns="http://gtw.ws.fss.ru/openservice/ers">
      <medicalOrganization><ogrn>{OGRN}</ogrn><orgName>ГБУЗ Роддом № 1</orgName></medicalOrganization>
      <secondName>Иванова</secondName><firstName>Мария</firstName><snils>12345678964</snils>
    </createErsRequest>
  </soapenv:Body>
</soapenv:Envelope>"""


@pytest.fixture(scope="module")
def keys():
    return {
        DOCTOR: load_signing_key(
            *generate_demo_certificate("Петрова Анна Сергеевна", organisation="ГБУЗ Роддом № 1")
        ),
        MO: load_signing_key(*generate_demo_certificate("ГБУЗ Роддом № 1", organisation="ГБУЗ Роддом № 1")),
        ACCOUNTANT: load_signing_key(
            *generate_demo_certificate("Сидорова Ольга", organisation="ГБУЗ Роддом № 1")
        ),
    }


def _request(soap: str = SOAP) -> etree._Element:
    envelope = etree.fromstring(REQUEST.replace("{soap}", soap))
    set_wsu_id(envelope.find(f"{{{soap}}}Body"), BODY_ID)
    return envelope


def _signed(keys, actors=(DOCTOR, MO, ACCOUNTANT), soap: str = SOAP) -> bytes:
    envelope = _request(soap)
    for actor in actors:
        sign_envelope(envelope, keys[actor], [BODY_ID], actor=actor)
    return etree.tostring(envelope)


def _refused(xml: bytes, actors) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify_signers(etree.fromstring(xml), actors)
    return caught.value


def test_three_signers_each_verify_and_are_named(keys):
    received = etree.fromstring(_signed(keys))
    for actor in (DOCTOR, MO, ACCOUNTANT):
        assert verify_envelope(received, actor=actor) == keys[actor].subject
    signers = verify_signers(received, [DOCTOR, MO, ACCOUNTANT])
    assert list(signers) == [DOCTOR, MO, ACCOUNTANT]
    assert "CN=Петрова Анна Сергеевна" in signers[DOCTOR] and "CN=ГБУЗ Роддом № 1" in signers[MO]

    blocks = received.findall(f"{{{SOAP}}}Header/{{{WSSE}}}Security")
    assert [b.get(f"{{{SOAP}}}actor") for b in blocks] == [DOCTOR, MO, ACCOUNTANT]  # signing order
    for block, actor in zip(blocks, (DOCTOR, MO, ACCOUNTANT), strict=True):
        token = block.find(f"{{{WSSE}}}BinarySecurityToken")
        assert token.get(f"{{{WSU}}}Id") == actor  # as in the ЭЛН spec's examples
        assert base64.b64decode(token.text) == keys[actor].cert_der
        assert block.find(f".//{{{WSSE}}}Reference").get("URI") == f"#{actor}"
        assert [r.get("URI") for r in block.iter(f"{{{DS}}}Reference")] == [f"#{BODY_ID}"]


def test_a_message_with_several_signers_needs_an_actor_to_verify(keys):
    with pytest.raises(SignatureError, match="wsse:Security: найдено элементов — 3"):
        verify_envelope(etree.fromstring(_signed(keys)))


def test_a_missing_signer_is_refused_by_name(keys):
    error = _refused(_signed(keys, actors=(DOCTOR, MO)), [DOCTOR, MO, ACCOUNTANT])
    assert error.actor == ACCOUNTANT
    assert str(error).startswith(f"Подпись {ACCOUNTANT} не прошла проверку: нет подписи")
    # a single-actor check of an unsigned message names the actor as well
    with pytest.raises(SignatureError, match=f"Подпись {re.escape(MO)} .*нет подписи"):
        verify_envelope(_request(), actor=MO)


def test_a_tampered_signature_is_refused_naming_its_actor(keys):
    xml = _signed(keys)
    blocks = re.findall(rb"<ds:SignatureValue>([^<]+)<", xml)
    forged = base64.b64encode(bytes(b ^ 1 for b in base64.b64decode(blocks[1])))
    tampered = xml.replace(blocks[1], forged)  # the МО's signature value
    error = _refused(tampered, [DOCTOR, MO, ACCOUNTANT])
    assert error.actor == MO and "SignatureValue" in str(error) and MO in str(error)
    assert verify_signers(etree.fromstring(tampered), [DOCTOR, ACCOUNTANT])  # the others still hold


def test_a_tampered_body_is_refused_for_every_signer(keys):
    xml = _signed(keys).replace(b"<snils>12345678964</snils>", b"<snils>00000000000</snils>")
    error = _refused(xml, [DOCTOR, MO, ACCOUNTANT])
    assert error.actor == DOCTOR and f"#{BODY_ID} изменён после подписания" in str(error)
    with pytest.raises(SignatureError, match=re.escape(ACCOUNTANT)):
        verify_envelope(etree.fromstring(xml), actor=ACCOUNTANT)


def test_a_signer_cannot_borrow_another_signers_certificate(keys):
    xml = _signed(keys)
    # the accountant's KeyInfo made to point at the doctor's token
    accountant_ref = f'<wsse:Reference URI="#{ACCOUNTANT}"'.encode()
    borrowed = xml.replace(accountant_ref, f'<wsse:Reference URI="#{DOCTOR}"'.encode())
    error = _refused(borrowed, [ACCOUNTANT])
    assert error.actor == ACCOUNTANT and "вне её блока" in str(error)


def test_signing_again_as_the_same_actor_replaces_only_that_block(keys):
    envelope = etree.fromstring(_signed(keys))
    sign_envelope(envelope, keys[DOCTOR], [BODY_ID], actor=MO, timestamp=300)  # МО block re-signed
    blocks = envelope.findall(f"{{{SOAP}}}Header/{{{WSSE}}}Security")
    assert [b.get(f"{{{SOAP}}}actor") for b in blocks] == [DOCTOR, MO, ACCOUNTANT]
    received = etree.fromstring(etree.tostring(envelope))
    assert verify_envelope(received, actor=MO) == keys[DOCTOR].subject
    assert verify_signers(received, [DOCTOR, MO, ACCOUNTANT])[ACCOUNTANT] == keys[ACCOUNTANT].subject
    # signing without an actor is the single-signer behaviour: every other block goes
    sign_envelope(envelope, keys[MO], [BODY_ID])
    assert len(envelope.findall(f"{{{SOAP}}}Header/{{{WSSE}}}Security")) == 1
    assert verify_envelope(etree.fromstring(etree.tostring(envelope))) == keys[MO].subject


def test_soap12_blocks_carry_the_role(keys):
    received = etree.fromstring(_signed(keys, actors=(DOCTOR, MO), soap=SOAP12))
    blocks = received.findall(f"{{{SOAP12}}}Header/{{{WSSE}}}Security")
    assert [b.get(f"{{{SOAP12}}}role") for b in blocks] == [DOCTOR, MO]
    assert blocks[0].get(f"{{{SOAP12}}}mustUnderstand") == "true"
    assert set(verify_signers(received, [DOCTOR, MO])) == {DOCTOR, MO}


def test_a_pinned_signer_must_use_the_pinned_certificate(keys):
    received = etree.fromstring(_signed(keys))
    pinned = {MO: keys[MO].cert_pem, DOCTOR: keys[DOCTOR].cert_pem}
    assert verify_signers(received, [DOCTOR, MO], trusted=pinned)
    with pytest.raises(SignatureError, match="не доверенным сертификатом") as caught:
        verify_signers(received, [DOCTOR, MO], trusted={MO: keys[ACCOUNTANT].cert_pem})
    assert caught.value.actor == MO


def test_an_answer_in_the_fss_form_verifies_with_the_fss_actor(keys):
    """ФСС answers: one block, actor …/fss/ca/1027739443236, prefix S bound to SOAP 1.1."""
    fss_key = keys[MO]  # stands in for the ФСС certificate
    answer = etree.fromstring(
        f'<S:Envelope xmlns:S="{SOAP}" xmlns:wsu="{WSU}"><S:Header/>'
        '<S:Body wsu:Id="OGRN_1027739443236"><createErsResponse xmlns="http://gtw.ws.fss.ru/openservice/ers">'
        "<status>REGISTERED</status><requestId>42</requestId></createErsResponse></S:Body></S:Envelope>"
    )
    sign_envelope(answer, fss_key, ["OGRN_1027739443236"], actor=FSS)
    received = etree.fromstring(etree.tostring(answer))
    assert verify_envelope(received, trusted_pem=fss_key.cert_pem, actor=FSS) == fss_key.subject
    assert verify_envelope(received, trusted_pem=fss_key.cert_pem) == fss_key.subject  # the only block
    with pytest.raises(SignatureError, match=re.escape(MO)):
        verify_envelope(received, actor=MO)
