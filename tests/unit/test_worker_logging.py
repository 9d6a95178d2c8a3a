"""A worker at log level WARNING must not turn DEBUG logging on (faust's spinner does, see faust_worker)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest
from faust.worker import Worker

from carehub.runtime.worker import faust_worker
from carehub.settings import load_settings


@pytest.fixture
def root_logging() -> Iterator[None]:
    """setup_logging replaces the root logger's handlers and level: put them back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def app() -> faust.App:
    return faust.App("carehub-test-logging", broker="kafka://127.0.0.1:1", web_enabled=False)


@pytest.mark.usefixtures("root_logging")
def test_a_carehub_worker_at_warning_does_not_build_debug_records() -> None:
    worker = faust_worker(app(), load_settings(log_level="warning"))
    worker._setup_logging()
    assert logging.getLogger().level == logging.WARNING
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)


@pytest.mark.usefixtures("root_logging")
def test_faust_s_own_worker_at_warning_turns_debug_on() -> None:
    """What faust_worker undoes; if faust stops doing it, this test says so."""
    worker = Worker(app(), loglevel="warning", quiet=True, redirect_stdouts=False)
    worker._setup_logging()
    assert logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
