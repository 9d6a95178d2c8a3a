"""Creating a faust App with carehub's defaults and the broker profile's client settings.

The broker-specific values (batching, group timings, fetch wait) come from
carehub/kafka/profile.py, the one place that knows the embedded broker's defects; the guard
test tests/integration/test_broker_defect.py tells when its batching workaround can go.
"""

from __future__ import annotations

import faust

from carehub.kafka.profile import client_profile
from carehub.kafka.transport import broker_urls
from carehub.settings import Settings


def faust_app(app_id: str, settings: Settings, bootstrap: str) -> faust.App:
    """A faust App on ``bootstrap`` with carehub's defaults for the configured broker profile."""
    datadir = settings.data_dir / "faust" / f"{app_id}-{settings.worker_name}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    profile = client_profile(settings)
    return faust.App(
        app_id,
        # carehub://: faust's aiokafka transport with the profile's fetch wait (carehub/kafka/transport.py)
        broker=broker_urls(bootstrap, profile.fetch_max_wait_ms),
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        # faust's web server binds 0.0.0.0 unless told otherwise, even when unused
        web_enabled=False,
        web_bind="127.0.0.1",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=60.0,
        **profile.faust_settings(),
    )
