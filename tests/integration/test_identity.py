"""Identity linkage through the real broker: ingest and identity workers as processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from carehub.kafka.read import read_to_end
from carehub.sdk import Publisher
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import identity_pb2 as idn
from tests.factories import VALID_NHS, care_event
from tests.integration.conftest import Hub, assert_not_in_clear, hub_topics

pytestmark = pytest.mark.integration


def linked(values: list[bytes]) -> list[idn.LinkedEvent]:
    return [e for v in values for e in idn.LinkedBatch.FromString(v).events]


def test_one_person_across_three_organisations_and_two_namesakes_apart(hub: Hub) -> None:
    hub.start("ingest")
    hub.start("identity")
    margaret = [
        care_event(ce.EVENT_TYPE_REGISTRATION, source_org="B86001", local_id="P-4471"),
        care_event(ce.EVENT_TYPE_ADMISSION, source_org="RR8", local_id="H-99812", given="Margret"),
        care_event(ce.EVENT_TYPE_SOCIAL_CARE_ASSESSMENT, source_org="LA01", local_id="C-7730", national_id=""),
    ]
    margaret[1].person.postcode = "LS1 4AQ"  # a typo in the hospital's copy
    margaret[2].source_sector = ce.SECTOR_SOCIAL_CARE
    namesakes = [
        care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86002", local_id="P-1", national_id="", given="John",
                   family="Smith", birth_date="1960-05-01", postcode="M1 1AE"),
        care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86003", local_id="P-2", national_id="", given="John",
                   family="Smith", birth_date="1960-05-01", postcode="BS1 4DJ"),
    ]
    namesakes[0].person.address_line = "4 Canal Street"
    namesakes[1].person.address_line = "71 Whiteladies Road"
    again = care_event(ce.EVENT_TYPE_DISCHARGE, source_org="LA01", local_id="C-7730", national_id="")
    events = [*margaret, *namesakes, again]
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for event in events:
            pub.publish(event)

    hub.settle("ingest", "identity")
    got = linked(hub.values("identity.linked"))
    person = {e.event.event_id: e.person_id for e in got}
    assert set(person) == {e.event_id for e in events}, hub.log_text()[-3000:]
    ids = [person[e.event_id] for e in margaret]
    assert len(set(ids)) == 1
    assert person[again.event_id] == ids[0]
    john_a, john_b = (person[e.event_id] for e in namesakes)
    assert john_a != john_b and ids[0] not in (john_a, john_b)
    outcomes = {e.event.event_id: e.outcome for e in got}
    assert outcomes[again.event_id] == idn.LINK_OUTCOME_KNOWN_RECORD
    sequences = [e.link_sequence for e in got]
    assert len(set(sequences)) == len(sequences)

    entries = [idn.RegistryEntry.FromString(v) for v in hub.values("identity.registry")]
    assert {(e.source_org, e.local_id): e.person_id for e in entries} == {
        ("B86001", "P-4471"): ids[0], ("RR8", "H-99812"): ids[0], ("LA01", "C-7730"): ids[0],
        ("B86002", "P-1"): john_a, ("B86003", "P-2"): john_b,
    }

    # nothing in clear downstream of ingest, the identity service's tables included
    topics = hub_topics(hub, lambda t: "deadletter" not in t and "provider" not in t)
    assert sum("identity" in t and "changelog" in t for t in topics) >= 3
    raw = [VALID_NHS.encode(), b"Whitfield", b"WHITFIELD", b"Margaret", b"Smith", b"SMITH", b"LS1 4AP",
           b"M1 1AE", b"1941-03-17", b"1960-05-01", b"Canal", b"CANAL"]
    assert assert_not_in_clear(hub.bootstrap, topics, raw) >= len(events)


def test_merge_joins_two_persons_and_unmerge_separates_them(hub: Hub) -> None:
    hub.start("ingest")
    hub.start("identity")
    first = care_event(ce.EVENT_TYPE_ADMISSION, source_org="RR8", local_id="H-1", national_id="")
    # the same patient registered again at the same hospital with other details: a second person
    dup = care_event(ce.EVENT_TYPE_ED_ATTENDANCE, source_org="RR8", local_id="H-2", national_id="",
                     given="Peggy", birth_date="1941-07-03", postcode="LS6 2AA")
    dup_gp = care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86001", local_id="P-2", national_id="",
                        given="Peggy", birth_date="1941-07-03", postcode="LS6 2AA")
    a40 = care_event(ce.EVENT_TYPE_IDENTITY_MERGE, source_org="RR8", local_id="H-1", national_id="")
    a40.merge.prior_local_id = "H-2"
    after = care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86001", local_id="P-2", national_id="",
                       given="Peggy", birth_date="1941-07-03", postcode="LS6 2AA")
    undo = care_event(ce.EVENT_TYPE_IDENTITY_MERGE, source_org="RR8", local_id="H-1", national_id="")
    undo.merge.prior_local_id, undo.merge.unmerge = "H-2", True
    last = care_event(ce.EVENT_TYPE_GP_CONTACT, source_org="B86001", local_id="P-2", national_id="",
                      given="Peggy", birth_date="1941-07-03", postcode="LS6 2AA")
    # Records of different people travel on different partitions, and Kafka orders only within
    # one: like real A40s, which come long after the records they merge, each step waits for
    # the one before to be linked.
    steps = [[first, dup, dup_gp], [a40, after], [undo, last]]
    expected = 0
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for step in steps:
            for event in step:
                pub.publish(event)
            pub.flush()
            expected += len(step) + sum(e.event_type == ce.EVENT_TYPE_IDENTITY_MERGE for e in step)
            hub.settle("ingest", "identity")
            got = linked(hub.values("identity.linked"))
            assert len(got) == expected, hub.log_text()[-3000:]
    by_id: dict[str, list[idn.LinkedEvent]] = {}
    for e in got:
        by_id.setdefault(e.event.event_id, []).append(e)
    survivor, absorbed = by_id[first.event_id][0].person_id, by_id[dup.event_id][0].person_id
    assert survivor != absorbed and by_id[dup_gp.event_id][0].person_id == absorbed
    copies = by_id[a40.event_id]
    assert sorted(c.person_id for c in copies) == sorted([survivor, absorbed])
    assert all(c.merge.from_person_id == absorbed and c.merge.into_person_id == survivor for c in copies)
    assert {(r.source_org, r.local_id) for r in copies[0].merge.moved_records} == {("RR8", "H-2"), ("B86001", "P-2")}
    assert by_id[after.event_id][0].person_id == survivor
    assert all(c.merge.unmerge for c in by_id[undo.event_id])
    assert by_id[last.event_id][0].person_id == absorbed

    entries = [idn.RegistryEntry.FromString(v) for v in hub.values("identity.registry")]
    latest = {(e.source_org, e.local_id): e.person_id for e in entries}
    assert latest == {("RR8", "H-1"): survivor, ("RR8", "H-2"): absorbed, ("B86001", "P-2"): absorbed}

    # what finishes each after a crash went to the merges changelog before the rest of its batch
    [changelog] = hub_topics(hub, lambda t: t.endswith("identity-merges-changelog"))
    writes: list[tuple[str, Any]] = [(r.key.decode().strip('"'), json.loads(r.value or b"null"))
                                     for r in read_to_end(hub.bootstrap, changelog) if r.key]
    keys = [key for key, _ in writes]
    merged = keys.index("RR8/H-2")  # the merge's own record, journalled
    assert writes[merged][1]["from"] == absorbed and keys.index(f"~{absorbed}") > merged
    journal = next(n for n, (key, value) in enumerate(writes) if key.startswith("!") and value["undo"] == "RR8/H-2")
    assert writes[journal][1]["record"]["from"] == absorbed
    assert keys.count(keys[journal]) == 2  # sent on its own first, then with the table's other writes
    put_back = max(n for n, key in enumerate(keys) if key == "RR8/H-2")
    assert journal < put_back and writes[put_back][1] is None  # then the record put back as before the merge
