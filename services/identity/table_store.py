"""The linker's state in faust tables, written back once per key per batch.

The linker reads and writes its store many times per event (local record map, blocking
keys, profiles). Writing a table key sends a changelog record, and on the embedded broker
each record is a produce request; so writes go to a cache and ``flush`` writes each touched
key once, with the current event set so the changelog stays on the source partition.

Besides what the linker needs (``IdentityStore``) it keeps what merges need: the local
records of each person, redirects from merged-away persons to the person they joined, and
one record per merge so that it can be undone; and, for the known-record fast path, each local
record's demographics fingerprint as last remembered (``linkage.demographics_fingerprint``),
beside its person in the local table.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from carehub.runtime.stage import ValueCodec

from .linkage import Profile

# the profiles table's values as the changelog carries them (StageRuntime.table(codec=...))
PROFILE_CODEC: ValueCodec[Profile] = ValueCodec(Profile.to_bytes, Profile.from_bytes)

_MISSING = object()
# A blocking key shared by this many people no longer narrows anything down, and its table
# value (~40 bytes a member) must stay under Kafka's 1 MB record limit: stop growing it.
MAX_BLOCK_MEMBERS = 5000
MAX_REDIRECTS = 32  # merge chains are short; a longer one means a cycle

TABLES = ("local", "blocks", "profiles", "members", "redirects", "merges")
FINGERPRINT_SEP = " "  # person ids are UUIDs, without spaces


class TableStore:
    """An ``IdentityStore`` over faust tables (or any mutable mappings, in tests)."""

    def __init__(self, tables: dict[str, MutableMapping[str, Any]]) -> None:
        missing = set(TABLES) - set(tables)
        if missing:
            raise ValueError(f"missing tables: {sorted(missing)}")
        self._tables = tables
        self._dirty: dict[tuple[str, str], Any] = {}
        self.full_blocks = 0  # additions refused because a block was full

    def _get(self, table: str, key: str) -> Any:
        value = self._dirty.get((table, key), _MISSING)
        if value is _MISSING:
            value = self._tables[table].get(key)
        return value

    def _set(self, table: str, key: str, value: Any) -> None:
        self._dirty[(table, key)] = value

    # -- IdentityStore ---------------------------------------------------------------------

    def local_person(self, org: str, local_id: str) -> str | None:
        value = self._get("local", f"{org}/{local_id}")
        return str(value).partition(FINGERPRINT_SEP)[0] if value else None

    def set_local_person(self, org: str, local_id: str, person_id: str) -> None:
        """Map the record to ``person_id``; a record that moves (a merge or its undoing) loses its
        fingerprint, so that its next event remembers it under its new person."""
        record = f"{org}/{local_id}"
        previous = self.local_person(org, local_id)
        if previous == person_id:
            return
        self._set("local", record, person_id)
        if previous is not None:
            self._set("members", previous, [r for r in self.members(previous) if r != record])
        self._set("members", person_id, [*self.members(person_id), record])

    def block(self, key: str) -> list[str]:
        """The people under a blocking key, merged-away persons replaced by whom they joined."""
        out: list[str] = []
        for person_id in self._get("blocks", key) or ():
            resolved = self.resolve(person_id)
            if resolved not in out:
                out.append(resolved)
        return out

    def add_to_block(self, key: str, person_id: str) -> None:
        members = list(self._get("blocks", key) or ())
        if person_id in members:
            return
        if len(members) >= MAX_BLOCK_MEMBERS:
            self.full_blocks += 1
            return
        members.append(person_id)
        self._set("blocks", key, members)

    def profile(self, person_id: str) -> Profile | None:
        """The person's profile. The service's table holds profiles decoded (``PROFILE_CODEC``): a
        candidate search reads dozens per record, and decoding each cost more than the scoring."""
        value = self._get("profiles", person_id)
        return Profile.from_bytes(value) if isinstance(value, bytes) else value

    def set_profile(self, person_id: str, profile: Profile) -> None:
        self._set("profiles", person_id, profile)

    # -- the known-record fast path --------------------------------------------------------

    # The fingerprint rides in the record's row of the local table ("person_id fingerprint-hex"), so
    # remembering a record writes that one row, not a row of another table as well; a row without
    # one (written before fingerprints, or moved since) reads as None.

    def fingerprint(self, org: str, local_id: str) -> bytes | None:
        """The record's demographics fingerprint when it was last remembered; None when unknown."""
        value = self._get("local", f"{org}/{local_id}")
        fingerprint = str(value).partition(FINGERPRINT_SEP)[2] if value else ""
        return bytes.fromhex(fingerprint) if fingerprint else None

    def set_fingerprint(self, org: str, local_id: str, fingerprint: bytes) -> None:
        """Note the fingerprint of a record already mapped to its person (``set_local_person``)."""
        person_id = self.local_person(org, local_id)
        if person_id is None:
            raise KeyError(f"{org}/{local_id}: no person to note a fingerprint for")
        self._set("local", f"{org}/{local_id}", f"{person_id}{FINGERPRINT_SEP}{fingerprint.hex()}")

    # -- for merges ------------------------------------------------------------------------

    def members(self, person_id: str) -> list[str]:
        """The person's local records, as "org/local_id"."""
        return list(self._get("members", person_id) or ())

    def resolve(self, person_id: str) -> str:
        for _ in range(MAX_REDIRECTS):
            into = self._get("redirects", person_id)
            if not into:
                return person_id
            person_id = str(into)
        raise RuntimeError("merge redirects form a cycle")

    def set_redirect(self, from_person: str, into_person: str | None) -> None:
        self._set("redirects", from_person, into_person)

    def merge_record(self, key: str) -> dict[str, Any] | None:
        value = self._get("merges", key)
        return dict(value) if value else None

    def set_merge_record(self, key: str, record: dict[str, Any] | None) -> None:
        self._set("merges", key, record)

    # -- write-back ------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every touched key once; returns how many keys were written."""
        for (table, key), value in self._dirty.items():
            target = self._tables[table]
            if value is None:
                if key in target:
                    del target[key]
            else:
                target[key] = value
        n = len(self._dirty)
        self._dirty.clear()
        return n

    @property
    def pending(self) -> int:
        return len(self._dirty)
