"""A stage worker whose consumer is moved ahead once, as faust moved one after a rebalance.

    python -m tests.integration.order_stage SOURCE_TOPIC OUT_FILE

Each record processed is appended to OUT_FILE as "partition offset". A record ``jump:N`` moves the
worker's consumer to offset N of its partition, from the stage's own task, the way the runtime
reads a partition again: records past the next offset then come first, and the runtime must read
the partition again from the next offset and hand the stage every record in order. Settings come
from the environment (CAREHUB_*), as for every carehub worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

from faust.worker import Worker

from carehub.kafka.transport import Consumer
from carehub.runtime.stage import Batch, StageRuntime
from carehub.settings import load_settings


class Order:
    def __init__(self, runtime: StageRuntime, out: Path) -> None:
        self.runtime, self.out = runtime, out

    async def process_batch(self, batch: Batch) -> None:
        with self.out.open("a") as f:
            for record in batch:
                f.write(f"{record.partition} {record.offset}\n")
        consumer = self.runtime.app.consumer
        assert isinstance(consumer, Consumer)
        for record in batch:
            if record.value.startswith(b"jump:"):
                await consumer.read_again(record.topic, record.partition, int(record.value[5:]))


def main() -> None:
    source, out = sys.argv[1], Path(sys.argv[2])
    settings = load_settings()
    assert settings.kafka_bootstrap
    runtime = StageRuntime("orderstage", settings, settings.kafka_bootstrap)
    runtime.batch_stage("order", [source], Order(runtime, out), size=10, within_s=0.2)
    Worker(runtime.app, loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
