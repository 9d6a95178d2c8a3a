"""The demo's partners file (carehub/demo.py): what `make run`'s gateway reads, and what each partner may see.

Its practices see every practice's indicator values, their locality's and the region's, so that
the dashboard page `make run` serves has peers to compare with; every other organisation keeps
the gateway's default (its own units and the region).
"""

from __future__ import annotations

import random
from pathlib import Path

from carehub.demo import DASHBOARD_PRACTICE, demo_partners
from carehub.settings import load_settings
from carehub.synthetic import RegionConfig
from carehub.synthetic.orgs import build_directory
from services.gateway.partners import default_units, load_partners


def test_demo_practices_see_their_peers_locality_and_region_and_others_the_default(tmp_path: Path) -> None:
    env = demo_partners(load_settings(data_dir=tmp_path), people=200, seed=42)
    partners = load_partners(env["CAREHUB_GATEWAY_PARTNERS_FILE"])
    directory = build_directory(RegionConfig(people=200, seed=42), random.Random("42/orgs"))
    practices = [org.code for org in directory.practices]
    assert {p.org for p in partners} == {org.code for org in directory.all}
    assert DASHBOARD_PRACTICE in practices and len(practices) == 12
    mine = partners.by_org(DASHBOARD_PRACTICE)
    assert mine is not None
    assert {f"practice:{p}" for p in practices} | {"region"} <= mine.units
    assert {u for u in mine.units if u.startswith("locality:")} == {"locality:LOC01"}
    hospital = partners.by_org("RR8")
    assert hospital is not None and hospital.units == default_units("RR8")
    assert (tmp_path / "pki" / f"{DASHBOARD_PRACTICE}.pem").exists()  # the dashboard's certificate
