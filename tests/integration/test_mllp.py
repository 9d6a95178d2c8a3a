"""HL7 v2 over MLLP through a real socket, the real MLLP service, ingest and the embedded broker.

A hospital's system sends ADT messages and waits for each ACK: AA only once the message and its
events are on the broker; the same message resent after a lost ACK is ACKed again and counted
once; a message in a character set the hub does not know is refused (AR) and dead-lettered;
stray bytes before a frame do not lose the frame; a frame over the size limit is refused and the
connection closed; a sender that falls silent is disconnected; other connections are not held
up by any of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from carehub.harness import LocalHub, eventually
from carehub.hl7_client import describe, send
from carehub.kafka.broker import EmbeddedBroker, free_port
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from carehub.v1 import timeline_pb2 as tl
from tests.hl7v2_messages import NHS, NHS_2, PID, PV1_INPATIENT, adt, dg1
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

START, END = b"\x0b", b"\x1c\r"


@pytest.fixture
def mllp(hub: LocalHub) -> Iterator[tuple[str, int]]:
    port = free_port()
    hub.start("ingest")
    hub.start("mllp", CAREHUB_MLLP_PORT=str(port), CAREHUB_MLLP_MAX_MESSAGE_BYTES="4096",
              CAREHUB_MLLP_IDLE_TIMEOUT_S="3")

    hub.wait_listening(port)
    yield "127.0.0.1", port


def exchange(address: tuple[str, int], payload: bytes, timeout_s: float = 30.0) -> bytes:
    """Send raw bytes on a new connection and return the first ACK frame (b"" if it closed)."""
    with socket.create_connection(address, timeout=timeout_s) as conn:
        conn.sendall(payload)
        data = b""
        while END not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    start = data.find(START)
    return data[start + 1: data.find(END)] if start >= 0 and END in data else b""


def accepted(hub: LocalHub) -> list[ing.AcceptedEvent]:
    hub.wait_caught_up("ingest", ["provider.events"])
    return [e for v in hub.values("ingest.accepted") for e in ing.AcceptedBatch.FromString(v).events]


def test_ack_after_durable_write_and_a_resend_is_counted_once(hub: LocalHub, mllp: tuple[str, int]) -> None:
    admission = adt("A01", "MSG-A01-1").encode()
    first = asyncio.run(send(*mllp, [("a01", admission)]))
    again = asyncio.run(send(*mllp, [("a01 resent", admission)]))  # the first ACK was lost, say
    assert [o.code for o in first + again] == ["AA", "AA"]
    assert first[0].control_id == "MSG-A01-1"

    # the raw message and its event were written before the AA; ingest keeps the event once
    raw = hub.values("mllp.raw")
    assert raw.count(admission) == 2
    events = accepted(hub)
    assert len(events) == 1, [e.event_id for e in events]
    event = events[0]
    assert event.event_type == ce.EVENT_TYPE_ADMISSION and event.source_org == "RR8"
    assert event.person.local_id == "H-99812" and len(event.person.national_id_hash) == 32
    assert NHS.encode() not in ing.AcceptedBatch(events=events).SerializeToString()


def test_refusals_stray_bytes_limits_and_idle(hub: LocalHub, mllp: tuple[str, int]) -> None:
    # a charset the hub does not know: AR naming MSH-18, and the bytes dead-lettered
    unknown = adt("A01", "MSG-CS-1", msh_fields={"f18": "KOI8-R"}).encode()
    code, text = describe(exchange(mllp, START + unknown + END))
    assert code == "AR" and "KOI8-R" in text
    letters = [ing.DeadLetter.FromString(v) for v in hub.wait_values("ingest.deadletter", bool)]
    assert [d.reason for d in letters] == [ing.REJECT_REASON_UNKNOWN_CHARSET]
    assert letters[0].original_value == unknown

    # stray bytes before a frame: logged and skipped, the message itself goes through
    message = adt("A01", "MSG-GARBAGE-1", pid=None).encode()
    assert describe(exchange(mllp, b"\x00junk\r\n" + START + message + END))[0] == "AA"

    # a frame over the configured size (4,096 bytes here): refused and the connection closed
    big = adt("A01", "MSG-BIG-1", extra=["NTE|1||" + "x" * 8000]).encode()
    code, text = describe(exchange(mllp, START + big + END))
    assert code == "AR" and "4096" in text

    # a sender that goes quiet mid-frame is disconnected after the idle timeout (3 s here)
    with socket.create_connection(mllp, timeout=30) as conn:
        conn.sendall(START + b"MSH|^~\\&|PAS|RR8")
        conn.settimeout(30)
        assert conn.recv(100) == b""  # closed by the service, not by us

    # and none of it held up anyone else
    assert asyncio.run(send(*mllp, [("after", adt("A01", "MSG-AFTER-1").encode())]))[0].code == "AA"


def test_send_hl7_prints_each_ack(hub: LocalHub, mllp: tuple[str, int]) -> None:
    path = hub.data_dir / "adt.hl7"
    path.write_bytes(adt("A01", "MSG-CLI-1", separator="\n").encode() + b"\n"
                     + adt("A01", "MSG-CLI-2", separator="\n", msh_fields={"f18": "KOI8-R"}).encode())
    out = subprocess.run([sys.executable, "-m", "carehub", "send-hl7", str(path), "--target",
                          f"{mllp[0]}:{mllp[1]}"], cwd=ROOT, env=hub.env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr  # one of the two was refused
    assert f"{path}#1 MSG-CLI-1: AA" in out.stdout
    assert f"{path}#2 MSG-CLI-2: AR" in out.stdout
    assert "sent 2, accepted 1, not accepted 1" in out.stdout


def test_killed_between_receipt_and_ack_loses_nothing(hub: LocalHub, broker: EmbeddedBroker,
                                                      mllp: tuple[str, int]) -> None:
    """kill -9 while a message is received but cannot have been ACKed: the broker is paused
    (SIGSTOP), so the service's acks=all write of the message cannot complete; the sender sees
    the connection die without an ACK, resends to a restarted service and gets AA; the hub keeps
    the message's event once, and the one before it too."""
    before = adt("A01", "MSG-KILL-1", pv1={**PV1_INPATIENT, 19: "S-KILL-1"}).encode()
    caught = adt("A01", "MSG-KILL-2", pv1={**PV1_INPATIENT, 19: "S-KILL-2"}).encode()
    assert asyncio.run(send(*mllp, [("before", before)]))[0].code == "AA"
    service = next(w for w in hub.workers if w.service == "mllp")
    assert broker.pid is not None
    conn = socket.create_connection(mllp, timeout=30)
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        conn.sendall(START + caught + END)
        # the service reads the frame, then waits on the frozen broker: kill it only once the
        # kernel shows every byte read by the service, so the kill lands after receipt
        eventually(lambda: _unread_by_service(conn, mllp[1]) == 0, 30, "the MLLP service read the frame")
        hub.kill(service)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    conn.settimeout(30)
    assert conn.recv(100) == b"", "no ACK may come from a killed service"
    conn.close()

    hub.start("mllp", CAREHUB_MLLP_PORT=str(mllp[1]))
    outcome = eventually(lambda: _try_send(mllp, caught), 90, "the restarted MLLP service ACKs the resend")
    assert outcome == "AA"
    ids = [e.event_id for e in accepted(hub) if e.event_type == ce.EVENT_TYPE_ADMISSION]
    spells = sorted(e.clinical.spell_id for e in accepted(hub) if e.event_type == ce.EVENT_TYPE_ADMISSION)
    assert spells == ["S-KILL-1", "S-KILL-2"] and len(set(ids)) == 2, spells


