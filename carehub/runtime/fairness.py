"""Per-sender limits at the doors, so that one provider's flood does not queue everyone else's.

Each door serves every connection (MLLP) or request (FHIR) in a task of its own, so a facility
that opens ten connections, or sends a hundred Bundles at once, would have ten or a hundred
writes to the broker in flight beside another provider's one, and that provider's messages would
wait behind them. :class:`InFlight` bounds the writes in flight per sender: the MLLP door makes
the sender's next message wait for a slot (back pressure: the ACK comes later, and a sender waits
for its ACK before it sends the next message on that connection); the FHIR door refuses a Bundle
over the limit at once with 429 and Retry-After, a clear answer the sender retries.

Senders are named by what the door knows of them (MLLP: MSH-4, the sending facility; FHIR: the
authenticated organisation). Entries exist only while a sender has writes in flight or waiting,
so a stream of made-up facility names cannot grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class _Sender:
    semaphore: asyncio.Semaphore
    users: int = 0  # holding or waiting for a slot
    held: int = 0   # holding one


@dataclass
class InFlight:
    """At most ``per_sender`` writes in flight for each sender."""

    per_sender: int
    _senders: dict[str, _Sender] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.per_sender < 1:
            raise ValueError(f"per_sender must be at least 1, got {self.per_sender}")

    def full(self, sender: str) -> bool:
        """True when ``sender`` has every slot in use (its next :meth:`slot` would wait)."""
        entry = self._senders.get(sender)
        return entry is not None and entry.semaphore.locked()

    def in_flight(self, sender: str) -> int:
        entry = self._senders.get(sender)
        return 0 if entry is None else entry.held

    @contextlib.asynccontextmanager
    async def slot(self, sender: str) -> AsyncIterator[None]:
        """Hold one of ``sender``'s slots for the block, waiting for one if all are in use."""
        entry = self._senders.get(sender)
        if entry is None:
            entry = self._senders[sender] = _Sender(asyncio.Semaphore(self.per_sender))
        entry.users += 1
        try:
            async with entry.semaphore:
                entry.held += 1
                try:
                    yield
                finally:
                    entry.held -= 1
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._senders[sender]

    def __len__(self) -> int:
        """Senders with writes in flight or waiting."""
        return len(self._senders)
