"""The dashboard page's HTML, its sections, the short cache of gateway reads and the HTTP answers.

No gateway here (tests/integration/test_dashboard_page.py runs a real one, and a real browser):
the HTML is rendered from values shaped as the gateway sends them, and the web app is driven
through httpx's in-process ASGI transport with sections whose reads are plain functions.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from carehub import tlsgen
from carehub.dashboard.page import PageContext, render_caselist, render_error, render_indicators, render_page
from carehub.dashboard.sections import SECTIONS, Section
from carehub.dashboard.server import HEADERS, make_app
from carehub.dashboard.source import GatewaySource, org_of_certificate
from carehub.partner import PartnerAuthError, PartnerClient, PartnerError, PartnerUnavailable
from carehub.v1 import indicators_pb2 as ind
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import risk_pb2 as rk
from tests.dashboard_values import ORG, case_list, region_values

CTX = PageContext(org=ORG, name="Riverside Surgery", gateway="hub.example:50051",
                  read_at=datetime(2026, 12, 5, 9, 0, tzinfo=UTC))


def page() -> str:
    return render_page(CTX, [("indicators", "Indicators", render_indicators(region_values(), CTX)),
                             ("caselist", "Case-finding list", render_caselist(case_list(), CTX))])


def test_the_page_names_the_practice_and_shows_its_figures_beside_the_region_and_peers() -> None:
    html = page()
    assert html.startswith("<!DOCTYPE html>")
    assert '<h1 class="practice">Riverside Surgery (B86001)</h1>' in html
    assert '<tr class="mine" data-unit="practice:B86001"><th>you (B86001)</th><td class="value">1,200.0</td>' in html
    assert '<tr class="comparator" data-unit="region"><th>region</th><td class="value">800.0</td>' in html
    assert 'data-unit="practice:B86003"><th>B86003</th><td class="value withheld">withheld</td>' in html
    assert "above 95% limit" in html
    assert '<a href="#indicators">Indicators</a><a href="#caselist">Case-finding list</a>' in html
    # nothing to load: no script, no external reference
    assert "<script" not in html and "http://" not in html and "https://" not in html and "src=" not in html


def test_the_nation_is_shown_beside_the_region_and_a_missing_national_value_says_so() -> None:
    values = region_values()
    mine = values[0]
    mine.dsr, mine.dsr_ci_low, mine.dsr_ci_high = 1_150.0, 600.5, 1_900.25
    mine.standard_population = "European Standard Population 2013"
    published = ind.ReferenceValue(name="nhsof_x", indicator="acsc_all", title="NHS OF x", area="England",
                                   period="2017/18", status="published", value=13.8, unit="percent",
                                   comparison="definition_differs", source_publisher="NHS Digital")
    missing = ind.ReferenceValue(name="nhsof_y", indicator="acsc_all", title="NHS OF 2.3.i", status="not_found")
    other = ind.ReferenceValue(name="z", indicator="readmission_30d", title="other", status="published", value=1.0)
    html = render_indicators(values, CTX, [published, missing, other])
    assert ('<tr class="national" data-reference="nhsof_x"><th>nation (England, 2017/18)</th>'
            '<td class="value">13.8%</td><td class="ci" colspan="3">the definition differs; NHS Digital</td>') in html
    assert "no national value (NHS OF 2.3.i: not found)" in html
    assert 'data-reference="z"' not in html  # another indicator's value stays with that indicator
    assert "age/sex standardised: 1,150.0 (600.5-1,900.2), European Standard Population 2013" in html
    mine.ClearField("dsr")
    mine.dsr_not_computed = "too_few_events"
    assert "age/sex standardised: not computed (too few events)" in render_indicators(values, CTX)


def test_the_case_list_is_under_the_practices_record_ids_with_new_marks_and_care_plans() -> None:
    html = render_caselist(case_list(), CTX)
    assert '<tr data-local-id="P-0000"><td class="local-id">P-0000</td><td>high</td><td>3.60</td><td>31.0%</td>' in html
    assert html.count('<span class="new">NEW</span>') == 1
    assert 'SC001 (social worker), 2025-11-01; <span class="overdue">OVERDUE (due 2025-10-09)</span>' in html
    assert "emergency admissions 2 +1.5; long term conditions 1 (heart failure) +0.3" in html
    assert "segment hint" not in html  # an unscored factor gives no points and is not listed
    assert "none received" in html  # P-0007: no care plan known, which is not "no plan"
    assert "2 people in tiers very_high, high (1 new this week)" in html


def test_empty_sections_say_why() -> None:
    assert "No indicator values yet" in render_indicators([], CTX)
    assert "No case list yet" in render_caselist(rk.CaseList(org=ORG), CTX)
    nobody = rk.CaseList(org=ORG, tiers=["very_high", "high"])
    nobody.as_of.FromSeconds(1_764_460_800)
    assert "Nobody in the listed tiers (very_high, high)" in render_caselist(nobody, CTX)


def test_text_from_the_hub_is_escaped() -> None:
    cl = case_list()
    cl.entries[0].local_id = '<img src=x onerror="alert(1)">'
    cl.entries[0].care_plan.contact_role = "<b>role</b>"
    html = render_caselist(cl, CTX)
    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<b>role</b>" not in html


def test_the_error_page_says_what_failed_and_shows_no_figures() -> None:
    html = render_error(CTX, "cannot reach the partner gateway at hub.example:50051 (<refused>)", unavailable=True)
    assert "partner gateway is unavailable" in html and "(&lt;refused&gt;)" in html
    assert "<svg" not in html and "data-local-id" not in html
    assert "refused or failed" in render_error(CTX, "permission denied", unavailable=False)


class Reads:
    """Sections whose reads are counted and can be made to fail, in place of gateway calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: PartnerError | None = None

    def read(self, client: PartnerClient) -> Any:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return pb.IndicatorsResponse(values=region_values()) if self.calls % 2 else case_list()

    def sections(self) -> tuple[Section[Any], ...]:
        return (Section("indicators", "Indicators",
                        lambda c: (self.read(c), pb.IndicatorsResponse(values=region_values()))[1],
                        SECTIONS[0].render, SECTIONS[0].as_json),
                Section("caselist", "Case-finding list", lambda c: (self.read(c), case_list())[1],
                        SECTIONS[1].render, SECTIONS[1].as_json))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def source(reads: Reads, clock: Clock, cache_s: float = 5.0) -> GatewaySource:
    return GatewaySource(cast(PartnerClient, None), reads.sections(), cache_s=cache_s, clock=clock)


