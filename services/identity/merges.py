"""HL7 A40-style merges ("these two local records are one person") and their undoing.

A merge at one organisation joins the two hub persons its records belong to, whole: every
local record of the absorbed person moves to the one that remains, and the absorbed id
redirects there (so blocking-index entries under it still find the right person). What moved,
and both profiles as they were, are kept under the prior record, so an un-merge of the same
pair puts everything back.

Merges chain (A into B, then B into C) and are undone in any order. An un-merge gives back to the
absorbed person exactly the records that came with it and are still with the survivor: when A is
taken out of C first, A's records also leave what B's merge record says moved, so a later
un-merge of B gives B back without them. The person a merge absorbed points to that merge's key
(``~person`` in the merges table) for that walk. A prior record used again while its first merge
is in force keeps the earlier record under the new one, each un-merge undoing the latest.

Merges that hold through a crash. The tables go to one changelog each, so a worker killed while
writing a batch's tables can leave any part of a merge or un-merge on the broker. So what the
decision needs to be finished is made durable first, on its own (``TableStore.journal``; the
identity worker waits until the broker holds it, and everything sent before it, before it writes
anything else of the batch): a merge's own record, and for an un-merge the record it undoes, kept
under the un-merge's position in the linkage log. A merge or un-merge decided again in repair mode
finishes from there (``complete``, ``unmerge`` with ``repair``): the records, the redirect, the
profiles and the chain all end as a run without the crash leaves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from carehub.v1 import identity_pb2 as idn

from .linkage import Profile
from .table_store import MAX_REDIRECTS, TableStore

MAX_CHAIN = MAX_REDIRECTS  # merges one above the other


@dataclass
class MergeResult:
    merge: idn.PersonMerge | None  # None: nothing to join or separate
    registry: list[tuple[str, str, str]] = field(default_factory=list)  # (org, local_id, person_id)


def _split(record: str) -> tuple[str, str]:
    org, _, local_id = record.partition("/")
    return org, local_id


def merge(store: TableStore, org: str, survivor: str, prior_local_id: str, repair: bool = False) -> MergeResult:
    """Join the person of (org, prior_local_id) into ``survivor`` (the person of the surviving record).

    ``repair``: the event is decided again after a crash, and a record of this very merge (these two
    persons) means it was decided before and written in part: it is finished, not nested again, and
    the result is the one the first decision gave.
    """
    absorbed = store.local_person(org, prior_local_id)
    if absorbed is None:  # the prior record was never seen: from now on it is the survivor's
        store.set_local_person(org, prior_local_id, survivor)
        return MergeResult(None, [(org, prior_local_id, survivor)])
    absorbed = store.resolve(absorbed)
    key = f"{org}/{prior_local_id}"
    if absorbed == survivor:
        complete(store, key, survivor)
        return MergeResult(None)
    if repair:
        held = store.merge_record(key)
        if held is not None and held["from"] == absorbed and held["into"] == survivor:
            # this merge, written in part (no merge in force has an absorbed person not redirected):
            # finished, and announced as the first time, which downstream holds once
            complete(store, key, survivor)
            return _result(absorbed, survivor, False, list(held["moved"]))
    moved = store.members(absorbed)
    absorbed_profile, survivor_profile = store.profile(absorbed), store.profile(survivor)
    record: dict[str, Any] = {
        "from": absorbed, "into": survivor, "moved": moved,
        "from_profile": absorbed_profile.to_bytes().hex() if absorbed_profile else "",
        "into_profile": survivor_profile.to_bytes().hex() if survivor_profile else "",
    }
    earlier = store.merge_record(key)
    if earlier is not None:
        record["earlier"] = earlier
    store.journal(key, record)  # on the broker before anything else of the batch
    store.set_merge_record(_absorbed_key(absorbed), {"merge": key})
    for local in moved:
        store.set_local_person(*_split(local), survivor)
    if absorbed_profile is not None:
        joined = survivor_profile or Profile()
        for variant in absorbed_profile.variants:
            joined = joined.with_variant(variant)
        store.set_profile(survivor, joined)
    store.set_redirect(absorbed, survivor)
    return _result(absorbed, survivor, False, moved)


def complete(store: TableStore, key: str, survivor: str) -> int:
    """Write again what the merge of ``key`` into ``survivor`` should have left and has not; returns how much.

    The tables are written once per batch, each to its own changelog, so a worker killed while
    writing them can leave part of a merge on the broker: the redirect without the moved records'
    rows, say. The merge event, not committed, is then decided again and finds the two persons
    already one. Whatever the merge's record says should hold (the absorbed person redirected, its
    pointer to the merge, its records and profile variants with the survivor) is written where it
    does not; a merge that reached every changelog is only read. The record itself is never the
    part lost: it is journalled, on the broker before the batch's other writes are sent.
    """
    record = store.merge_record(key)
    if record is None or store.resolve(record["into"]) != survivor:
        return 0
    absorbed, written = record["from"], 0
    if store.resolve(absorbed) != survivor:
        store.set_redirect(absorbed, record["into"])
        written += 1
    if store.merge_record(_absorbed_key(absorbed)) is None:
        store.set_merge_record(_absorbed_key(absorbed), {"merge": key})
        written += 1
    for local in record["moved"]:
        if store.local_person(*_split(local)) == absorbed:
            store.set_local_person(*_split(local), survivor)
            written += 1
    if record["from_profile"]:
        held = store.profile(survivor) or Profile()
        variants = Profile.from_bytes(bytes.fromhex(record["from_profile"])).variants
        if not any(v in held.variants for v in variants):  # none: the join was lost (a capped profile drops old ones)
            joined = held
            for variant in variants:
                joined = joined.with_variant(variant)
            store.set_profile(survivor, joined)
            written += 1
    return written


def unmerge(store: TableStore, org: str, survivor: str, prior_local_id: str, sequence: int,
            repair: bool = False) -> MergeResult:
    """Undo the merge that joined (org, prior_local_id)'s person into ``survivor``.

    ``sequence``: the un-merge's position in the linkage log, under which the record it undoes is
    journalled. ``repair``: the event is decided again after a crash; a journal under its position
    means it was decided before and written in part, and it is finished from the journal (the merge
    record itself may already have been put back to what it was before the merge).
    """
    key = f"{org}/{prior_local_id}"
    journalled = store.merge_record(_journal_key(sequence)) if repair else None
    redo = journalled is not None and journalled["undo"] == key
    record = journalled["record"] if journalled is not None and redo else store.merge_record(key)
    if record is None or store.resolve(record["into"]) != survivor:
        return MergeResult(None)
    if not redo:
        store.journal(_journal_key(sequence), {"undo": key, "record": record})
    absorbed = record["from"]
    # Every write below sets a value, none adds to one, so doing it again over a part already
    # written ends where doing it once does; done again, records already given back count as moved.
    holders = {survivor, absorbed} if redo else {survivor}
    moved = [local for local in record["moved"] if store.local_person(*_split(local)) in holders]
    store.set_redirect(absorbed, None)
    for local in moved:
        store.set_local_person(*_split(local), absorbed)
    _forget_in_chain(store, record["into"], set(moved))
    if record["from_profile"]:
        store.set_profile(absorbed, Profile.from_bytes(bytes.fromhex(record["from_profile"])))
    if record["into_profile"] and record["into"] == survivor:  # chained: the survivor's own profile stays
        store.set_profile(survivor, Profile.from_bytes(bytes.fromhex(record["into_profile"])))
    store.set_merge_record(key, record.get("earlier"))
    store.set_merge_record(_absorbed_key(absorbed), None)
    return _result(absorbed, survivor, True, moved)


def _absorbed_key(person_id: str) -> str:
    return f"~{person_id}"  # no "org/local_id" key starts so


def _journal_key(sequence: int) -> str:
    return f"!{sequence}"  # nor so


def _forget_in_chain(store: TableStore, person_id: str, records: set[str]) -> None:
    """Take ``records`` out of what the merges that absorbed ``person_id`` (and so on up) moved."""
    for _ in range(MAX_CHAIN):
        pointer = store.merge_record(_absorbed_key(person_id))
        if pointer is None:
            return
        top = store.merge_record(pointer["merge"])
        record = top
        while record is not None and record["from"] != person_id:  # under a later merge of the same record
            record = record.get("earlier")
        if top is None or record is None:
            return
        record["moved"] = [local for local in record["moved"] if local not in records]
        store.set_merge_record(pointer["merge"], top)
        person_id = record["into"]


def _result(absorbed: str, survivor: str, unmerge_: bool, moved: list[str]) -> MergeResult:
    """The announcement, and the registry's new entries: the moved records are now the survivor's
    (a merge) or the absorbed person's again (an un-merge)."""
    holder = absorbed if unmerge_ else survivor
    return MergeResult(_message(absorbed, survivor, unmerge_, moved), [(*_split(r), holder) for r in moved])


def _message(absorbed: str, survivor: str, unmerge_: bool, moved: list[str]) -> idn.PersonMerge:
    return idn.PersonMerge(
        from_person_id=absorbed, into_person_id=survivor, unmerge=unmerge_,
        moved_records=[idn.LocalRecord(source_org=org, local_id=local) for org, local in map(_split, moved)],
    )
