"""The portal's reconstructed ФСС ЭРС contract (portal/schemas/ers): what zeep builds from it and what
the schema accepts — the messages the ЭРС client sends and the answers it must understand."""

from __future__ import annotations

import functools
from datetime import date, datetime
from pathlib import Path

import pytest
import requests
import zeep
from lxml import etree
from zeep.transports import Transport

SCHEMAS = Path(__file__).resolve().parent.parent.parent / "portal" / "schemas" / "ers"
WSDL = SCHEMAS / "ErsService.wsdl"
XSD = SCHEMAS / "ErsTypes.xsd"
ERS = "http://gtw.ws.fss.ru/openservice/ers"
XS = "http://www.w3.org/2001/XMLSchema"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"

OPERATIONS = {
    "createErs",
    "getErsData",
    "disableErs",
    "putTicket1",
    "putTicket2",
    "putTicket3",
    "putVisit",
    "getResultById",
    "registerChildErs",
    "getTickets",
}
WRITES = OPERATIONS - {"getErsData", "getTickets", "getResultById"}
STATUSES = ["REGISTERED", "READY_TO_PROCESS", "PROCESSING", "PROCESSED", "PROCESSING_ERROR"]
ENVELOPE = ["requestId", "status", "message", "errorCode", "errorText", "errors"]


@functools.cache
def _client() -> zeep.Client:
    return zeep.Client(str(WSDL))


@functools.cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def _f():
    return _client().type_factory("ns0")


def _fields(type_name: str) -> list[str]:
    """Child element names of a complex type as zeep sees it (inherited ones first)."""
    return [name for name, _ in _client().get_type(f"{{{ERS}}}{type_name}").elements]


def _common() -> dict:
    f = _f()
    return {
        "systemInfo": f.SystemInfo(specVersion="1.0", software="obstetric-portal", softwareVerison="1.0"),
        "medicalOrganization": f.MedicalOrganization(
            orgName="ГБУЗ СО «Центральная городская больница № 2 им. А.А. Миславского»",
            inn="6658021402",
            ogrn="1026602336727",
            kpp="665801001",
            contractServiceType="1",
            contractNumber="14",
            conractDate=date(2021, 12, 31),
        ),
    }


def _person(with_data: bool = True):
    f = _f()
    if with_data:
        return f.Person(
            birthdate=date(1994, 5, 6),
            firstName="Екатерина",
            secondName="Требушинина",
            patronymic="Васильевна",
            medicalInsurance=f.MedicalInsurance(
                medicalInsurance=f.MedicalInsurancePolicy(
                    insuranceNumber="6653400830000123", beginDate=date(2015, 1, 1)
                )
            ),
            snils=f.SnilsOrReason(snils="15135820937"),
            identifyingDocument=f.IdentifyingDocument(
                idDoc=f.IdDoc(
                    kind="21",
                    docNumber="123456",
                    docSerie="6514",
                    docIssueDate=date(2014, 5, 20),
                    docIssuer="Отделом УФМС России по Свердловской обл.",
                )
            ),
            residenceAddress=f.ResidenceAddress(residenceAddress="г. Екатеринбург, ул. Ленина, д. 1, кв. 2"),
        )
    return f.Person(
        birthdate=date(1989, 11, 12),
        firstName="Мария",
        secondName="Васильева",
        medicalInsurance=f.MedicalInsurance(noDataReason="отсутствует"),
        snils=f.SnilsOrReason(noDataReason="не предоставлен"),
        identifyingDocument=f.IdentifyingDocument(noDataReason="не предоставлен"),
        residenceAddress=f.ResidenceAddress(noDataReason="без определённого места жительства"),
    )