def _unread_by_service(conn: socket.socket, port: int) -> int:
    """Bytes of ours not yet read by the MLLP service: still in our send queue (Linux SIOCOUTQ)
    plus those in its socket's receive queue (the rx_queue column of /proc/net/tcp)."""
    import fcntl
    import struct
    import termios

    unsent = int(struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    ours = conn.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == ours:
            return unsent + int(queues.split(":")[1], 16)
    return unsent + 1  # the service's end of the connection is not listed yet: not read


def _try_send(address: tuple[str, int], message: bytes) -> str | None:
    try:
        return asyncio.run(send(*address, [("resend", message)]))[0].code
    except OSError:
        return None


def test_every_trigger_over_a_socket_through_to_the_timeline(hub: LocalHub, mllp: tuple[str, int]) -> None:
    """Each row of the trigger table, sent over one connection in order, reaches the timeline:
    A08 after A01 revises the spell's diagnoses, A11 retracts an admission, A12/A13 retract a
    transfer and a discharge, A40 merges two local records into one person."""
    hub.start("identity")
    hub.start("timeline")

    def at(trigger: str, when: str) -> dict[int, str]:
        return {1: trigger, 2: when, 6: when}

    def visit(number: str, **fields: str) -> dict[int, str]:
        return {**PV1_INPATIENT, 19: number, **{int(k[1:]): v for k, v in fields.items()}}

    second = {**PID, 3: f"H-55555^^^RR8^MR~{NHS_2}^^^NHS^NH", 5: "Whitfield^Margaret"}
    renamed = {**PID, 3: "H-77778^^^RR8^MR", 5: "Other^Person", 7: "19800101"}
    messages = [
        ("A28", adt("A28", "T-A28", evn=at("A28", "20261001090000"), pv1={})),
        ("A01", adt("A01", "T-A01", pv1=visit("S-1"))),
        ("A02", adt("A02", "T-A02", evn=at("A02", "20261001120000"), pv1=visit("S-1", f3="WARD9^^^RR8",
                                                                             f6="WARD7^^^RR8"))),
        ("A12", adt("A12", "T-A12", evn=at("A12", "20261001120000"), pv1=visit("S-1", f3="WARD7^^^RR8",
                                                                             f6="WARD9^^^RR8"))),
        ("A08", adt("A08", "T-A08", evn=at("A08", "20261002090000"), pv1=visit("S-1"),
                    extra=[dg1(1, "J18.9", kind="F", priority="1")])),
        ("A03", adt("A03", "T-A03", evn=at("A03", "20261003100000"), pv1=visit("S-1", f45="20261003100000"))),
        ("A13", adt("A13", "T-A13", evn=at("A13", "20261003110000"), pv1=visit("S-1"))),
        ("A21", adt("A21", "T-A21", evn=at("A21", "20261003120000"), pv1=visit("S-1"))),
        ("A22", adt("A22", "T-A22", evn=at("A22", "20261003130000"), pv1=visit("S-1"))),
        ("A04", adt("A04", "T-A04", evn=at("A04", "20261005080000"), pv1=visit("E-1", f2="E", f44="20261005080000"))),
        ("A05", adt("A05", "T-A05", evn=at("A05", "20261006080000"), pv1=visit("S-2", f44=""))),
        ("A01", adt("A01", "T-A01-2", pv1=visit("S-2", f44="20261007080000"))),
        ("A11", adt("A11", "T-A11", evn=at("A11", "20261007090000"), pv1=visit("S-2"))),
        ("A06", adt("A06", "T-A06", pv1=visit("S-3", f44="20261008080000"))),
        ("A07", adt("A07", "T-A07", evn=at("A07", "20261008090000"), pv1=visit("S-3", f2="O"))),
        ("A31", adt("A31", "T-A31", evn=at("A31", "20261009090000"), pv1={})),
        ("A01", adt("A01", "T-A01-3", pid=second, pv1=visit("S-9", f44="20261010080000"))),
        ("A40", adt("A40", "T-A40", evn=at("A40", "20261011090000"), pv1={},
                    extra=["MRG|H-55555^^^RR8^MR"])),
        ("A47", adt("A47", "T-A47", evn=at("A47", "20261012090000"), pid=renamed, pv1={},
                    extra=["MRG|H-77777^^^RR8^MR"])),
    ]
    outcomes = asyncio.run(send(*mllp, [(t, m.encode()) for t, m in messages]))
    assert [(o.source, o.code) for o in outcomes] == [(t, "AA") for t, _ in messages], outcomes

    kinds = [ce.EVENT_TYPE_REGISTRATION, ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_TRANSFER, ce.EVENT_TYPE_CANCELLATION,
             ce.EVENT_TYPE_DIAGNOSIS_CODED, ce.EVENT_TYPE_DISCHARGE, ce.EVENT_TYPE_CANCELLATION,
             ce.EVENT_TYPE_ED_ATTENDANCE, ce.EVENT_TYPE_ADMISSION, ce.EVENT_TYPE_CANCELLATION, ce.EVENT_TYPE_ADMISSION,
             ce.EVENT_TYPE_CANCELLATION, ce.EVENT_TYPE_REGISTRATION, ce.EVENT_TYPE_ADMISSION,
             ce.EVENT_TYPE_IDENTITY_MERGE, ce.EVENT_TYPE_IDENTITY_MERGE]
    events = hub.wait_values("timeline.events", lambda vs: len(by_event(vs)) >= len(kinds), timeout_s=120)
    got = timeline(events)
    # the A08 re-stated the admission under its own id (dropped as a duplicate); everything else is one event
    assert sorted(e.linked.event.event_type for e in by_event(events).values()) == sorted(kinds), \
        sorted(ce.EventType.Name(e.linked.event.event_type) for e in by_event(events).values())

    def spell_of(kind: ce.EventType.ValueType, spell: str) -> tl.SpellView:
        return next(e.view.spell for e in got.values()
                    if e.linked.event.event_type == kind and e.view.spell.spell_id == spell)

    coded = spell_of(ce.EVENT_TYPE_DIAGNOSIS_CODED, "S-1")  # A08 after A01: revised
    assert coded.primary_diagnosis == "J18.9" and not coded.primary_diagnosis_provisional
    assert spell_of(ce.EVENT_TYPE_CANCELLATION, "S-2").status == tl.SPELL_STATUS_CANCELLED  # A11 retracts
    merge = next(e for e in got.values() if e.linked.event.event_type == ce.EVENT_TYPE_IDENTITY_MERGE
                 and e.linked.merge.moved_records)
    moved = {(r.source_org, r.local_id) for r in merge.linked.merge.moved_records}
    assert ("RR8", "H-55555") in moved  # A40: the second record's timeline joined the first's person
    survivor = merge.linked.merge.into_person_id
    admissions = [e for e in got.values() if e.linked.event.event_type == ce.EVENT_TYPE_ADMISSION]
    assert {e.linked.person_id for e in admissions} >= {survivor}


def by_event(values: list[bytes]) -> dict[str, tl.TimelineEvent]:
    return {e.linked.event.event_id: e for e in timeline(values).values()}


def timeline(values: list[bytes]) -> dict[tuple[str, str], tl.TimelineEvent]:
    """Timeline events by (event id, person id): a merge is sent to both persons."""
    return {(e.linked.event.event_id, e.linked.person_id): e
            for v in values for e in tl.TimelineBatch.FromString(v).events}


@pytest.mark.parametrize(("msh18", "codec", "given"), [("", "ascii", "Margaret"), ("8859/1", "latin-1", "Zoë"),
                                                       ("UNICODE UTF-8", "utf-8", "Łucja")])
def test_each_charset_is_decoded_as_declared(hub: LocalHub, mllp: tuple[str, int], msh18: str, codec: str,
                                             given: str) -> None:
    control = f"MSG-CS-{codec}"
    message = adt("A01", control, msh_fields={"f18": msh18} if msh18 else None,
                  pid={**PID, 5: f"Whitfield^{given}"}).encode(codec)
    assert asyncio.run(send(*mllp, [(codec, message)]))[0].code == "AA"
    # the provider topic holds the mapped event before ingest pseudonymises it: the name as sent
    mapped = [ce.CareEvent.FromString(v) for v in hub.values("provider.events")]
    assert [e.person.given_name for e in mapped] == [given]


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the peer has closed; a timeout (the socket's own) propagates and fails the test.

    A service that closes a connection whose last bytes it has not read makes the kernel send a
    reset instead of an orderly end of stream, so both mean "closed by the service".
    """
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_malformed_frames_and_a_trickling_sender_leave_others_unaffected(hub: LocalHub,
                                                                          mllp: tuple[str, int]) -> None:
    # framed bytes with no MSH, and an MSH with no separators: an AR that says why, never silence
    code, text = describe(exchange(mllp, START + b"hello, this is not HL7" + END))
    assert code == "AR" and text
    code, text = describe(exchange(mllp, START + b"MSH\rPID\r" + END))
    assert code == "AR" and "MSH" in text

    # a sender that trickles one byte every 0.5 s: its frame never completes within the per-frame
    # deadline (3 s here), so it is closed however many bytes it keeps sending; meanwhile another
    # connection is served at once
    trickle = socket.create_connection(mllp, timeout=30)
    closed = threading.Event()

    def drip() -> None:
        payload = START + adt("A01", "MSG-TRICKLE-1").encode()
        try:
            for byte in payload:
                trickle.sendall(bytes([byte]))
                if closed.wait(0.5):
                    return
        except OSError:
            return

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        assert asyncio.run(send(*mllp, [("meanwhile", adt("A01", "MSG-MEANWHILE-1").encode())]))[0].code == "AA"
        assert closed_by_peer(trickle)  # closed by the service at its deadline, mid-trickle
        assert dripping.is_alive()       # while the sender still had bytes to send
    finally:
        closed.set()
        dripping.join(5)
        trickle.close()
