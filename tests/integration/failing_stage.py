"""A stage worker that misbehaves once on its first batch holding b"poison"; test_stage_runtime runs it.

    python -m tests.integration.failing_stage fail|slow SOURCE_TOPIC OUT_FILE MARKER_FILE

``fail``: that batch raises. ``slow``: that batch takes 5 s (time to stop the worker mid-batch).
Either happens once, before MARKER_FILE exists; a restarted worker processes the same records
normally. Each processed record's value is appended to OUT_FILE, one per line. Settings come from
the environment (CAREHUB_*), as for every carehub worker.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from faust.worker import Worker

from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import load_settings


class MisbehavesOnce:
    def __init__(self, mode: str, out: Path, marker: Path) -> None:
        self.mode, self.out, self.marker = mode, out, marker

    async def process_batch(self, batch: Batch) -> None:
        if any(r.value == b"poison" for r in batch) and not self.marker.exists():
            self.marker.touch()
            if self.mode == "fail":
                raise RuntimeError("the poison record's first batch fails")
            await asyncio.sleep(5.0)
        with self.out.open("ab") as f:
            f.writelines(r.value + b"\n" for r in batch)


def main() -> None:
    mode, source, out, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    assert mode in ("fail", "slow"), mode
    settings = load_settings()
    assert settings.kafka_bootstrap
    runtime = StageRuntime("misbehaving", settings, settings.kafka_bootstrap)
    runtime.batch_stage("misbehaving", [source], MisbehavesOnce(mode, out, marker), size=100, within_s=0.5)
    Worker(runtime.app, loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
