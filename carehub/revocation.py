"""Client certificates an operator has revoked: a deny list both TLS doors check on every call.

The CA still vouches for a revoked certificate until it expires, so the handshake succeeds; the
gateway and the FHIR endpoint then refuse the caller (PERMISSION_DENIED / 403). The list is a
file named by ``CAREHUB_REVOKED_CERTIFICATES``: one SHA-256 fingerprint of a certificate (DER) per
line, hex with or without colons, ``#`` comments allowed, e.g. the output of
``openssl x509 -in partner.pem -noout -fingerprint -sha256``. It is read again whenever the file
changes, so revoking needs no restart. A line that is not a fingerprint stops the service at start
(and, later, keeps the previous list in force and is logged), naming the file and the line.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from pathlib import Path

log = logging.getLogger(__name__)
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class RevocationListError(ValueError):
    """The deny list cannot be read: the file and the line are named."""


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes | str) -> str:
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(text.strip() + "\n"))


def parse(text: str, source: str) -> frozenset[str]:
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if "=" in entry:  # openssl's "sha256 Fingerprint=AB:CD:..."
            entry = entry.split("=", 1)[1]
        entry = entry.replace(":", "").lower()
        if not entry:
            continue
        if not FINGERPRINT.match(entry):
            raise RevocationListError(f"{source}:{number}: not a SHA-256 certificate fingerprint (64 hex digits)")
        found.add(entry)
    return frozenset(found)


class RevocationList:
    """The deny list in ``path`` (None: nothing revoked), re-read when the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._revoked: frozenset[str] = frozenset()
        if path is not None:
            if not path.is_file():
                raise RevocationListError(f"CAREHUB_REVOKED_CERTIFICATES={path}: no such file")
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        stat = self.path.stat()
        self._revoked = parse(self.path.read_text(), str(self.path))
        self._stamp = (stat.st_mtime_ns, stat.st_size)

    def __len__(self) -> int:
        return len(self._revoked)

    def revoked(self, fingerprint: str) -> bool:
        if self.path is not None:
            try:
                stat = self.path.stat()
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    self._load()
            except (OSError, RevocationListError) as exc:  # keep the last good list in force
                log.error("revocation list not re-read, the previous one stays in force: %s", exc)
        return fingerprint in self._revoked