def _samples() -> dict[str, dict]:
    f = _f()
    common = _common()
    return {
        "createErs": {**common, "person": _person(), "registerDate": date(2021, 11, 1)},
        "getErsData": {**common, "params": f.GetErsDataParams(ersIdentifier="9000943761")},
        "disableErs": {
            **common,
            "disableErsRequest": f.DisableErsParams(
                ersIdentifier="9000943761", reasonCode="1", reasonMessage="ЭРС запрошен ошибочно"
            ),
        },
        "putTicket1": {
            **common,
            "tickets": f.Ticket1Tickets(
                storage=[
                    f.Ticket1Storage(
                        person=_person(),
                        ticket1=f.Ticket1(
                            ersNumber="9000943761",
                            createDate=date(2021, 10, 18),
                            pregnancyTimeOnRegisterDate=9,
                            pregnancyTimeOnPutDate=30,
                            isMultiplePregnancy=False,
                            lnNumber="910012345678",
                            exchangeCardNumber="123",
                            exchangeCardDate=date(2021, 10, 18),
                        ),
                    )
                ]
            ),
        },
        "putTicket2": {
            **common,
            "tickets": f.Ticket2Tickets(
                storage=[
                    f.Ticket2Storage(
                        person=_person(with_data=False),
                        ticket2=f.Ticket2(
                            ersNumber="9000943761",
                            createDate=date(2021, 6, 9),
                            arrivalDate=date(2021, 6, 7),
                            birthDateTime=datetime(2021, 6, 7, 12, 1),
                            childbirthResultMKB10="O80.0",
                            totalChildrenCount=1,
                            newbornList=f.NewbornList(
                                storage=[f.Newborn(gender="2", height=52, weight=3450)]
                            ),
                        ),
                    )
                ]
            ),
        },
        "putTicket3": {
            **common,
            "tickets": f.Ticket3Tickets(
                storage=[
                    f.Ticket3Storage(
                        person=_person(),
                        ticket3=f.Ticket3(
                            ersNumber="9000943761",
                            createDate=date(2021, 12, 10),
                            ticket3Part="3-1",
                            childrenList=f.ChildrenList(
                                storage=[
                                    f.Child(
                                        birthdate=date(2021, 6, 7),
                                        firstName="Анна",
                                        secondName="Требушинина",
                                        medicalInsuranceNumber="6653400830000456",
                                        watchBeginDate=date(2021, 6, 15),
                                        watchEndDate=date(2021, 12, 7),
                                    )
                                ]
                            ),
                        ),
                    )
                ]
            ),
        },
        "putVisit": {
            **common,
            "visits": f.Visits(
                storage=[
                    f.VisitStorage(
                        person=_person(),
                        visit=f.Visit(
                            ersNumber="9000943761",
                            visitId="exam-4711",
                            visitAction="ADD",
                            visitDate=datetime(2021, 10, 21, 11, 26),
                            pregnancyTimeOnVisitDate=13,
                            diagnosis="Беременность 13.0 недель.",
                        ),
                    )
                ]
            ),
        },
        "getResultById": {
            **common,
            "requestType": "createErs",
            "requestId": "6b8620ef-1233-4800-8066-074028063374",
        },
        "registerChildErs": {
            **common,
            "person": _person(),
            "registerChildrenInfo": f.RegisterChildrenInfo(
                ersNumber="9000943761",
                childrenList=f.RegisteredChildrenList(
                    storage=[
                        f.RegisteredChild(
                            birthdate=date(2021, 6, 7),
                            firstName="Анна",
                            secondName="Требушинина",
                            registerDate=date(2021, 6, 15),
                        )
                    ]
                ),
            ),
        },
        "getTickets": {
            **common,
            "getTicketsParams": f.GetTicketsParams(
                ticketStatus="PAID", startDate=date(2021, 1, 1), endDate=date(2021, 12, 31)
            ),
        },
    }


def _body(operation: str, **kwargs) -> etree._Element:
    client = _client()
    envelope = client.create_message(client.service, operation, **kwargs)
    return envelope.find(f"{{{SOAP}}}Body")[0]


class _Canned(Transport):
    """Answers every post with a fixed SOAP reply and keeps what was sent."""

    def __init__(self, reply: bytes):
        super().__init__()
        self.reply = reply
        self.sent: list[tuple[etree._Element, dict]] = []

    def post_xml(self, address, envelope, headers):
        self.sent.append((envelope, headers))
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "text/xml; charset=utf-8"
        response._content = self.reply
        return response


def _reply(body: str) -> bytes:
    return f'<S:Envelope xmlns:S="{SOAP}"><S:Body>{body}</S:Body></S:Envelope>'.encode()


# ----------------------------------------------------------------------------------------------


def test_zeep_loads_the_wsdl_with_every_operation():
    client = _client()
    assert set(client.service._operations) == OPERATIONS
    binding = client.service._binding
    for name in OPERATIONS:
        operation = binding.get(name)
        assert operation.style == "document"
        assert operation.input.body.qname == etree.QName(ERS, f"{name}Request")
        assert operation.output.body.qname == etree.QName(ERS, f"{name}Response")
        assert operation.soapaction == f"{ERS}/{name}"


def test_the_header_says_reconstructed_and_names_the_setting_for_an_official_wsdl():
    for path in (WSDL, XSD):
        text = path.read_text(encoding="utf-8")
        assert "NOT AN OFFICIAL" in text
        assert "ers.wsdl" in text
    wsdl = WSDL.read_text(encoding="utf-8")
    assert "genbodev/promed" in wsdl and "specs/fss-eln" in wsdl and "putVisit is ours" in wsdl


