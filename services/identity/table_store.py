"""The linker's state in faust tables, written back once per key per batch.

The linker reads and writes its store many times per event (local record map, blocking
keys, profiles). Writing a table key sends a changelog record, and on the embedded broker
each record is a produce request; so writes go to a cache and ``flush`` writes each touched
key once, with the current event set so the changelog stays on the source partition.

The blocking index is kept the other way round from how it is read: the ``keys`` table holds, per
person, the blocking keys that person is indexed under, one row; the index from a key to its
people is built in memory from that table when the store is first read (after the table's
recovery) and kept up to date as keys are added. A new person then writes one row for its seven
or so keys instead of seven rows, which was most of the identity stage's changelog traffic
(README "Performance"). Which order a block lists its people in is no longer the order they
joined it, so the linker breaks exact ties by person id, not by that order.

Besides what the linker needs (``IdentityStore``) it keeps what merges need: the local
records of each person, redirects from merged-away persons to the person they joined, and
one record per merge so that it can be undone; and, for the known-record fast path, each local
record's demographics fingerprint as last remembered (``linkage.demographics_fingerprint``),
beside its person in the local table.

A person's local records are the local table read backwards, so they are not a table of their own:
they are built in memory from the local table when first asked for, as the blocking index is. A
new record then writes one row, not two; and no crash can leave a record mapped to a person whose
list lacks it, since there is no second write to lose.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from carehub.runtime.stage import ValueCodec, table_reader

from .linkage import Profile
from .linkage.linker import blocking_keys_of
from .linkage.store import add_to_index

# the profiles table's values as the changelog carries them (StageRuntime.table(codec=...))
PROFILE_CODEC: ValueCodec[Profile] = ValueCodec(Profile.to_bytes, Profile.from_bytes)

_MISSING = object()
# A blocking key shared by this many people no longer narrows anything down (the linker skips a
# block of more than linkage.linker.MAX_BLOCK): stop growing it. Which people a full block holds
# therefore never changes a decision.
MAX_BLOCK_MEMBERS = 5000
MAX_REDIRECTS = 32  # merge chains are short; a longer one means a cycle

TABLES = ("local", "keys", "profiles", "redirects", "merges")
FINGERPRINT_SEP = " "  # person ids are UUIDs, without spaces
KEYS_SEP = " "  # blocking keys (linkage.linker._key) are a tag and hex digits, without spaces


class TableStore:
    """An ``IdentityStore`` over faust tables (or any mutable mappings, in tests)."""

    def __init__(self, tables: dict[str, MutableMapping[str, Any]]) -> None:
        missing = set(TABLES) - set(tables)
        if missing:
            raise ValueError(f"missing tables: {sorted(missing)}")
        self._tables = tables
        self._dirty: dict[tuple[str, str], Any] = {}
        self._journal: dict[str, Any] = {}  # merges-table rows to make durable before the batch's other writes
        self._index: dict[str, str | list[str]] | None = None  # blocking key -> people; built when first read
        self._members: dict[str, list[str]] | None = None  # person -> "org/local_id" records; likewise
        self._readers: dict[str, Callable[[str], Any]] = {}  # per table, its fast read (runtime.table_reader)
        self.full_blocks = 0  # additions refused because a block was full

    def _get(self, table: str, key: str) -> Any:
        value = self._dirty.get((table, key), _MISSING)
        if value is _MISSING:
            read = self._readers.get(table)
            if read is None:  # bound at the first read: faust makes a table's store when the worker starts
                read = self._readers[table] = table_reader(self._tables[table])
            value = read(key)
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
        members = self._members_index()  # built before the row changes, which it would otherwise include
        self._set("local", record, person_id)
        if previous is not None:
            held = members.get(previous, [])
            if record in held:
                held.remove(record)
            if not held:
                members.pop(previous, None)
        members.setdefault(person_id, []).append(record)

    def block(self, key: str) -> list[str]:
        """The people under a blocking key, merged-away persons replaced by whom they joined."""
        held = self._blocks().get(key)
        if held is None:
            return []
        if isinstance(held, str):
            return [self.resolve(held)]
        return list(dict.fromkeys(map(self.resolve, held)))  # in the block's order, each person once

    def add_to_block(self, key: str, person_id: str) -> None:
        """Index ``person_id`` under ``key``: in the person's row of ``keys`` (written at the next flush)
        and in the in-memory index, unless that block is full."""
        row = self._get("keys", person_id) or ""
        if key in row.split(KEYS_SEP):
            return
        index = self._blocks()  # built before the row changes, which it would otherwise include
        self._set("keys", person_id, f"{row}{KEYS_SEP}{key}" if row else key)
        if not add_to_index(index, key, person_id, MAX_BLOCK_MEMBERS):
            self.full_blocks += 1

    def forget_index(self) -> None:
        """Drop the in-memory index: the tables may be recovered afresh (a revocation), so the next read
        builds it again from them."""
        self._index = None
        self._members = None
        self._readers.clear()

    def _blocks(self) -> dict[str, str | list[str]]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> dict[str, str | list[str]]:
        """The index from the ``keys`` rows. A person with a profile and no row (identity state written
        before the ``keys`` table existed, or a row a crash lost) is indexed under its profile's keys."""
        index: dict[str, str | list[str]] = {}
        rows = self._rows("keys")
        for person_id, row in rows.items():
            if row:
                for key in row.split(KEYS_SEP):
                    add_to_index(index, key, person_id, MAX_BLOCK_MEMBERS)
        for person_id in list(self._tables["profiles"].keys()):
            if person_id not in rows:
                profile = self.profile(person_id)
                for variant in profile.variants if profile is not None else ():
                    for key in blocking_keys_of(variant):
                        add_to_index(index, key, person_id, MAX_BLOCK_MEMBERS)
        return index

    def _rows(self, table: str) -> dict[str, Any]:
        """Every row of ``table`` as this batch left it (its writes not yet flushed included)."""
        rows = dict(self._tables[table].items())
        rows.update((k, v) for (t, k), v in self._dirty.items() if t == table)
        return rows

    def _members_index(self) -> dict[str, list[str]]:
        if self._members is None:
            members: dict[str, list[str]] = {}
            for record, value in self._rows("local").items():
                if value:
                    members.setdefault(str(value).partition(FINGERPRINT_SEP)[0], []).append(record)
            self._members = members
        return self._members

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
        """The person's local records, as "org/local_id", sorted: the same list whatever order the
        records joined in, or the local table was recovered in."""
        return sorted(self._members_index().get(person_id, ()))

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

    def journal(self, key: str, record: dict[str, Any]) -> None:
        """Write a merges-table row that must be on the broker before anything else of the batch.

        The row is written with the others too (``flush``); ``take_journal`` hands it over first, for
        the worker to send and wait for (services/identity/merges.py, "Merges that hold through a
        crash"). A later write of the same key in the batch still wins in the table.
        """
        self._journal[key] = record
        self._set("merges", key, record)

    def take_journal(self) -> dict[str, Any]:
        """The rows journalled since the last call, in the order written."""
        journal, self._journal = self._journal, {}
        return journal

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

