"""A practice's dashboard page, served by `carehub dashboard` from a real gateway and read in a real browser.

Ingest, identity, timeline, indicators, population, case-list and gateway workers run as
processes on the embedded broker; the gateway speaks mutual TLS. Seventy people are registered
with three practices: Riverside (A, record ids RIV-), Hillside (B, HIL-) and Oakfield (C, OAK-).
Old people at A and B are admitted as emergencies for ambulatory care sensitive conditions.
A's partner entry lets it see B's indicator values beside its own, not C's. Once the gateway
serves what was last published, `carehub dashboard` runs with A's certificate and headless
chromium loads the page: what the browser built must show A's name and values, the region's,
the funnel plot's points with A's highlighted, the months withheld as withheld, and A's case
list under A's record ids; nothing of B's or C's people, no hub person id, nothing of C. With
the gateway stopped, the page says the gateway is unavailable (HTTP 503).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carehub.dashboard.figures import fmt, shown
from carehub.harness import eventually
from carehub.kafka.broker import free_port
from carehub.partner import PartnerClient
from carehub.sdk import Publisher
from carehub.tlsgen import make_demo_pki
from carehub.v1 import alerts_pb2 as al
from carehub.v1 import care_event_pb2 as ce
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import risk_pb2 as rk
from tests.browser import Dom, dump_dom
from tests.factories import care_event
from tests.integration.conftest import Hub
from tests.integration.test_caselists import nhs_numbers
from tests.integration.test_gateway import wait_serving

pytestmark = pytest.mark.integration

A, B, C, HOSPITAL = "B86001", "B86002", "B86003", "RR8"
PREFIX = {A: "RIV-", B: "HIL-", C: "OAK-"}
SIZE = {A: 30, B: 30, C: 10}
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
SUPPRESSION_MAX = 2  # counts 1-2 withheld: small enough for 70 people to show values, large enough to withhold some

PEOPLE = [(org, i) for org in (A, B, C) for i in range(SIZE[org])]
NHS = dict(zip(PEOPLE, nhs_numbers(len(PEOPLE)), strict=True))
# (practice, person, days ago, primary diagnosis): chronic (I50.9, J44.1) and acute (N10) ACSC admissions
ADMISSIONS = [(A, 0, 60, "I50.9"), (A, 0, 10, "N10"), (A, 1, 5, "J44.1"), (A, 2, 100, "I50.9"),
              (B, 0, 20, "N10"), (B, 0, 80, "J44.1"), (B, 1, 40, "J44.1"), (B, 2, 200, "I50.9")]


def person(org: str, i: int) -> dict[str, str]:
    born = "1938-05-02" if i < 3 else f"19{60 + i % 30}-{i % 12 + 1:02d}-{i % 27 + 1:02d}"
    return dict(national_id=NHS[(org, i)], given=f"Given{org[-1]}{i}", family=f"Family{org}x{i}", birth_date=born,
                postcode=f"LS{i % 27 + 1} {i % 9 + 1}AB")


def registration(org: str, i: int) -> ce.CareEvent:
    e = care_event(ce.EVENT_TYPE_REGISTRATION, when=NOW - timedelta(days=300), source_org=org,
                   local_id=f"{PREFIX[org]}{i:04d}", **person(org, i))
    e.source_sector = ce.SECTOR_PRIMARY_CARE
    e.ClearField("clinical")
    e.registered_practice, e.locality = org, "L01"
    return e


def admission(n: int, org: str, i: int, days_ago: int, diagnosis: str) -> ce.CareEvent:
    e = care_event(ce.EVENT_TYPE_ADMISSION, when=NOW - timedelta(days=days_ago), source_org=HOSPITAL,
                   local_id=f"H-{org}{i:03d}", **person(org, i))
    e.source_sector = ce.SECTOR_ACUTE
    e.clinical.spell_id = f"S-{n}"
    e.clinical.diagnoses[0].code = diagnosis
    e.registered_practice, e.locality = "", ""
    return e


def http_status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def key(v: ind.IndicatorValue) -> tuple[str, str, str]:
    return v.indicator, v.unit, v.window


@pytest.mark.timeout(600)
def test_the_practice_page_shows_a_browser_its_own_figures_and_list_and_nothing_of_other_practices_people(
        hub: Hub, tmp_path: Path) -> None:
    pki = make_demo_pki(tmp_path / "pki", [A, B, C])
    partners = tmp_path / "partners.toml"
    partners.write_text(f'[partners.{A}]\nname = "Riverside Surgery"\nunits = ["practice:{A}", "practice:{B}", '
                        f'"region"]\n[partners.{B}]\nname = "Hillside"\n[partners.{C}]\nname = "Oakfield"\n')
    gateway_port = free_port()
    gateway_target = f"127.0.0.1:{gateway_port}"
    for service in ("ingest", "identity", "timeline"):
        hub.start(service)
    hub.start("indicators", CAREHUB_INDICATORS_PUBLISH_INTERVAL_S="0.5", CAREHUB_SUPPRESSION_MAX=str(SUPPRESSION_MAX))
    hub.start("population", CAREHUB_RISK_CUTOFFS_INTERVAL_S="1")
    hub.start("caselists", CAREHUB_RISK_CUTOFFS_INTERVAL_S="1", CAREHUB_CASELIST_PUBLISH_INTERVAL_S="0.5")
    hub.start("reviews")
    gateway = hub.start("gateway", CAREHUB_GATEWAY_HOST="127.0.0.1", CAREHUB_GATEWAY_PORT=str(gateway_port),
                        CAREHUB_GATEWAY_TLS_CERT=str(pki.server.cert), CAREHUB_GATEWAY_TLS_KEY=str(pki.server.key),
                        CAREHUB_GATEWAY_CLIENT_CA=str(pki.ca.cert), CAREHUB_GATEWAY_PARTNERS_FILE=str(partners))

    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for org, i in PEOPLE:
            pub.publish(registration(org, i))
        pub.flush()
    hub.settle("ingest", "identity", "timeline", timeout_s=240)
    with Publisher(hub.bootstrap, topic=hub.topic("provider.events")) as pub:
        for n, (org, i, days_ago, diagnosis) in enumerate(ADMISSIONS):
            pub.publish(admission(n, org, i, days_ago, diagnosis))
        pub.flush()
    hub.settle("ingest", "identity", "timeline", "population", timeout_s=240)

    def published_values() -> dict[tuple[str, str, str], ind.IndicatorValue]:
        latest: dict[tuple[str, str, str], ind.IndicatorValue] = {}
        for record in hub.read("indicators"):
            if record.key is None:
                continue
            indicator, unit, window = record.key.decode().split("|")
            if record.value:
                latest[(indicator, unit, window)] = ind.IndicatorValue.FromString(record.value)
            else:  # a tombstone: the value is gone (a month that left the 12 months as the as-of moved on)
                latest.pop((indicator, unit, window), None)
        return latest

    def published_lists() -> dict[str, rk.CaseList]:
        return {r.key.decode(): rk.CaseList.FromString(r.value) for r in hub.read("caselists") if r.key and r.value}

    def counted() -> dict[tuple[str, str, str], ind.IndicatorValue] | None:
        hub.assert_running()
        values = published_values()
        mine = values.get(("acsc_all", f"practice:{A}", "12m"))
        region = values.get(("acsc_all", "region", "12m"))
        lists = published_lists()
        admitted = {f.factor: f.value for e in lists.get(A, rk.CaseList()).entries for f in e.factors
                    if e.local_id == f"{PREFIX[A]}0000"}
        if (mine is None or mine.numerator != 4 or region is None or region.numerator != 8
                or admitted.get("emergency_admissions") != 2 or not lists.get(B, rk.CaseList()).entries):
            return None
        return values

    eventually(counted, 240, "A's four and the region's eight admissions counted; A's and B's lists")

    # the gateway must have read what was last published before the page can show it
    wait_serving(gateway_target, pki.ca.cert, pki.clients[A])
    client = PartnerClient(gateway_target, ca_file=pki.ca.cert, cert_file=pki.clients[A].cert,
                           key_file=pki.clients[A].key)
    entitled = (f"practice:{A}", f"practice:{B}", "region")

    def served() -> tuple[list[ind.IndicatorValue], rk.CaseList, pb.ReviewPacks] | None:
        published = {k: (v.suppressed, v.numerator) for k, v in published_values().items() if k[1] in entitled}
        newest = published_lists()[A]
        got = client.indicators()
        case_list = client.caselist()
        packs = client.review_packs()
        if len(packs.packs) != sum(org == A for org, *_ in ADMISSIONS):  # one per emergency ACSC admission
            print(f"not yet served: {len(packs.packs)} review packs")
            return None
        differ = {k for k in published.keys() | {key(v) for v in got}
                  if published.get(k) != {key(v): (v.suppressed, v.numerator) for v in got}.get(k)}
        if differ or list(case_list.entries) != list(newest.entries):
            print(f"not yet served: {sorted(differ)[:5]} of {len(differ)} values differ; list "
                  f"{[e.local_id for e in case_list.entries]} vs {[e.local_id for e in newest.entries]}")
            return None  # the gateway has not read the newest yet
        return got, case_list, packs

    gateway_values, gateway_list, gateway_packs = eventually(
        served, 60, "the gateway serves A the values, list and review packs last published")
    assert {v.unit for v in gateway_values} == {f"practice:{A}", f"practice:{B}", "region"}

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    hub.start_command("dashboard", ["dashboard", "--gateway", gateway_target, "--ca", str(pki.ca.cert),
                                    "--cert", str(pki.clients[A].cert), "--key", str(pki.clients[A].key),
                                    "--port", str(port), "--name", "Riverside Surgery", "--cache-s", "1"])
    hub.wait_listening(port)
    status, _ = http_status(url)
    assert status == 200

    def page_as_served() -> tuple[str, Dom, rk.CaseList] | None:
        """The page chromium built, when A's case list on it is the one the gateway serves before and after
        (tier cut-offs are recomputed as assessments arrive, so the list may still change for a while)."""
        before = client.caselist()
        page = dump_dom(url)
        after = client.caselist()
        dom = Dom(page)
        shown = {e.attrs["data-local-id"] for e in dom.find("tr") if "data-local-id" in e.attrs}
        if list(before.entries) != list(after.entries) or shown != {e.local_id for e in after.entries}:
            return None
        return page, dom, after

    page, dom, gateway_list = eventually(page_as_served, 120, "a page showing the case list the gateway serves")
    client.close()
    assert "Riverside Surgery" in dom.one("h1", "practice").text and A in dom.one("h1", "practice").text

    # A's value beside the region's, as the gateway sent them: 4 admissions among A's 30 people
    by_key = {key(v): v for v in gateway_values}
    card = dom.one("div", "indicator", data_indicator="acsc_all")
    mine, region = by_key[("acsc_all", f"practice:{A}", "12m")], by_key[("acsc_all", "region", "12m")]
    assert (mine.numerator, mine.denominator) == (4, SIZE[A])
    assert dom.one("td", "value", within=dom.one("tr", "mine", within=card)).text == fmt(4 / SIZE[A] * 100_000,
                                                                                         "rate")
    assert (region.numerator, region.denominator) == (8, sum(SIZE.values()))
    assert dom.one("td", "value", within=dom.one("tr", data_unit="region", within=card)).text == shown(region)
    # the nation beside the region: the national reference values the gateway sent, and where none was found
    national = [row.text for row in dom.find("tr", "national", within=dom.one("div", "indicator",
                                                                              data_indicator="acsc_chronic"))]
    assert any("8.1%" in t and "context only" in t for t in national), national
    assert any("no national value" in t for t in national), national
    # the funnel plot: a point per practice A may see, A's highlighted
    points = {e.attrs["data-unit"]: e for e in dom.find("circle", "point", within=card)}
    assert set(points) == {f"practice:{A}", f"practice:{B}"}
    assert "mine" in points[f"practice:{A}"].classes and "mine" not in points[f"practice:{B}"].classes
    assert dom.find("line", "region", within=dom.one("svg", "funnel", within=card))
    # withheld figures read "withheld", never a number; withheld months are gaps with a marker, not zeros
    withheld_headlines = 0
    for v in gateway_values:
        if v.unit != f"practice:{A}":
            continue
        block = dom.one("div", "indicator", data_indicator=v.indicator)
        if v.window in ("12m", "now"):
            cell = dom.one("td", "value", within=dom.one("tr", "mine", within=block))
            assert cell.text == shown(v)
            withheld_headlines += v.suppressed
            assert not v.suppressed or cell.text == "withheld"
        elif len(v.window) == 7:  # a month
            marks = dom.find(None, "month", within=block, data_month=v.window)
            if v.suppressed:
                assert [m.tag for m in marks] == ["rect"] and "withheld" in marks[0].classes
            elif v.HasField("value"):
                assert [m.tag for m in marks] == ["circle"]
    assert withheld_headlines >= 1  # A's one acute admission (N10) in 12 months is withheld

    # A's case list under A's record ids, with the NEW mark, and no one else's people
    rows = {e.attrs["data-local-id"]: e for e in dom.elements if "data-local-id" in e.attrs and e.tag == "tr"}
    assert set(rows) == {e.local_id for e in gateway_list.entries} and rows
    assert all(local_id.startswith(PREFIX[A]) for local_id in rows)
    for entry in gateway_list.entries:
        assert ("NEW" in rows[entry.local_id].text) == entry.new_this_week
        assert entry.tier.replace("_", " ") in rows[entry.local_id].text
    others = published_lists()[B]
    assert others.entries and all(e.local_id not in page for e in others.entries)
    for prefix in (PREFIX[B], PREFIX[C], "H-"):
        assert prefix not in page
    assert f"practice:{C}" not in page and C not in dom.text
    # A's review packs: one per emergency ACSC admission of its people, under A's record ids, none of B's
    cards = dom.find("div", "pack")
    assert len(cards) == len(gateway_packs.packs) == 4  # in the gateway's order, newest admission first
    assert {c.attrs["data-local-id"] for c in cards} == {f"{PREFIX[A]}{i:04d}" for i in (0, 1, 2)}
    for card, pack in zip(cards, gateway_packs.packs, strict=True):
        assert card.attrs["data-local-id"] == pack.local_id and pack.admission.primary_diagnosis in card.text
        assert "Outcome: not recorded yet" in card.text
    person_ids = {rk.RiskAssessment.FromString(r.value).person_id for r in hub.read("risk.assessments") if r.value}
    assert len(person_ids) == len(PEOPLE)
    assert not any(pid in page for pid in person_ids)

    # the same reads as JSON
    status, body = http_status(url + "data.json")
    data = json.loads(body)
    assert status == 200 and data["org"] == A and [e["local_id"] for e in data["caselist"]["entries"]] == list(rows)
    assert not any(pid.encode() in body for pid in person_ids)

    # the page's reads are the partner's own reads: the gateway audited them under A
    audit = [al.AuditRecord.FromString(v) for v in hub.values("audit")]
    assert {(A, "get_indicators"), (A, "get_caselist"), (A, "get_review_packs")} <= {(r.org, r.action) for r in audit}

    # the gateway stops: the page says so, with 503, and shows no figures
    hub.stop(gateway)
    eventually(lambda: http_status(url)[0] == 503, 60, "the page answers 503 once the gateway is gone")
    down = Dom(dump_dom(url))
    alert = down.one("div", "error")
    assert "gateway is unavailable" in alert.text and gateway_target in alert.text
    assert not down.find("svg") and not any("data-local-id" in e.attrs for e in down.elements)
