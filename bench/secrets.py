"""Credentials never leave the process: masking for everything the harness writes or prints.

A password may reach the harness in a storage URL (``postgresql://user:PASSWORD@host/db``), and
an API key through the environment (``WANDB_API_KEY``). Everything that records or prints a URL
or a command line passes it through :func:`mask_text` first; :func:`scrub_argv` masks this
process's ``sys.argv`` itself, so libraries that record it (W&B's run metadata) see the masked
form. A password on a command line is still visible to ``ps`` on that node: the README's way
for clusters is ``BENCH_STORAGE``/``--storage-file`` or PostgreSQL's own ``PGPASSWORD``,
``~/.pgpass`` and service files (libpq reads them when the URL has no password).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from bench.errors import ConfigError

MASK = "***"
STORAGE_ENV = "BENCH_STORAGE"
# environment variables whose values are secrets wherever they appear
SECRET_ENV = ("WANDB_API_KEY", "PGPASSWORD", "BENCH_PG_PASSWORD", "POSTGRES_PASSWORD")
# scheme://user:password@  (the password is everything up to the last @ before the host)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")
# libpq's keyword form and URL query parameters: password=..., sslpassword=...
_PARAM = re.compile(r"(?P<head>\b(?:ssl)?password=)(?P<password>[^&\s]+)", re.I)


def mask_text(text: str | None) -> str | None:
    """``text`` with every URL password, ``password=`` parameter and secret env value masked."""
    if text is None:
        return None
    text = _USERINFO.sub(lambda m: m["head"] + MASK, str(text))
    text = _PARAM.sub(lambda m: m["head"] + MASK, text)
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    return text


def scrub_argv() -> None:
    """Mask this process's ``sys.argv`` in place (after the parser has read it)."""
    sys.argv[:] = [mask_text(a) for a in sys.argv]


def storage_url(flag: str | None, file: str | None = None) -> str | None:
    """The storage URL from ``--storage``, else ``--storage-file`` (its first line), else the
    ``BENCH_STORAGE`` environment variable; ``None`` means the default journal."""
    if flag and file:
        raise ConfigError("give --storage or --storage-file, not both")
    if file:
        try:
            lines = Path(file).expanduser().read_text().strip().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read --storage-file {file}: {exc.strerror or exc}") from None
        if not lines or not lines[0].strip():
            raise ConfigError(f"--storage-file {file} is empty: write the storage URL on its first line")
        return lines[0].strip()
    return flag or os.environ.get(STORAGE_ENV) or None
