"""The shipped Prometheus, Grafana and OpenTelemetry files: valid, and about metrics that exist.

Prometheus's own ``promtool`` checks the configuration and the rules and runs the rules' unit
tests (deploy/prometheus/rules.test.yml). It is a real dependency of these tests: without it
they fail, they do not skip (Debian: ``apt-get install prometheus``; .ci/run installs it).
"""

from __future__ import annotations

import importlib
import json
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy/prometheus"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
PROVISIONING = ROOT / "deploy/grafana/provisioning"
COMPOSE = ROOT / "docker-compose.yml"

CAREHUB_SERVICES = ("ingest", "identity", "timeline", "indicators", "alerts", "gateway", "mllp", "fhir", "population",
                    "caselists", "reviews")
METRICS_MODULES = ("carehub.runtime.metrics", *(f"services.{s}.metrics" for s in CAREHUB_SERVICES))
REQUIRED_ALERTS = ("CarehubFeedSilent", "CarehubStageLagGrowing", "CarehubStageStalled", "CarehubDeadLettersSpiking",
                   "CarehubAlertDeliverySlow")
# Series Prometheus itself makes, which expressions may use besides carehub's.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: install Prometheus (Debian: apt-get install prometheus); "
                    "these tests need the real tool and do not skip without it")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# -- Prometheus -------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """The rules test is not vacuous: change one expected alert and promtool fails."""
    shutil.copy(PROMETHEUS_DIR / "rules.yml", tmp_path / "rules.yml")
    text = (PROMETHEUS_DIR / "rules.test.yml").read_text()
    assert "source_org: RR8" in text
    (tmp_path / "rules.test.yml").write_text(text.replace("source_org: RR8", "source_org: RR9", 1))
    result = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    assert result.returncode != 0


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS_DIR / "rules.yml")["groups"] for rule in group["rules"]]


def test_every_required_alert_has_a_rule_and_a_unit_test() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tests = load_yaml(PROMETHEUS_DIR / "rules.test.yml")["tests"]
    tested = {t["alertname"] for test in tests for t in test.get("alert_rule_test", []) if t.get("exp_alerts")}
    for name in REQUIRED_ALERTS:
        assert name in alerts, f"no alert rule {name}"
        assert name in tested, f"no promtool test in which {name} fires"
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_service_down_alert_watches_every_carehub_service() -> None:
    [rule] = [r for r in rules() if r.get("alert") == "CarehubServiceDown"]
    match = re.fullmatch(r'up\{job=~"([\w|-]+)"\} == 0', rule["expr"])
    assert match, rule["expr"]
    assert set(match.group(1).split("|")) == set(CAREHUB_SERVICES)


def test_prometheus_scrapes_every_carehub_service_in_compose() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in config["scrape_configs"]}
    compose = load_yaml(COMPOSE)
    for service in CAREHUB_SERVICES:
        env = compose["services"][service]["environment"]
        assert targets.get(service) == [f"{service}:{env['CAREHUB_METRICS_PORT']}"]
        assert env["CAREHUB_METRICS_HOST"] == "0.0.0.0"
    assert targets["otel-collector"] == ["otel-collector:8888"]
    assert set(config["rule_files"]) == {"rules.yml"}


# -- metric names -----------------------------------------------------------------------------


def defined_series() -> set[str]:
    """Every series name carehub's prometheus_client definitions can expose."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count"), "info": ("_info",)}
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("carehub_"):
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def recorded_series() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
NAME = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")


def series_in(expr: str) -> set[str]:
    """The carehub series (and Prometheus's own) that a PromQL expression reads."""
    bare = QUOTED.sub('""', expr)
    return {n for n in NAME.findall(bare) if n.startswith(("carehub_", "carehub:")) or n in PROMETHEUS_SERIES}


def test_series_in_finds_names_in_expressions() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(carehub_x_seconds_bucket{job="carehub_y"}[$__rate_interval])))'
            ' / on () group_left () carehub:z:rate5m and up == 0')
    assert series_in(expr) == {"carehub_x_seconds_bucket", "carehub:z:rate5m", "up"}


def test_the_registry_has_carehub_metrics() -> None:
    names = defined_series()
    assert {"carehub_ingest_received_total", "carehub_feed_last_event_timestamp_seconds",
            "carehub_gateway_delivery_seconds_bucket", "carehub_identity_decisions_total",
            "carehub_mllp_messages_total", "carehub_fhir_bundles_total",
            "carehub_fhir_response_seconds_bucket"} <= names


