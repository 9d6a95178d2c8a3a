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
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from carehub.harness import LocalHub, eventually
from carehub.hl7_client import describe, send
from carehub.kafka.broker import free_port
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import ingest_pb2 as ing
from tests.hl7v2_messages import NHS, adt
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

START, END = b"\x0b", b"\x1c\r"


@pytest.fixture
def mllp(hub: LocalHub) -> Iterator[tuple[str, int]]:
    port = free_port()
    hub.start("ingest")
    hub.start("mllp", CAREHUB_MLLP_PORT=str(port), CAREHUB_MLLP_MAX_MESSAGE_BYTES="4096",
              CAREHUB_MLLP_IDLE_TIMEOUT_S="3")

    def listening() -> bool:
        hub.assert_running()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    eventually(listening, 90, "the MLLP service accepts connections")
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
