"""carehub's faust transport (carehub/kafka/transport.py), without a broker or a network connection.

faust must find ``carehub://`` through the ``faust.transports`` entry point, and a worker's
aiokafka consumer must be built with the broker profile's fetch wait instead of faust's 1500 ms.
tests/integration/test_kafka_transport.py checks the same value in a running consumer's fetcher.
"""

from __future__ import annotations

import asyncio
import secrets
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.exceptions import ImproperlyConfigured
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from yarl import URL

from carehub.kafka import transport
from carehub.kafka.profile import EMBEDDED, KAFKA, client_profile
from carehub.runtime.app import faust_app
from carehub.settings import Settings, load_settings


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(kafka_bootstrap="127.0.0.1:9", topic_prefix=f"u{secrets.token_hex(5)}",
                         data_dir=tmp_path, pseudonym_key=secrets.token_hex(32), **overrides)


def test_faust_resolves_the_carehub_scheme_through_the_entry_point() -> None:
    (ep,) = entry_points(group="faust.transports", name=transport.SCHEME)
    assert ep.value == "carehub.kafka.transport:Transport"
    assert TRANSPORTS.get_alias(transport.SCHEME) == ep.value  # loaded from the namespace, not built in
    assert TRANSPORTS.by_url("carehub://127.0.0.1:9092?fetch_max_wait_ms=37") is transport.Transport
    assert transport.Transport.Consumer is transport.Consumer


def test_broker_urls_carry_the_fetch_wait_to_every_host() -> None:
    assert transport.broker_urls("a:9092, b:9093", 37) == \
        "carehub://a:9092?fetch_max_wait_ms=37,carehub://b:9093?fetch_max_wait_ms=37"
    with pytest.raises(ValueError, match="at least 1"):
        transport.broker_urls("a:9092", 0)


@pytest.mark.parametrize(("urls", "message"), [
    (["carehub://a:9092"], "must carry"),
    (["carehub://a:9092?fetch_max_wait_ms=37", "carehub://b:9092?fetch_max_wait_ms=38"], "disagree"),
    (["carehub://a:9092?fetch_max_wait_ms=soon"], "positive integer"),
    (["carehub://a:9092?fetch_max_wait_ms=0"], "positive integer"),
])
def test_bad_fetch_waits_are_refused(urls: list[str], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        transport.fetch_max_wait_ms_of([URL(u) for u in urls])


def test_a_host_without_the_parameter_takes_the_others() -> None:
    assert transport.fetch_max_wait_ms_of([URL("carehub://a:9092?fetch_max_wait_ms=37"), URL("carehub://b:9092")]) == 37


def worker_consumer_wait(app: faust.App) -> tuple[int, int]:
    """(the transport's fetch wait, that of the aiokafka consumer the worker's thread builds); no I/O."""

    async def build() -> tuple[int, int]:
        consumer = app.consumer
        assert isinstance(app.transport, transport.Transport)
        assert isinstance(consumer, transport.Consumer)
        thread = consumer._thread
        assert isinstance(thread, transport.ConsumerThread)
        try:
            aiokafka_consumer = thread._create_worker_consumer(app.transport)
            try:
                assert aiokafka_consumer._fetcher is None  # built, not started: no connection made
                return app.transport.fetch_max_wait_ms, int(aiokafka_consumer._fetch_max_wait_ms)
            finally:
                await aiokafka_consumer.stop()
        finally:
            thread.thread_loop.close()  # the never-started thread's own loop

    return asyncio.run(build())


def test_the_worker_consumer_gets_the_configured_fetch_wait(tmp_path: Path) -> None:
    app = faust_app("transport-unit", settings(tmp_path, kafka_fetch_max_wait_ms=37), "127.0.0.1:9")
    assert [u.scheme for u in app.conf.broker_consumer] == ["carehub"]
    assert worker_consumer_wait(app) == (37, 37)


@pytest.mark.parametrize(("broker_profile", "expected"), [("embedded", EMBEDDED.fetch_max_wait_ms),
                                                          ("kafka", KAFKA.fetch_max_wait_ms)])
def test_without_an_override_the_profile_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 broker_profile: str, expected: int) -> None:
    monkeypatch.delenv("CAREHUB_KAFKA_FETCH_MAX_WAIT_MS", raising=False)
    app = faust_app("transport-unit", settings(tmp_path, broker_profile=broker_profile), "127.0.0.1:9")
    assert worker_consumer_wait(app) == (expected, expected)


def test_a_linger_override_reaches_faust_and_the_other_clients(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """CAREHUB_KAFKA_LINGER_MS: fewer, larger batches where a broker's cost is per stored batch."""
    monkeypatch.delenv("CAREHUB_KAFKA_LINGER_MS", raising=False)
    assert client_profile(settings(tmp_path)).linger_ms == EMBEDDED.linger_ms
    s = settings(tmp_path, kafka_linger_ms=25)
    profile = client_profile(s)
    assert profile.linger_ms == 25 and profile.fetch_max_wait_ms == EMBEDDED.fetch_max_wait_ms
    assert faust_app("transport-unit", s, "127.0.0.1:9").conf.producer_linger == 0.025
    assert profile.kafka_python_producer()["linger_ms"] == profile.aiokafka_producer()["linger_ms"] == 25


def test_faust_own_transport_is_refused_by_our_thread(tmp_path: Path) -> None:
    app = faust_app("transport-unit", settings(tmp_path, kafka_fetch_max_wait_ms=37), "127.0.0.1:9")
    plain_transport = faust.App("plain", broker="kafka://127.0.0.1:9").transport
    assert type(plain_transport) is faust_aiokafka.Transport

    async def build() -> None:
        consumer = app.consumer
        assert isinstance(consumer, transport.Consumer)
        thread = consumer._thread
        try:
            with pytest.raises(ImproperlyConfigured, match="needs carehub's transport"):
                thread._create_worker_consumer(plain_transport)
        finally:
            thread.thread_loop.close()

    asyncio.run(build())
