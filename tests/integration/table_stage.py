"""A stage worker with one faust table; test_stage_runtime runs it to check table recovery.

    python -m tests.integration.table_stage write|report SOURCE_TOPIC OUT_FILE

``write``: each record ``key=value`` of SOURCE_TOPIC sets ``rows[key] = value``; after each batch
the number of records written so far is appended to OUT_FILE. ``report``: the first record of
SOURCE_TOPIC (another topic, so that no row is written again) appends the table as recovered,
``{"rows": n, "digest": ..., "boxes": ...}``, to OUT_FILE. Both define the same app and tables, so
``report`` recovers what ``write`` wrote, from the changelogs alone (tables are in memory). A second
table, ``boxes``, holds each value as a ``Box`` through a ``ValueCodec``: ``boxes`` in the report is
the digest of its rows when every value came back a ``Box``, else the types found. Settings come
from the environment (CAREHUB_*), as for every carehub worker.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faust.worker import Worker

from carehub.runtime.stage import Batch, StageRuntime, ValueCodec
from carehub.settings import load_settings

TABLE = "rows"


@dataclass(frozen=True)
class Box:
    """A value of a type of the stage's own, held decoded by its table."""

    text: str

    def to_bytes(self) -> bytes:
        return b"box:" + self.text.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Box:
        assert data.startswith(b"box:"), data[:20]
        return cls(data[4:].decode())


BOX_CODEC: ValueCodec[Box] = ValueCodec(Box.to_bytes, Box.from_bytes)


def digest(rows: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(rows.items())).encode()).hexdigest()


class Writes:
    def __init__(self, table: Any, boxes: Any, source: str, out: Path) -> None:
        self.table, self.boxes, self.source, self.out, self.written = table, boxes, source, out, 0

    async def process_batch(self, batch: Batch) -> None:
        for record in batch:
            key, _, value = record.value.decode().partition("=")
            with batch.state_for(self.source, record.partition):
                self.table[key] = value
                self.boxes[key] = Box(value)
        self.written += len(batch.records)
        with self.out.open("a") as f:
            f.write(f"{self.written}\n")


class Reports:
    def __init__(self, table: Any, boxes: Any, out: Path) -> None:
        self.table, self.boxes, self.out = table, boxes, out

    async def process_batch(self, batch: Batch) -> None:
        rows = {str(k): str(v) for k, v in self.table.items()}
        boxes = dict(self.boxes.items())
        kinds = sorted({type(v).__name__ for v in boxes.values()})
        boxed = digest({str(k): v.text for k, v in boxes.items()}) if kinds == ["Box"] else kinds
        with self.out.open("a") as f:
            f.write(json.dumps({"rows": len(rows), "digest": digest(rows), "boxes": boxed}) + "\n")


def main() -> None:
    mode, source, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    assert mode in ("write", "report"), mode
    settings = load_settings()
    assert settings.kafka_bootstrap
    runtime = StageRuntime("tablestage", settings, settings.kafka_bootstrap)
    table = runtime.table(TABLE, partitions=1, value_type=str)
    boxes = runtime.table("boxes", partitions=1, codec=BOX_CODEC)
    stage = Writes(table, boxes, source, out) if mode == "write" else Reports(table, boxes, out)
    runtime.batch_stage(mode, [source], stage, size=500, within_s=0.5)
    Worker(runtime.app, loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