def test_reads_are_cached_for_a_few_seconds_and_failures_are_not() -> None:
    reads, clock = Reads(), Clock()
    src = source(reads, clock)
    first = src.snapshot()
    assert reads.calls == 2 and set(first.data) == {"indicators", "caselist"}
    clock.now += 4.9
    assert src.snapshot() is first and reads.calls == 2
    clock.now += 0.2
    reads.fail = PartnerUnavailable("down")
    with pytest.raises(PartnerUnavailable):
        src.snapshot()
    with pytest.raises(PartnerUnavailable):  # tried again, not answered from the failure or the old figures
        src.snapshot()
    assert reads.calls == 4
    reads.fail = None
    assert src.snapshot() is not first and src.reads == 2


class Web:
    """Requests to the app in this process (httpx's ASGI transport: no socket)."""

    def __init__(self, src: GatewaySource) -> None:
        self.app = make_app(src, ORG, "Riverside Surgery", "hub.example:50051")

    def get(self, path: str) -> httpx.Response:
        async def get() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://page") as c:
                return await c.get(path)

        return asyncio.run(get())


def test_the_app_answers_the_page_and_json_and_503_or_502_when_the_gateway_fails() -> None:
    reads, clock = Reads(), Clock()
    src = source(reads, clock, cache_s=0.0)
    web = Web(src)
    ok = web.get("/")
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html")
    assert all(ok.headers[name] == v for name, v in HEADERS.items())
    assert "Riverside Surgery (B86001)" in ok.text and 'data-local-id="P-0000"' in ok.text
    data = web.get("/data.json").json()
    assert data["org"] == ORG and [e["local_id"] for e in data["caselist"]["entries"]] == ["P-0000", "P-0007"]
    assert {v["unit"] for v in data["indicators"]} >= {"practice:B86001", "region"}
    reads.fail = PartnerUnavailable("cannot reach the partner gateway at hub.example:50051: nothing listens there")
    down = web.get("/")
    assert down.status_code == 503 and down.headers["retry-after"] == "5"
    assert "gateway is unavailable" in down.text and "nothing listens there" in down.text
    assert web.get("/data.json").status_code == 503
    reads.fail = PartnerAuthError("permission denied")
    refused = web.get("/")
    assert refused.status_code == 502 and "refused or failed" in refused.text
    assert web.get("/nowhere").status_code == 404


def test_the_practice_is_the_one_its_certificate_names(tmp_path: Path) -> None:
    ca = tlsgen.make_ca(tmp_path)
    assert org_of_certificate(tlsgen.issue_client(ca, ORG, tmp_path).cert) == ORG
    with pytest.raises(PartnerError, match="not found"):
        org_of_certificate(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(PartnerError, match="cannot read"):
        org_of_certificate(tmp_path / "junk.pem")


def test_carehub_dashboard_binds_loopback_by_default_and_refuses_a_missing_certificate(tmp_path: Path) -> None:
    from carehub.cli import build_parser

    args = build_parser().parse_args(["dashboard", "--ca", "ca.pem", "--cert", "c.pem", "--key", "c.key"])
    assert (args.host, args.port, args.gateway, args.cache_s) == ("127.0.0.1", 8080, "127.0.0.1:50051", 5.0)
    args.cert = str(tmp_path / "missing.pem")
    with pytest.raises(SystemExit, match="carehub dashboard: client certificate file not found"):
        args.func(args)
