from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from google.protobuf import json_format

from carehub.v1 import care_event_pb2 as ce

ROOT = Path(__file__).resolve().parents[2]


def test_generate_writes_the_region_as_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "region.jsonl"
    result = subprocess.run([sys.executable, "-m", "carehub", "generate", "--people", "150", "--seed", "5",
                             "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().splitlines()
    assert f"wrote {len(lines)} records for 150 people" in result.stdout
    parsed = 0
    for line in lines:
        try:
            json_format.ParseDict(orjson.loads(line), ce.CareEvent())
            parsed += 1
        except (orjson.JSONDecodeError, json_format.ParseError):
            pass
    assert 0.9 * len(lines) < parsed < len(lines)  # a few malformed lines are there on purpose
