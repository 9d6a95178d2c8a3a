"""Typed settings read from CAREHUB_* environment variables.

Every service builds one ``Settings`` at start-up; a bad value stops it there with a
message naming the variable, rather than failing later in the middle of a stream.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_KEY_BYTES = 32


class Profile(StrEnum):
    """``demo`` may make up a local pseudonymisation key; ``production`` never does."""

    DEMO = "demo"
    PRODUCTION = "production"


class BrokerProfile(StrEnum):
    """Which Kafka flavour the workers talk to; selects the client settings in carehub.kafka.profile."""

    EMBEDDED = "embedded"  # Tansu, the embedded Kafka-protocol broker
    KAFKA = "kafka"  # Apache Kafka or another fully compatible cluster


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREHUB_", extra="ignore", frozen=True)

    profile: Profile = Profile.PRODUCTION
    # host:port[,host:port]; unset means "start the embedded broker" where a command can.
    kafka_bootstrap: str | None = None
    broker_profile: BrokerProfile = BrokerProfile.EMBEDDED
    # overrides the broker profile's fetch wait (carehub/kafka/profile.py) for every consumer
    kafka_fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=60_000)
    # overrides the broker profile's producer linger for every producer (faust's, the SDK's, the CLI's)
    kafka_linger_ms: int | None = Field(default=None, ge=0, le=10_000)
    # Hex- or text-encoded secret of at least 32 bytes; see pseudonym_key_bytes().
    pseudonym_key: SecretStr | None = None
    data_dir: Path = Path(".carehub")

    topic_prefix: str = "carehub"
    provider_topics: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["provider.events"])
    partitions: int = Field(default=4, ge=1, le=256)
    # Replication of carehub's topics and faust's changelogs; default 1 embedded, 3 on Kafka.
    replication_factor: int | None = Field(default=None, ge=1, le=7)

    ingest_batch_size: int = Field(default=2000, ge=1, le=100_000)
    ingest_batch_within_s: float = Field(default=0.2, gt=0, le=60)
    ingest_max_batch_bytes: int = Field(default=512 * 1024, ge=16 * 1024, le=900 * 1024)
    dedupe_retention_days: int = Field(default=7, ge=1, le=3650)
    max_future_skew_hours: float = Field(default=24.0, ge=0)
    earliest_event_year: int = Field(default=1990, ge=1800)
    deadletter_retention_days: int = Field(default=30, ge=1, le=3650)

    # indicator definitions (indicators/*.toml, codelists/*.toml); the packaged ones by default
    indicator_definitions: Path | None = None
    # counts from 1 to this are withheld from published indicators (0: nothing withheld)
    suppression_max: int = Field(default=7, ge=0, le=100)
    indicators_publish_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # which practice a fact counts for: the one the person is registered with now, or the one
    # registered when the admission, discharge or attendance happened (docs/indicator-semantics.md)
    indicators_attribution: Literal["current", "at_event"] = "current"
    # population health (services/population, services/caselists; docs/risk.md): the risk model is a data
    # folder with risk/model.toml and the code lists it names (the packaged carehub/domain/data by default)
    risk_definitions: Path | None = None
    # how often the tier cut-offs are recomputed over every score (caselists) and read back (population)
    risk_cutoffs_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    caselist_tiers: int = Field(default=2, ge=1, le=10)  # the model's top this many tiers are listed
    # a community or social-care team lists the people it had an event for within this many days
    caselist_involved_within_days: int = Field(default=365, ge=1, le=3650)
    caselist_new_within_days: int = Field(default=7, ge=1, le=365)  # "new": entered the list this recently
    caselist_publish_interval_s: float = Field(default=5.0, gt=0, le=3600)  # lists recomputed, changes published
    # avoidable-admission review packs (services/reviews): the share of each practice's emergency ACSC
    # admissions that get a pack (1.0: all; below: a deterministic sample drawn from each admission's pack id)
    review_sample_fraction: float = Field(default=1.0, gt=0, le=1)
    review_taxonomy: Path | None = None  # verdicts and contributory factors (TOML); the packaged one by default
    # partner gateway (services/gateway): gRPC over TLS
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=50051, ge=0, le=65535)
    gateway_tls_cert: Path | None = None       # server certificate chain (PEM)
    gateway_tls_key: Path | None = None        # its private key (PEM)
    gateway_client_ca: Path | None = None      # CA that signs partner certificates (PEM)
    gateway_require_client_cert: bool = True   # mutual TLS; False: bearer tokens over TLS are enough
    gateway_partners_file: Path | None = None  # partners, their entitlements and token hashes (TOML)
    # SHA-256 fingerprints of revoked client certificates, for the gateway and the FHIR door (carehub/revocation.py)
    revoked_certificates: Path | None = None
    # a plaintext port serving only the gRPC health service, for native kubelet probes (0: none)
    gateway_health_host: str = "127.0.0.1"
    gateway_health_port: int = Field(default=0, ge=0, le=65535)
    gateway_heartbeat_s: float = Field(default=10.0, gt=0, le=3600)
    gateway_subscriber_buffer: int = Field(default=1000, ge=1, le=1_000_000)
    # HL7 v2 over MLLP (services/mllp)
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    mllp_max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    mllp_idle_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    # writes in flight per sending facility (MSH-4); its next message waits (carehub/runtime/fairness.py)
    mllp_max_inflight_per_sender: int = Field(default=4, ge=1, le=1024)
    hl7_mapping: Path | None = None      # the ADT mapping table (TOML); the packaged one by default
    hl7_facilities: Path | None = None   # sending facility (MSH-4) -> organisation (TOML); packaged by default
    # FHIR R4 in (services/fhir): HTTPS only, like the gateway
    fhir_host: str = "127.0.0.1"
    fhir_port: int = Field(default=8443, ge=0, le=65535)
    fhir_tls_cert: Path | None = None        # server certificate chain (PEM)
    fhir_tls_key: Path | None = None         # its private key (PEM)
    fhir_client_ca: Path | None = None       # CA that signs senders' client certificates (PEM)
    fhir_require_client_cert: bool = True    # mutual TLS; False: a bearer token over TLS is enough
    fhir_senders_file: Path | None = None    # sending organisations, their sectors and token hashes (TOML)
    fhir_mapping: Path | None = None         # FHIR codes -> care event fields (TOML); the packaged one by default
    fhir_max_bundle_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Bundles in flight per sending organisation; one more is answered 429 (carehub/runtime/fairness.py)
    fhir_max_inflight_per_sender: int = Field(default=8, ge=1, le=1024)
    # FHIR out (services/gateway/fhir_delivery.py): alerts POSTed to partners that ask for FHIR
    fhir_out_ca: Path | None = None          # CA bundle that verifies partners' endpoints (system CAs if unset)
    fhir_out_client_cert: Path | None = None  # the hub's client certificate for partners that want mTLS
    fhir_out_client_key: Path | None = None
    fhir_out_timeout_s: float = Field(default=10.0, gt=0, le=300)
    fhir_out_retry_initial_s: float = Field(default=1.0, gt=0, le=3600)
    fhir_out_retry_max_s: float = Field(default=300.0, gt=0, le=86_400)
    # an alert still undelivered this long after its first attempt goes to the FHIR dead letters
    fhir_out_give_up_after_s: float = Field(default=24 * 3600.0, gt=0, le=30 * 86_400)
    alerts_involved_within_days: int = Field(default=90, ge=1, le=3650)
    alerts_retention_days: int = Field(default=90, ge=1, le=3650)  # how far back a resume cursor may reach
    audit_retention_days: int = Field(default=2555, ge=1, le=36500)  # seven years
    # data-quality feedback (carehub.quality): how long it is kept, and when an event counts as late
    quality_retention_days: int = Field(default=400, ge=1, le=3650)
    quality_late_after_hours: float = Field(default=24.0, gt=0, le=24 * 3650)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0 disables the endpoint
    web_port: int = Field(default=6066, ge=1, le=65535)  # faust's own web server, bound to loopback
    worker_name: str = "worker-1"
    log_level: str = "info"

    @field_validator("provider_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("at least one provider topic is required")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for hostport in value.split(","):
            host, _, port = hostport.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_key(self) -> Settings:
        if self.pseudonym_key is not None:
            _decode_key(self.pseudonym_key.get_secret_value())
        return self

    @property
    def topic_replication_factor(self) -> int:
        if self.replication_factor is not None:
            return self.replication_factor
        return 1 if self.broker_profile is BrokerProfile.EMBEDDED else 3

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def source_topics(self) -> list[str]:
        return [self.topic(t) for t in self.provider_topics]

    @property
    def dedupe_retention(self) -> timedelta:
        return timedelta(days=self.dedupe_retention_days)

    @property
    def max_future_skew(self) -> timedelta:
        return timedelta(hours=self.max_future_skew_hours)

    def pseudonym_key_bytes(self) -> bytes:
        """The pseudonymisation key; in the demo profile a random one kept under data_dir.

        Services that pseudonymise call this at start-up, so a missing key stops them
        before they touch Kafka; commands that never see identifiers do not need one.
        """
        if self.pseudonym_key is not None:
            return _decode_key(self.pseudonym_key.get_secret_value())
        if self.profile is not Profile.DEMO:
            raise SystemExit(
                "carehub: CAREHUB_PSEUDONYM_KEY is required outside the demo profile "
                "(at least 32 random bytes, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        path = self.data_dir / "demo-pseudonym.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(MIN_KEY_BYTES))
            path.chmod(0o600)
        return _decode_key(path.read_text().strip())


def _decode_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"CAREHUB_PSEUDONYM_KEY must hold at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; exit with a readable message when they are wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"  CAREHUB_{'_'.join(str(p) for p in e['loc']).upper() or '*'}: {e['msg']}" for e in exc.errors()]
        raise SystemExit("carehub: invalid configuration\n" + "\n".join(lines)) from None
