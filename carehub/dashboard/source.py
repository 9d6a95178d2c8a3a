"""The page's figures, read from the gateway with the practice's certificate and kept for a few seconds.

Each page load needs every section's read; a reload within ``cache_s`` seconds is served from
the last reads, so that a page reloaded in a burst (or by several people) does not become a
burst of gateway calls. Concurrent loads share one round of reads. A failed read is not
cached, and never hidden behind older figures: the caller gets the error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from carehub.dashboard.sections import Section
from carehub.partner import PartnerClient, PartnerError

log = logging.getLogger(__name__)


def org_of_certificate(path: Path) -> str:
    """The organisation code a client certificate names: its subject common name (as the gateway reads it)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise PartnerError(f"client certificate file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise PartnerError(f"cannot read the client certificate {path}: {exc}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if len(names) == 1 else None
    if not isinstance(value, str) or not value:
        raise PartnerError(f"the client certificate {path} has no single common name (the organisation code)")
    return value


@dataclass(frozen=True)
class Snapshot:
    """What each section read, by section id, and when."""

    read_at: datetime
    data: dict[str, Any]
    seconds: float  # how long the reads took


class GatewaySource:
    """Every section's read through one client (one channel), cached for ``cache_s`` seconds."""

    def __init__(self, client: PartnerClient, sections: Sequence[Section[Any]], cache_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.sections = tuple(sections)
        self.cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, Snapshot] | None = None
        self.reads = 0  # rounds of gateway reads made

    def snapshot(self) -> Snapshot:
        """The sections' data, read now or within the last ``cache_s`` seconds; PartnerError when a read fails."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self.cache_s:
                return self._last[1]
            started = time.perf_counter()
            data = {section.id: section.read(self.client) for section in self.sections}
            snapshot = Snapshot(read_at=datetime.now(UTC), data=data, seconds=time.perf_counter() - started)
            self.reads += 1
            log.info("read %d sections from the gateway in %.2f s", len(data), snapshot.seconds)
            self._last = (self._clock(), snapshot)
            return snapshot

    def close(self) -> None:
        self.client.close()