def test_requests_carry_the_blocks_of_the_notes():
    assert _fields("SystemInfo") == ["specVersion", "software", "softwareVerison"]
    assert _fields("MedicalOrganization") == [
        "orgName", "inn", "ogrn", "kpp", "contractServiceType", "contractNumber", "conractDate",
    ]  # fmt: skip
    assert _fields("Person") == [
        "birthdate", "firstName", "secondName", "patronymic",
        "medicalInsurance", "snils", "identifyingDocument", "residenceAddress",
    ]  # fmt: skip
    assert _fields("Ticket1") == [
        "ersNumber", "createDate", "pregnancyTimeOnRegisterDate", "pregnancyTimeOnPutDate",
        "isMultiplePregnancy", "lnNumber", "exchangeCardNumber", "exchangeCardDate",
    ]  # fmt: skip
    assert _fields("Ticket2") == [
        "ersNumber", "createDate", "arrivalDate", "birthDateTime", "childbirthResultMKB10",
        "deathReason", "totalChildrenCount", "newbornList",
    ]  # fmt: skip
    assert _fields("Newborn") == ["gender", "height", "weight", "deathReason"]
    assert _fields("Ticket3") == ["ersNumber", "createDate", "ticket3Part", "childrenList"]
    assert _fields("Child") == [
        "birthdate", "firstName", "secondName", "patronymic", "medicalInsuranceNumber",
        "watchBeginDate", "watchEndDate",
    ]  # fmt: skip
    assert _fields("DisableErsParams") == ["ersIdentifier", "reasonCode", "reasonMessage"]
    assert _fields("GetTicketsParams") == ["ticketStatus", "startDate", "endDate"]
    assert _fields("GetResultByIdRequest")[-2:] == ["requestType", "requestId"]


@pytest.mark.parametrize(
    "type_name", ["MedicalInsurance", "SnilsOrReason", "IdentifyingDocument", "ResidenceAddress"]
)
def test_each_person_datum_has_its_no_data_reason_alternative(type_name):
    node = etree.parse(str(XSD)).find(f"{{{XS}}}complexType[@name='{type_name}']")
    choice = node.find(f"{{{XS}}}choice")
    assert choice is not None
    names = [element.get("name") for element in choice.findall(f"{{{XS}}}element")]
    assert len(names) == 2 and names[1] == "noDataReason"


def test_every_response_is_the_eln_style_result_envelope():
    client = _client()
    for name in OPERATIONS:
        response_type = client.get_element(f"{{{ERS}}}{name}Response").type
        assert [field for field, _ in response_type.elements][: len(ENVELOPE)] == ENVELOPE, name
    assert _fields("Errors") == ["error"]
    assert _fields("Error") == ["code", "message"]
    assert _fields("GetResultByIdResponse")[len(ENVELOPE) :] == ["requestType", "ersNumber"]


def test_the_five_statuses_are_the_enumeration_of_the_status_type():
    tree = etree.parse(str(XSD))
    status = tree.find(f"{{{XS}}}complexType[@name='ErsRequestResult']//{{{XS}}}element[@name='status']")
    assert status.get("type") == "tns:RequestStatus"
    values = [
        node.get("value")
        for node in tree.findall(
            f"{{{XS}}}simpleType[@name='RequestStatus']/{{{XS}}}restriction/{{{XS}}}enumeration"
        )
    ]
    assert values == STATUSES
    schema = _schema()
    for value in STATUSES:
        assert schema.validate(
            etree.fromstring(f'<putVisitResponse xmlns="{ERS}"><status>{value}</status></putVisitResponse>')
        )
    assert not schema.validate(
        etree.fromstring(f'<putVisitResponse xmlns="{ERS}"><status>DONE</status></putVisitResponse>')
    )


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_sample_request_serialises_and_validates(operation):
    body = _body(operation, **_samples()[operation])
    assert body.tag == f"{{{ERS}}}{operation}Request"
    _schema().assertValid(body)


def test_a_person_without_data_sends_the_reasons():
    body = _body("putTicket2", **_samples()["putTicket2"])
    person = body.find(f".//{{{ERS}}}person")
    for block in ("medicalInsurance", "snils", "identifyingDocument", "residenceAddress"):
        assert person.find(f"{{{ERS}}}{block}/{{{ERS}}}noDataReason") is not None, block
    assert person.find(f"{{{ERS}}}patronymic") is None


def test_the_schema_refuses_what_the_contract_does_not_allow():
    schema = _schema()
    visit = _body("putVisit", **_samples()["putVisit"])
    visit.find(f".//{{{ERS}}}visitAction").text = "DELETE"
    assert not schema.validate(visit)
    person = _body("createErs", **_samples()["createErs"])
    snils = person.find(f".//{{{ERS}}}person/{{{ERS}}}snils")
    etree.SubElement(snils, f"{{{ERS}}}noDataReason").text = "не предоставлен"  # both a number and a reason
    assert not schema.validate(person)
    talon = _body("putTicket3", **_samples()["putTicket3"])
    talon.find(f".//{{{ERS}}}ticket3Part").text = "3-3"
    assert not schema.validate(talon)


