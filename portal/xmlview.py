"""XML made readable on a page: indented, with long base64 values (signatures, certificates,
encrypted keys) shortened unless asked for in full; a text that does not parse is shown as it came.
Used by the registries' «+» / arrow views (ИЭМК documents, ЭРС requests)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

SHORT_VALUE = 100  # base64 values longer than this are shortened
SHORT_KEEP = 40  # characters of a shortened value that stay visible

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


@dataclass
class ReadableXml:
    text: str  # indented, long base64 values shortened unless asked for in full
    shortened: int  # how many values were shortened (0: the text is complete)
    parsed: bool  # False: not XML, shown as it came


def _shorten(value: str | None) -> tuple[str | None, bool]:
    if value is None or len(value) <= SHORT_VALUE:
        return value, False
    compact = "".join(value.split())
    if len(compact) <= SHORT_VALUE or not _BASE64.fullmatch(value):
        return value, False
    return f"{compact[:SHORT_KEEP]}… (ещё {len(compact) - SHORT_KEEP} символов)", True


def readable_xml(xml: str | bytes | None, *, full: bool = False) -> ReadableXml | None:
    """An envelope indented for reading; signatures and certificates (long base64 values)
    shortened unless `full`; as it came when it does not parse; None when there is none."""
    if not xml:
        return None
    raw = xml.encode("utf-8") if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError:
        return ReadableXml(raw.decode("utf-8", errors="replace"), 0, False)
    shortened = 0
    if not full:
        for node in root.iter():
            if not isinstance(node.tag, str):
                continue
            node.text, cut = _shorten(node.text)
            shortened += cut
            for name, value in node.attrib.items():
                short, cut = _shorten(value)
                if cut:
                    node.set(name, short)
                    shortened += 1
    return ReadableXml(etree.tostring(root, pretty_print=True, encoding="unicode"), shortened, True)


def pretty_xml(xml: str | bytes | None) -> str:
    """The whole text indented for reading ("" when there is none)."""
    view = readable_xml(xml, full=True)
    return view.text if view else ""