def test_rules_use_only_metrics_that_exist() -> None:
    known = defined_series() | recorded_series() | PROMETHEUS_SERIES
    for rule in rules():
        used = series_in(rule["expr"])
        assert used, f"{rule.get('record') or rule.get('alert')} reads no carehub series"
        assert used <= known, f"{rule.get('record') or rule.get('alert')}: unknown {sorted(used - known)}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def test_the_three_dashboards_are_there() -> None:
    titles = {json.loads(p.read_text())["title"] for p in dashboard_files()}
    assert titles == {"carehub / Feeds", "carehub / Pipeline", "carehub / Partners"}


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_is_sane_and_uses_only_metrics_that_exist(path: Path) -> None:
    board = json.loads(path.read_text())
    known = defined_series() | recorded_series() | PROMETHEUS_SERIES
    assert board["uid"] == f"carehub-{path.stem}"
    assert isinstance(board["schemaVersion"], int)
    panels = list(all_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = 0
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "prometheus"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
            used = series_in(target["expr"])
            assert used, f"{panel['title']}: {target['expr']} reads no series"
            assert used <= known, f"{path.name} / {panel['title']}: unknown {sorted(used - known)}"
            exprs += 1
    assert exprs >= 10


def dashboard_series(stem: str) -> set[str]:
    board = json.loads((DASHBOARDS / f"{stem}.json").read_text())
    return {n for p in all_panels(board["panels"]) for t in p.get("targets", []) for n in series_in(t["expr"])}


def test_dashboards_show_what_operators_asked_for() -> None:
    assert {"carehub_feed_last_event_timestamp_seconds", "carehub_ingest_received_total",
            "carehub_ingest_rejected_total", "carehub_ingest_degraded_total", "carehub_feed_rejected_total",
            "carehub_feed_duplicates_total"} <= dashboard_series("feeds")  # data-quality feedback per provider
    assert {"carehub_stage_records_total", "carehub_stage_lag_seconds", "carehub_ingest_batch_seconds_bucket",
            "carehub_identity_batch_seconds_bucket", "carehub_timeline_batch_seconds_bucket",
            "carehub_ingest_rejected_total", "carehub_identity_decisions_total",
            "carehub_indicators_values"} <= dashboard_series("pipeline")
    assert {"carehub_alerts_raised_total", "carehub_gateway_subscribers", "carehub_gateway_delivery_seconds_bucket",
            "carehub_gateway_acknowledgements_total"} <= dashboard_series("partners")


# -- Grafana provisioning, the collector, compose ---------------------------------------------


def test_grafana_provisioning_matches_compose_and_the_dashboards() -> None:
    sources = load_yaml(PROVISIONING / "datasources/carehub.yml")["datasources"]
    by_uid = {s["uid"]: s for s in sources}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["jaeger"]["url"] == "http://jaeger:16686"
    provider = load_yaml(PROVISIONING / "dashboards/carehub.yml")["providers"][0]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).name).exists()


def test_collector_pipeline_is_complete_and_reaches_jaeger() -> None:
    config = load_yaml(ROOT / "deploy/otel/collector.yaml")
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{kind} {name} is used but not configured"
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    compose = load_yaml(COMPOSE)
    for service in CAREHUB_SERVICES:
        env = compose["services"][service]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http.rsplit(':', 1)[1]}"
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"


