"""A stage worker with one faust table; test_stage_runtime runs it to check table recovery.

    python -m tests.integration.table_stage write|report SOURCE_TOPIC OUT_FILE

``write``: each record ``key=value`` of SOURCE_TOPIC sets ``rows[key] = value``; after each batch
the number of records written so far is appended to OUT_FILE. ``report``: the first record of
SOURCE_TOPIC (another topic, so that no row is written again) appends the table as recovered,
``{"rows": n, "digest": ...}``, to OUT_FILE. Both define the same app and table, so ``report``
recovers what ``write`` wrote, from the changelog alone (tables are in memory). Settings come
from the environment (CAREHUB_*), as for every carehub worker.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from faust.worker import Worker

from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import load_settings

TABLE = "rows"


def digest(rows: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(rows.items())).encode()).hexdigest()


class Writes:
    def __init__(self, table: Any, source: str, out: Path) -> None:
        self.table, self.source, self.out, self.written = table, source, out, 0

    async def process_batch(self, batch: Batch) -> None:
        for record in batch:
            key, _, value = record.value.decode().partition("=")
            with batch.state_for(self.source, record.partition):
                self.table[key] = value
        self.written += len(batch.records)
        with self.out.open("a") as f:
            f.write(f"{self.written}\n")


class Reports:
    def __init__(self, table: Any, out: Path) -> None:
        self.table, self.out = table, out

    async def process_batch(self, batch: Batch) -> None:
        rows = {str(k): str(v) for k, v in self.table.items()}
        with self.out.open("a") as f:
            f.write(json.dumps({"rows": len(rows), "digest": digest(rows)}) + "\n")


def main() -> None:
    mode, source, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    assert mode in ("write", "report"), mode
    settings = load_settings()
    assert settings.kafka_bootstrap
    runtime = StageRuntime("tablestage", settings, settings.kafka_bootstrap)
    table = runtime.table(TABLE, partitions=1, value_type=str)
    stage = Writes(table, source, out) if mode == "write" else Reports(table, out)
    runtime.batch_stage(mode, [source], stage, size=500, within_s=0.5)
    Worker(runtime.app, loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
