from __future__ import annotations

from pathlib import Path

import pytest

from carehub.settings import Profile, load_settings


def test_production_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREHUB_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("CAREHUB_PROFILE", "production")
    settings = load_settings()
    with pytest.raises(SystemExit, match="CAREHUB_PSEUDONYM_KEY is required"):
        settings.pseudonym_key_bytes()


def test_short_key_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREHUB_PSEUDONYM_KEY", "abcd")
    with pytest.raises(SystemExit, match="at least 32 bytes"):
        load_settings()


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREHUB_PROFILE", "demo")
    monkeypatch.setenv("CAREHUB_PARTITIONS", "0")
    with pytest.raises(SystemExit, match="CAREHUB_PARTITIONS"):
        load_settings()
    monkeypatch.setenv("CAREHUB_PARTITIONS", "4")
    monkeypatch.setenv("CAREHUB_KAFKA_BOOTSTRAP", "no-port")
    with pytest.raises(SystemExit, match="CAREHUB_KAFKA_BOOTSTRAP"):
        load_settings()


def test_demo_key_is_made_once_and_kept_out_of_the_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAREHUB_PSEUDONYM_KEY", raising=False)
    settings = load_settings(profile="demo", data_dir=tmp_path)
    assert settings.profile is Profile.DEMO
    key = settings.pseudonym_key_bytes()
    assert len(key) == 32
    assert settings.pseudonym_key_bytes() == key
    assert (tmp_path / "demo-pseudonym.key").stat().st_mode & 0o077 == 0


def test_provider_topics_from_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREHUB_PROVIDER_TOPICS", "acute.adt, primary.events")
    settings = load_settings(profile="demo")
    assert settings.source_topics == ["carehub.acute.adt", "carehub.primary.events"]