def test_compose_runs_every_carehub_service_and_the_stack() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    for service in CAREHUB_SERVICES:
        assert services[service]["entrypoint"] == ["python", "-m", f"carehub.services.{service}"]
        assert services[service]["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert services["feeder"]["command"][0] == "demo-feed"
    for service in CAREHUB_SERVICES:  # every one waits for the topics
        assert services[service]["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    metrics_ports = [p for s in CAREHUB_SERVICES for p in services[s]["ports"] if p.endswith(":9464")]
    assert len(set(metrics_ports)) == len(CAREHUB_SERVICES)  # one host port each
    assert "make_demo_pki" in services["pki"]["command"][0]
    for name in ("kafka", "otel-collector", "jaeger", "prometheus", "grafana"):
        image = services[name]["image"]
        name_part, _, tag = image.rpartition(":")
        assert name_part and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image}"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":", 1)[0]).exists(), f"{name} mounts a missing {volume}"


def test_compose_mllp_listens_on_2575_without_the_pseudonym_key() -> None:
    services = load_yaml(COMPOSE)["services"]
    mllp = services["mllp"]
    env = mllp["environment"]
    assert env["CAREHUB_MLLP_HOST"] == "0.0.0.0" and env["CAREHUB_MLLP_PORT"] == "2575"
    assert "127.0.0.1:2575:2575" in mllp["ports"]
    assert "CAREHUB_PSEUDONYM_KEY" not in env  # it never pseudonymises; ingest does
    assert services["ingest"]["environment"]["CAREHUB_PSEUDONYM_KEY"].startswith("${CAREHUB_PSEUDONYM_KEY:?")
    assert mllp["read_only"] is True and mllp["cap_drop"] == ["ALL"]


def test_compose_fhir_serves_https_on_8443_with_the_pki_material_and_without_the_pseudonym_key() -> None:
    services = load_yaml(COMPOSE)["services"]
    fhir = services["fhir"]
    env = fhir["environment"]
    assert env["CAREHUB_FHIR_HOST"] == "0.0.0.0" and env["CAREHUB_FHIR_PORT"] == "8443"
    assert "127.0.0.1:8443:8443" in fhir["ports"]
    assert env["OTEL_SERVICE_NAME"] == "carehub-fhir"
    assert "CAREHUB_PSEUDONYM_KEY" not in env  # it never pseudonymises; ingest does
    assert fhir["read_only"] is True and fhir["cap_drop"] == ["ALL"]
    # HTTPS only, mutual TLS: the files come from the pki one-shot's volume, mounted read-only
    assert env["CAREHUB_FHIR_REQUIRE_CLIENT_CERT"] == "true"
    assert "pki:/var/lib/carehub-pki:ro" in fhir["volumes"]
    assert fhir["depends_on"]["pki"] == {"condition": "service_completed_successfully"}
    for name in ("CAREHUB_FHIR_TLS_CERT", "CAREHUB_FHIR_TLS_KEY", "CAREHUB_FHIR_CLIENT_CA",
                 "CAREHUB_FHIR_SENDERS_FILE"):
        assert Path(env[name]).parent == Path("/var/lib/carehub-pki"), name


def test_the_compose_pki_command_makes_what_the_gateway_needs(tmp_path: Path) -> None:
    """Runs the one-shot `pki` service's script here, into a temporary directory."""
    from cryptography import x509

    from services.gateway.partners import load_partners

    services = load_yaml(COMPOSE)["services"]
    script = services["pki"]["command"][0]
    assert '"/var/lib/carehub-pki"' in script
    script = script.replace('"/var/lib/carehub-pki"', repr(str(tmp_path)))
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    env = services["gateway"]["environment"]
    files = {k: tmp_path / Path(env[k]).name for k in ("CAREHUB_GATEWAY_TLS_CERT", "CAREHUB_GATEWAY_TLS_KEY",
                                                       "CAREHUB_GATEWAY_CLIENT_CA", "CAREHUB_GATEWAY_PARTNERS_FILE")}
    assert all(p.exists() for p in files.values())
    assert all(Path(env[k]).parent == Path("/var/lib/carehub-pki") for k in files)
    cert = x509.load_pem_x509_certificate(files["CAREHUB_GATEWAY_TLS_CERT"].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gateway" in names.get_values_for_type(x509.DNSName)
    partners = load_partners(files["CAREHUB_GATEWAY_PARTNERS_FILE"])
    assert len(partners) > 10
    assert (tmp_path / "B86001.pem").exists()


def test_the_compose_pki_command_makes_what_the_fhir_endpoint_needs(tmp_path: Path) -> None:
    """Runs the `pki` script, then builds the FHIR endpoint's TLS context and senders from its files."""
    from cryptography import x509

    from carehub.domain.fhir.senders import load_senders
    from carehub.settings import Settings
    from carehub.synthetic import RegionConfig
    from carehub.synthetic.orgs import build_directory
    from carehub.v1 import care_event_pb2 as ce
    from services.fhir.tls import server_ssl_context

    services = load_yaml(COMPOSE)["services"]
    script = services["pki"]["command"][0].replace('"/var/lib/carehub-pki"', repr(str(tmp_path)))
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    env = services["fhir"]["environment"]
    files = {k: tmp_path / Path(env[k]).name for k in ("CAREHUB_FHIR_TLS_CERT", "CAREHUB_FHIR_TLS_KEY",
                                                       "CAREHUB_FHIR_CLIENT_CA", "CAREHUB_FHIR_SENDERS_FILE")}
    assert all(p.exists() for p in files.values())
    cert = x509.load_pem_x509_certificate(files["CAREHUB_FHIR_TLS_CERT"].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fhir" in names.get_values_for_type(x509.DNSName)  # its name on the compose network
    settings = Settings(fhir_tls_cert=files["CAREHUB_FHIR_TLS_CERT"], fhir_tls_key=files["CAREHUB_FHIR_TLS_KEY"],
                        fhir_client_ca=files["CAREHUB_FHIR_CLIENT_CA"], fhir_require_client_cert=True)
    server_ssl_context(settings)  # what the endpoint does first: raises on unusable material
    # every organisation of the synthetic region may send, with its own sector
    senders = load_senders(files["CAREHUB_FHIR_SENDERS_FILE"])
    config = RegionConfig()
    orgs = build_directory(config, random.Random(f"{config.seed}/orgs")).all
    assert len(senders) == len(orgs) > 10
    for org in orgs:
        sender = senders.by_org(org.code)
        assert sender is not None and sender.sector == org.sector, org.code
    assert {ce.Sector.Name(org.sector) for org in orgs} >= {"SECTOR_ACUTE", "SECTOR_PRIMARY_CARE", "SECTOR_CARE_HOME"}
