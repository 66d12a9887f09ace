"""Folders of the ТФОМС file exchange: config TFOMS_DIR (PORTAL_TFOMS_DIR), by default
<instance>/tfoms; tests give each app its own temporary folder.

    <tfoms>/ident/      request files of identification packages (deleted with the answer)
    <tfoms>/inbox/      answers dropped here are processed by the jobs (setting tfoms.inbox_dir)
    <tfoms>/outbox/     files the jobs prepared for ТФОМС (attachment files)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import current_app

from portal.admin.services import get_setting


def _base() -> Path:
    return Path(current_app.config.get("TFOMS_DIR") or Path(current_app.instance_path, "tfoms"))


def tfoms_dir(*parts: str) -> Path:
    """A folder under the ТФОМС folder, created on first use."""
    path = _base().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def inbox_dir() -> Path:
    """Where answers from ТФОМС arrive; a relative setting is taken from the ТФОМС folder."""
    path = Path(get_setting("tfoms.inbox_dir") or "inbox")
    if not path.is_absolute():
        path = _base() / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def max_upload_bytes() -> int:
    """The largest answer file («Загрузить»: a DBF or an OSHIB_PR) the upload views accept."""
    return int(current_app.config.get("TFOMS_MAX_UPLOAD_BYTES") or 50 * 1024 * 1024)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder and rename: a reader never sees half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