@pytest.mark.parametrize("operation", sorted(WRITES))
def test_a_write_is_answered_registered_with_a_request_id(operation):
    reply = _reply(
        f'<e:{operation}Response xmlns:e="{ERS}"><e:requestId>6b8620ef-1233-4800-8066-074028063374</e:requestId>'
        f"<e:status>REGISTERED</e:status></e:{operation}Response>"
    )
    _schema().assertValid(etree.fromstring(reply)[0][0])
    transport = _Canned(reply)
    client = zeep.Client(str(WSDL), transport=transport)
    answer = getattr(client.service, operation)(**_samples()[operation])
    assert answer.status == "REGISTERED"
    assert answer.requestId == "6b8620ef-1233-4800-8066-074028063374"
    sent, headers = transport.sent[0]
    assert headers["SOAPAction"] == f'"{ERS}/{operation}"'
    _schema().assertValid(sent.find(f"{{{SOAP}}}Body")[0])


def test_a_processed_create_ers_result_carries_the_ers_number():
    reply = _reply(
        f'<getResultByIdResponse xmlns="{ERS}"><requestId>6b8620ef</requestId><status>PROCESSED</status>'
        "<requestType>createErs</requestType><ersNumber>9000943761</ersNumber></getResultByIdResponse>"
    )
    _schema().assertValid(etree.fromstring(reply)[0][0])
    client = zeep.Client(str(WSDL), transport=_Canned(reply))
    answer = client.service.getResultById(**_samples()["getResultById"])
    assert (answer.status, answer.requestType, answer.ersNumber) == ("PROCESSED", "createErs", "9000943761")
    assert answer.errors is None


def test_a_processing_error_with_an_error_list_parses():
    refusal = (
        "Отсутствует заключенный договор с ТОФ на оказание услуг: ИНН=6658021402, ОГРН=1026602336727, "
        "КПП= от 31.12.2021 № 14"
    )
    reply = _reply(
        f'<e:getResultByIdResponse xmlns:e="{ERS}"><e:requestId>6b8620ef</e:requestId>'
        "<e:status>PROCESSING_ERROR</e:status><e:message>Запрос обработан с ошибками</e:message>"
        f"<e:errorCode>1204</e:errorCode><e:errorText>{refusal}</e:errorText>"
        f"<e:errors><e:error><e:code>1204</e:code><e:message>{refusal}</e:message></e:error>"
        "<e:error><e:code>E_SNILS</e:code><e:message>СНИЛС не прошёл проверку</e:message></e:error></e:errors>"
        "<e:requestType>putTicket1</e:requestType></e:getResultByIdResponse>"
    )
    _schema().assertValid(etree.fromstring(reply)[0][0])
    client = zeep.Client(str(WSDL), transport=_Canned(reply))
    answer = client.service.getResultById(**{**_samples()["getResultById"], "requestType": "putTicket1"})
    assert answer.status == "PROCESSING_ERROR"
    assert (answer.errorCode, answer.errorText) == ("1204", refusal)
    assert [(error.code, error.message) for error in answer.errors.error] == [
        ("1204", refusal),
        ("E_SNILS", "СНИЛС не прошёл проверку"),
    ]


def test_get_ers_data_answers_at_once_with_the_certificates_found():
    reply = _reply(
        f'<getErsDataResponse xmlns="{ERS}"><requestId>r-1</requestId><status>PROCESSED</status>'
        "<ersData><ersNumber>9000943761</ersNumber><ersStatus>ACTIVE</ersStatus>"
        "<registerDate>2021-03-05</registerDate><orgName>ГАУЗ СО «ЦГКБ №24»</orgName><ogrn>1026602336727</ogrn>"
        "<tickets><storage><ersNumber>9000943761</ersNumber><ticketType>1</ticketType>"
        "<ticketStatus>ACCEPTED</ticketStatus></storage></tickets></ersData></getErsDataResponse>"
    )
    _schema().assertValid(etree.fromstring(reply)[0][0])
    client = zeep.Client(str(WSDL), transport=_Canned(reply))
    answer = client.service.getErsData(**{**_common(), "params": _f().GetErsDataParams(snils="15135820937")})
    assert answer.status == "PROCESSED"
    [ers] = answer.ersData
    assert (ers.ersNumber, ers.orgName, ers.tickets.storage[0].ticketType) == (
        "9000943761",
        "ГАУЗ СО «ЦГКБ №24»",
        "1",
    )
