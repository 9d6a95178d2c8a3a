"""Faust application settings, including the one place that knows the embedded broker's quirks.

The ``embedded`` profile (Tansu) carries the workaround for its high-watermark defect
(``producer_max_batch_size=1``: a multi-record produce batch makes ListOffsets report a
wrong end offset, and faust table recovery then loses updates) and shorter group-join
timings. Measurements and reasons: shared/domain/embedded-broker.md. The guard test
tests/integration/test_broker_defect.py tells when the workaround can go.
"""

from __future__ import annotations

from typing import Any

import faust

from carehub.settings import BrokerProfile, Settings

EMBEDDED: dict[str, Any] = {
    "producer_max_batch_size": 1,
    # Tansu holds a group join for session_timeout / 2; 10 s gives ~5 s joins.
    "broker_session_timeout": 10,
    "broker_heartbeat_interval": 1,
    "topic_disable_leader": True,
}

KAFKA: dict[str, Any] = {
    "topic_disable_leader": True,
}


def broker_profile_settings(profile: BrokerProfile) -> dict[str, Any]:
    return dict(EMBEDDED if profile is BrokerProfile.EMBEDDED else KAFKA)


def faust_app(app_id: str, settings: Settings, bootstrap: str) -> faust.App:
    """A faust App on ``bootstrap`` with carehub's defaults for the configured broker profile."""
    datadir = settings.data_dir / "faust" / f"{app_id}-{settings.worker_name}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=",".join(f"kafka://{hp.strip()}" for hp in bootstrap.split(",")),
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
        **broker_profile_settings(settings.broker_profile),
    )
