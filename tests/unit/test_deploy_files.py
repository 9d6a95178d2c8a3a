"""The deployment files validate against their schemas (no Docker engine or helm binary here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = [sys.executable, "-m", "check_jsonschema"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHECK, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec() -> None:
    result = run("--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_values_match_the_chart_schema() -> None:
    chart = ROOT / "deploy/helm/carehub"
    result = run("--schemafile", str(chart / "values.schema.json"), str(chart / "values.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_schema_rejects_a_bad_value(tmp_path: Path) -> None:
    chart = ROOT / "deploy/helm/carehub"
    bad = tmp_path / "values.yaml"
    text = (chart / "values.yaml").read_text()
    assert "replicationFactor: 3" in text
    bad.write_text(text.replace("replicationFactor: 3", "replicationFactor: none"))
    result = run("--schemafile", str(chart / "values.schema.json"), str(bad))
    assert result.returncode != 0
