"""The linker's state in faust tables, written back once per key per batch.

The linker reads and writes its store many times per event (local record map, blocking
keys, profiles). Writing a table key sends a changelog record, and on the embedded broker
each record is a produce request; so writes go to a cache and ``flush`` writes each touched
key once, with the current event set so the changelog stays on the source partition.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from services.identity.linkage import Profile

_MISSING = object()
# A blocking key shared by this many people no longer narrows anything down, and its table
# value (~40 bytes a member) must stay under Kafka's 1 MB record limit: stop growing it.
MAX_BLOCK_MEMBERS = 5000


class TableStore:
    """An ``IdentityStore`` over three faust tables (or any mutable mappings, in tests)."""

    def __init__(self, local: MutableMapping[str, Any], blocks: MutableMapping[str, Any],
                 profiles: MutableMapping[str, Any]) -> None:
        self._tables = {"local": local, "blocks": blocks, "profiles": profiles}
        self._dirty: dict[tuple[str, str], Any] = {}
        self.full_blocks = 0  # additions refused because a block was full

    def _get(self, table: str, key: str) -> Any:
        value = self._dirty.get((table, key), _MISSING)
        if value is _MISSING:
            value = self._tables[table].get(key)
        return value

    def local_person(self, org: str, local_id: str) -> str | None:
        value = self._get("local", f"{org}/{local_id}")
        return str(value) if value else None

    def set_local_person(self, org: str, local_id: str, person_id: str) -> None:
        self._dirty[("local", f"{org}/{local_id}")] = person_id

    def block(self, key: str) -> list[str]:
        return list(self._get("blocks", key) or ())

    def add_to_block(self, key: str, person_id: str) -> None:
        members = self.block(key)
        if person_id in members:
            return
        if len(members) >= MAX_BLOCK_MEMBERS:
            self.full_blocks += 1
            return
        members.append(person_id)
        self._dirty[("blocks", key)] = members

    def profile(self, person_id: str) -> Profile | None:
        value = self._get("profiles", person_id)
        if value is None:
            return None
        return value if isinstance(value, Profile) else Profile.from_bytes(value)

    def set_profile(self, person_id: str, profile: Profile) -> None:
        self._dirty[("profiles", person_id)] = profile

    def flush(self) -> int:
        """Write every touched key once; returns how many keys were written."""
        for (table, key), value in self._dirty.items():
            self._tables[table][key] = value.to_bytes() if isinstance(value, Profile) else value
        n = len(self._dirty)
        self._dirty.clear()
        return n

    @property
    def pending(self) -> int:
        return len(self._dirty)
