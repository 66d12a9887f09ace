"""PDF reports shared by every feature: an HTML template rendered by WeasyPrint into A4 pages.

A report template extends `reports/base.html` (page CSS, header with the portal's name, the
title, when and by whom it was printed, «Стр. N из M»). `render_pdf` answers with the PDF shown
inline in the browser. In tests, `?format=html` returns the HTML that would go into the PDF,
so a test can read the report's text without a PDF text extractor.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, render_template, request
from flask_login import current_user

from portal.models_base import utcnow

PORTAL_NAME = "Акушерский мониторинг — портал интеграции"

# fmt: off
_TRANSLIT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "iu", "я": "ia",
}
# fmt: on


def ascii_filename(name: str, default: str = "report.pdf") -> str:
    """A file name any browser accepts in `filename=`: Russian letters transliterated, the rest `_`."""
    out = []
    for char in name:
        lower = char.lower()
        if lower in _TRANSLIT:
            latin = _TRANSLIT[lower]
            out.append(latin.capitalize() if char != lower else latin)
        else:
            out.append(unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii"))
    simple = re.sub(r"[^A-Za-z0-9._-]+", "_", "".join(out)).strip("._")
    return simple or default


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """`inline; filename="ascii"; filename*=UTF-8''…`: the UTF-8 name wins where it is understood."""
    fallback = ascii_filename(filename)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def _data_only_fetcher() -> Any:
    """Reports carry everything inline: WeasyPrint must not reach the network or the disk."""
    try:
        from weasyprint.urls import URLFetcher  # WeasyPrint 67+
    except ImportError:

        def refuse(url: str, *args: Any, **kwargs: Any) -> dict:
            if url.startswith("data:"):
                from weasyprint.urls import default_url_fetcher

                return default_url_fetcher(url, *args, **kwargs)
            raise ValueError(f"external resource refused in a report: {url[:80]}")

        return refuse
    return URLFetcher(allowed_protocols={"data"})


def render_html(template: str, *, title: str, **context: Any) -> str:
    """The report's HTML, with what `reports/base.html` shows in its header."""
    user = current_user if current_user and current_user.is_authenticated else None
    return render_template(
        template, title=title, portal_name=PORTAL_NAME, printed_at=utcnow(), printed_by=user, **context
    )


def render_pdf(template: str, *, title: str, filename: str, **context: Any) -> Response:
    """Render `templates/<template>` (extending reports/base.html) as an inline PDF response."""
    html = render_html(template, title=title, **context)
    if current_app.testing and request.args.get("format") == "html":
        return Response(html, mimetype="text/html")
    from weasyprint import HTML  # imported here: loading Pango costs time no other page needs

    pdf = HTML(string=html, url_fetcher=_data_only_fetcher()).write_pdf()
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = content_disposition(filename)
    response.headers["Cache-Control"] = "no-store"
    return response
