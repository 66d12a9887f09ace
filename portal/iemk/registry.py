"""Queries behind «Документы ИЭМК» (SPEC I-8, I-9): filters, keyset pages, counts per status,
the documents of one patient, and the CDA made readable.

Every query is bounded by the user's МО (`scoped`) and the period, and rides an index of
`iemk_document`: pages go down (mo_id, event_at, id) — or (event_at, id) for ЦОД over all МО —
with a keyset cursor; the counts are one GROUP BY over (mo_id, status, event_at).
A document of another МО is 404, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import abort
from lxml import etree
from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import defer, joinedload

from portal.auth.scoping import scoped
from portal.clinical.models import Mo, Patient
from portal.extensions import db
from portal.filters import (  # noqa: F401  (FilterError: routes)
    FilterError,
    KeysetPage,
    filter_date,
    filter_mo,
    filter_period,
    newest_first,
    parse_cursor,
    parse_id,
    patient_match,
)
from portal.iemk import models as m

DEFAULT_DAYS = 30  # the period by default: the last 30 days
MAX_PATIENT_QUERY = 100
PATIENT_IDS_LIMIT = 500  # «Пациент» matching more patients than this becomes a subquery
PRINT_LIMIT = 1000  # rows of a printed list
PATIENT_LIMIT = 200  # documents shown on the patient page
POLL_LIMIT = 200  # documents one status refresh asks about


@dataclass
class DocumentFilters:
    """The page's filters as the URL carries them: mo, from, to, kind, status, patient.

    The МО is forced to the user's own unless they are central (ЦОД)."""

    mo_id: int | None
    date_from: date
    date_to: date
    kind: str | None = None
    status: str | None = None
    patient: str = ""
    own_mo: bool = False  # the МО is the user's own, not chosen: the URL does not carry it

    @classmethod
    def parse(cls, args: Mapping[str, str], user: Any, today: date | None = None) -> DocumentFilters:
        today = today or date.today()
        mo_id = filter_mo(args, user)
        date_from, date_to = filter_period(args, today, DEFAULT_DAYS)
        kind = (args.get("kind") or "").strip() or None
        if kind is not None and kind not in m.KINDS:
            raise FilterError(f"Неизвестный вид документа «{kind}».")
        status = (args.get("status") or "").strip() or None
        if status is not None and status not in m.STATUSES:
            raise FilterError(f"Неизвестный статус «{status}».")
        patient = (args.get("patient") or "").strip()[:MAX_PATIENT_QUERY]
        return cls(mo_id, date_from, date_to, kind, status, patient, own_mo=not user.is_central)

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The filters as URL arguments (links, hidden inputs, redirects)."""
        values: dict[str, Any] = {
            "mo": None if self.own_mo else self.mo_id,
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "kind": self.kind,
            "status": self.status,
            "patient": self.patient,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}

    def described(self, user: Any) -> list[tuple[str, str]]:
        """The filters in words, for the printed list's header."""
        lines = [("Период", f"{self.date_from:%d.%m.%Y} – {self.date_to:%d.%m.%Y}")]
        mo = db.session.get(Mo, self.mo_id) if self.mo_id else None
        lines.append(("МО", mo.short_name if mo else "Все МО"))
        if self.kind:
            lines.append(("Вид документа", m.KINDS[self.kind].title))
        if self.status:
            lines.append(("Статус", m.STATUSES[self.status]))
        if self.patient:
            lines.append(("Пациент", self.patient))
        return lines


def _patient_condition(text: str, mo_id: int | None) -> Any:
    """«Пациент»: a СНИЛС (or its first digits), else prefixes of surname, name, patronymic."""
    doc = m.IemkDocument
    where = patient_match(text)
    if where is None:
        return doc.patient_id.is_(None)
    if mo_id is not None:
        where.append(Patient.mo_id == mo_id)
    ids = db.session.scalars(select(Patient.id).where(*where).limit(PATIENT_IDS_LIMIT + 1)).all()
    if len(ids) <= PATIENT_IDS_LIMIT:
        return doc.patient_id.in_(ids)
    return doc.patient_id.in_(select(Patient.id).where(*where))


