"""How a failed HTTP request to an outside system reads to the delivery mechanism.

Every SOAP client (ВИМИС, ИЭМК …) wraps its call in `connection_errors`: a request that never
reached the system is a TransientError (retry later), one that left without an answer is an
UnknownOutcome (ask before sending again). What the system answered stays for the client to judge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import requests
from lxml import etree
from zeep.exceptions import TransportError
from zeep.transports import Transport

from portal.exchange.delivery import TransientError, UnknownOutcome

_NEVER_CONNECTED = (
    "NewConnectionError",
    "Connection refused",
    "Failed to establish",
    "Name or service not known",
    "ConnectTimeout",
)


def never_connected(error: requests.exceptions.ConnectionError) -> bool:
    """The request did not leave: refused, no route, unknown host."""
    text = repr(error)
    return any(mark in text for mark in _NEVER_CONNECTED)


def reason(error: Exception) -> str:
    text = str(error)
    return "соединение отклонено" if "Connection refused" in text else text[:300]


@contextlib.contextmanager
def connection_errors(system: str, timeout: float) -> Iterator[None]:
    """Translate requests' connection failures of one call to `system` («ВИМИС», «ИЭМК»)."""
    try:
        yield
    except requests.exceptions.ConnectTimeout as error:
        raise TransientError(f"{system} недоступен: нет соединения за {timeout:g} с") from error
    except requests.exceptions.ReadTimeout as error:
        raise UnknownOutcome(f"{system} не ответил за {timeout:g} с") from error
    except requests.exceptions.ConnectionError as error:
        if never_connected(error):
            raise TransientError(f"{system} недоступен: {reason(error)}") from error
        raise UnknownOutcome(f"соединение с {system} прервано: {reason(error)}") from error


class NotSoap(Exception):
    """A 2xx answer without a SOAP envelope (a login page, a proxy's notice)."""

    def __init__(self, content: bytes) -> None:
        text = " ".join(content[:200].decode("utf-8", "replace").split())
        super().__init__(f"«{text}»" if text else "пустой ответ")
        self.content = content


class SoapTransport(Transport):
    """zeep's transport, but an answer without a SOAP envelope is named by what it is: an HTTP
    error (503 of a proxy) a TransportError with its status, anything else NotSoap."""

    def post_xml(self, address: str, envelope: etree._Element, headers: dict[str, str]) -> requests.Response:
        response = super().post_xml(address, envelope, headers)
        if b"Envelope" not in response.content[:2000]:
            if response.status_code >= 400:
                raise TransportError(f"HTTP {response.status_code}", response.status_code, response.content)
            raise NotSoap(response.content)
        return response


def soap_transport(endpoint: str, timeout: float) -> SoapTransport:
    """A transport with the environment's proxies and CA bundle read once, not on every request
    (≈1 ms each)."""
    session = requests.Session()
    found = session.merge_environment_settings(endpoint, {}, None, None, None)
    session.proxies, session.verify, session.trust_env = found["proxies"], found["verify"], False
    return SoapTransport(session=session, timeout=timeout, operation_timeout=timeout)


def plain(value: Any) -> Any:
    """zeep objects → plain dicts and lists (for callers and JSON)."""
    from zeep.helpers import serialize_object

    value = serialize_object(value, dict)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
