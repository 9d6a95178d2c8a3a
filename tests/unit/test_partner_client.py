"""The partner client's checks that need no server: acknowledgement words, credentials, cursor file, alert text.

The client against a real (scripted) gRPC server over TLS is in tests/integration/test_partner_client.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from carehub.partner import CursorFile, PartnerClient, PartnerError, RecentIds, parse_ack_status
from carehub.partner_cli import format_alert
from carehub.v1 import alerts_pb2 as al
from tests.partner_support import Pki, alert, make_pki

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- acknowledgements, credentials


def test_ack_status_words() -> None:
    assert parse_ack_status("received") == al.ACK_STATUS_RECEIVED
    assert parse_ack_status("ACK_STATUS_NOT_FOR_US") == al.ACK_STATUS_NOT_FOR_US
    with pytest.raises(ValueError, match="one of received, understood, actioned, not_for_us"):
        parse_ack_status("done")
    with pytest.raises(ValueError):
        parse_ack_status("unspecified")


def test_missing_or_incomplete_credentials_are_named(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(PartnerError, match=r"CA certificate file not found: .*nope\.pem"):
        PartnerClient("127.0.0.1:1", ca_file=tmp_path / "nope.pem")
    with pytest.raises(PartnerError, match="give both or neither"):
        PartnerClient("127.0.0.1:1", ca_file=pki.ca, cert_file=pki.client_cert)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(PartnerError, match="is not PEM"):
        PartnerClient("127.0.0.1:1", ca_file=tmp_path / "junk.pem")


# -- helpers


def test_cursor_file_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    store = CursorFile(tmp_path / "state" / "alerts.cursor")
    assert store.load() is None
    store.save("c41")
    store.save("c42")
    assert store.load() == "c42"
    assert CursorFile(store.path).load() == "c42"  # as a restarted process sees it
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["alerts.cursor"]  # no temp files left
    with pytest.raises(ValueError):
        store.save("two\nlines")
    assert store.load() == "c42"


def test_recent_ids_are_bounded() -> None:
    seen = RecentIds(capacity=3)
    assert [seen.add(k) for k in ["a", "b", "a", "c", "d"]] == [True, True, False, True, True]
    assert len(seen) == 3 and "a" not in seen and "d" in seen
    assert seen.add("a")  # forgotten, so new again


# -- the command


def test_format_alert_for_a_retraction_of_an_alert_not_seen() -> None:
    text = format_alert(alert(5, kind=al.ALERT_KIND_RETRACTION, refers_to="A4"), partner="ORG2")
    assert "RETRACTION: an earlier alert no longer holds" in text.splitlines()[0]
    assert "Retracts  alert A4 (not shown in this session); disregard it" in text
    assert "addressed to ORG1, not ORG2" in text