def _filtered(stmt: Any, filters: DocumentFilters, user: Any, *, with_status: bool = True) -> Any:
    doc = m.IemkDocument
    stmt = scoped(stmt, doc.mo_id, user).where(
        doc.event_at >= datetime.combine(filters.date_from, time.min),
        doc.event_at < datetime.combine(filters.date_to + timedelta(days=1), time.min),
    )
    if filters.mo_id is not None:
        stmt = stmt.where(doc.mo_id == filters.mo_id)
    if filters.kind is not None:
        stmt = stmt.where(doc.kind == filters.kind)
    if with_status and filters.status is not None:
        stmt = stmt.where(doc.status == filters.status)
    if filters.patient:
        stmt = stmt.where(_patient_condition(filters.patient, filters.mo_id))
    return stmt


def _listed() -> Any:
    """Documents with the names a row shows, without the CDA and signature (read on «+» only)."""
    doc = m.IemkDocument
    return select(doc).options(
        joinedload(doc.patient),
        joinedload(doc.department),
        joinedload(doc.doctor),
        joinedload(doc.mo),
        defer(doc.xml),
        defer(doc.signature),
    )


def document_page(
    filters: DocumentFilters, user: Any, after: tuple[datetime, int] | None = None, limit: int = 50
) -> KeysetPage:
    """One page of documents, newest event first."""
    doc = m.IemkDocument
    stmt = _filtered(_listed(), filters, user)
    return newest_first(stmt, doc.event_at, doc.id, after, limit)


def status_counts(filters: DocumentFilters, user: Any) -> dict[str, int]:
    """Documents per status under the filters, the status filter aside (one GROUP BY)."""
    doc = m.IemkDocument
    stmt = _filtered(select(doc.status, func.count()), filters, user, with_status=False).group_by(doc.status)
    counts = {code: 0 for code in m.STATUSES}
    counts.update({status: int(count) for status, count in db.session.execute(stmt)})
    return counts


def get_document(doc_id: int, user: Any) -> m.IemkDocument:
    """One document the user may see; absent or of another МО is 404."""
    doc = db.session.scalar(
        scoped(select(m.IemkDocument), m.IemkDocument.mo_id, user).where(m.IemkDocument.id == doc_id)
    )
    if doc is None:
        abort(404, description="Документ не найден.")
    return doc


def load_scoped(ids: list[int], user: Any) -> list[m.IemkDocument]:
    """Documents chosen for an action or a refresh, in the order asked; FilterError 404 if any
    is absent or of another МО (nothing is done then)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    found = {
        doc.id: doc
        for doc in db.session.scalars(
            scoped(_listed(), m.IemkDocument.mo_id, user).where(m.IemkDocument.id.in_(wanted))
        )
    }
    if len(found) != len(wanted):
        raise FilterError("Некоторые из выбранных документов не найдены. Обновите страницу.", 404)
    return [found[i] for i in wanted]


def parse_ids(raw: list[str], limit: int) -> list[int]:
    if len(raw) > limit:
        raise FilterError(f"За один раз можно обработать не более {limit} документов.")
    return [parse_id(v, "Некорректный список документов.") for v in raw]


def patient_documents(patient: Patient, user: Any, limit: int = PATIENT_LIMIT) -> list[m.IemkDocument]:
    """The patient's documents, newest first (the patient is already checked for the user's МО)."""
    doc = m.IemkDocument
    stmt = scoped(_listed(), doc.mo_id, user).where(doc.patient_id == patient.id)
    return list(db.session.scalars(stmt.order_by(doc.event_at.desc(), doc.id.desc()).limit(limit)))


def unsigned_of_patient(patient: Patient, user: Any) -> list[m.IemkDocument]:
    """«Получить и подписать документы» with nothing ticked: the patient's unsigned documents."""
    doc = m.IemkDocument
    stmt = scoped(_listed(), doc.mo_id, user).where(doc.patient_id == patient.id, doc.status == m.UNSIGNED)
    return list(db.session.scalars(stmt.order_by(doc.event_at, doc.id)))


# --- the CDA made readable ------------------------------------------------------------------------

HL7 = "urn:hl7-org:v3"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)
# CDA narrative block (section/text) → HTML; anything else keeps only its text.
_NARRATIVE = {
    "table": "table",
    "thead": "thead",
    "tbody": "tbody",
    "tfoot": "tfoot",
    "tr": "tr",
    "td": "td",
    "th": "th",
    "caption": "caption",
    "paragraph": "p",
    "list": "ul",
    "item": "li",
    "br": "br",
    "content": "span",
    "sub": "sub",
    "sup": "sup",
}
_SPANS = ("colspan", "rowspan")


def _local(node: Any) -> str:
    return etree.QName(node).localname if isinstance(node.tag, str) else ""


def _narrative(node: Any) -> Markup:
    parts: list[str] = [str(escape(node.text or ""))]
    for child in node:
        if not isinstance(child.tag, str):
            parts.append(str(escape(child.tail or "")))
            continue
        tag = _NARRATIVE.get(_local(child))
        inner = _narrative(child)
        if tag == "br":
            parts.append("<br>")
        elif tag:
            attrs = "".join(
                f' {name}="{escape(child.get(name))}"'
                for name in _SPANS
                if tag in ("td", "th") and (child.get(name) or "").isdigit()
            )
            parts.append(f"<{tag}{attrs}>{inner}</{tag}>")
        else:
            parts.append(str(inner))
        parts.append(str(escape(child.tail or "")))
    return Markup("".join(parts))


def _name(node: Any) -> str:
    if node is None:
        return ""
    words = [(p.text or "").strip() for p in node if _local(p) in ("family", "given", "prefix")]
    return " ".join(w for w in words if w) or " ".join(node.itertext()).strip()


def _cda_time(value: str | None) -> str:
    if not value or len(value) < 8 or not value[:8].isdigit():
        return value or ""
    shown = f"{value[6:8]}.{value[4:6]}.{value[0:4]}"
    if len(value) >= 12 and value[8:12].isdigit():
        shown += f" {value[8:10]}:{value[10:12]}"
    return shown


@dataclass
class CdaSection:
    title: str
    body: Markup


@dataclass
class CdaView:
    """What a reader sees of a CDA document: heading facts and the sections' narrative."""

    title: str
    facts: list[tuple[str, str]]
    sections: list[CdaSection]
    pretty: str


def readable_cda(xml: str | bytes | None) -> CdaView | None:
    """A CDA document's title, facts and sections as safe HTML; None when it is not CDA."""
    if not xml:
        return None
    raw = xml.encode("utf-8") if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError:
        return None
    if _local(root) != "ClinicalDocument":
        return None
    ns = {"h": HL7}

    def first(path: str) -> Any:
        found = root.xpath(path, namespaces=ns)
        return found[0] if found else None

    title = first("h:title")
    facts: list[tuple[str, str]] = []
    effective = first("h:effectiveTime")
    if effective is not None:
        facts.append(("Дата документа", _cda_time(effective.get("value"))))
    patient = first("h:recordTarget/h:patientRole/h:patient/h:name")
    if patient is not None:
        facts.append(("Пациент", _name(patient)))
    author = first("h:author/h:assignedAuthor/h:assignedPerson/h:name")
    if author is not None:
        facts.append(("Автор", _name(author)))
    custodian = first("h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:name")
    if custodian is not None:
        facts.append(("Организация", (custodian.text or "").strip()))
    sections = []
    for section in root.xpath("h:component/h:structuredBody//h:section", namespaces=ns):
        heading = section.find(f"{{{HL7}}}title")
        text = section.find(f"{{{HL7}}}text")
        sections.append(
            CdaSection(
                (heading.text or "").strip() if heading is not None else "",
                _narrative(text) if text is not None else Markup(""),
            )
        )
    return CdaView(
        (title.text or "").strip() if title is not None else "",
        [(k, v) for k, v in facts if v],
        sections,
        etree.tostring(root, pretty_print=True, encoding="unicode"),
    )
