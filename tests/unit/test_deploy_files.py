"""The deployment files validate against their schemas (no Docker engine or helm binary here)."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = [sys.executable, "-m", "check_jsonschema"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHECK, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec() -> None:
    result = run("--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_values_match_the_chart_schema() -> None:
    chart = ROOT / "deploy/helm/carehub"
    result = run("--schemafile", str(chart / "values.schema.json"), str(chart / "values.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_schema_rejects_a_bad_value(tmp_path: Path) -> None:
    chart = ROOT / "deploy/helm/carehub"
    bad = tmp_path / "values.yaml"
    text = (chart / "values.yaml").read_text()
    assert "replicationFactor: 3" in text
    bad.write_text(text.replace("replicationFactor: 3", "replicationFactor: none"))
    result = run("--schemafile", str(chart / "values.schema.json"), str(bad))
    assert result.returncode != 0


# --- The Helm chart, rendered -------------------------------------------------------------
# Rendered offline with Helm's own template engine (helm-python-sdk: Helm's Go SDK as a
# shared library, no helm binary), then each object is checked against the Kubernetes
# OpenAPI schemas of a given release (kubernetes-validate, strict: unknown fields fail).
# Both are dev dependencies: without them these tests fail rather than skip.

CHART = ROOT / "deploy/helm/carehub"
KUBERNETES = "1.30"  # oldest release checked; kubernetes-validate ships schemas up to 1.37
SERVICES = {  # component -> `carehub` subcommand
    "ingest": "ingest",
    "identity": "identity",
    "timeline": "timeline",
    "indicators": "indicators-worker",
    "alerts": "alerts-worker",
    "gateway": "gateway",
    "mllp": "mllp",
    "fhir": "fhir",
    "population": "population",
    "caselists": "caselists-worker",
    "reviews": "reviews-worker",
}
# Services that never pseudonymise, so never get the key: the pods facing partners and providers,
# and those that read only pseudonymised topics.
WITHOUT_KEY = {"indicators", "gateway", "mllp", "fhir", "population", "caselists", "reviews"}
REQUIRED: dict[str, Any] = {
    "kafka": {"bootstrap": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "pseudonymKey": {"existingSecret": "carehub-pseudonym-key"},
    "gateway": {"tls": {"existingSecret": "carehub-gateway-tls"}, "partners": {"name": "carehub-partners"}},
    "fhir": {"tls": {"existingSecret": "carehub-fhir-tls"}, "senders": {"name": "carehub-fhir-senders"}},
}
EVERYTHING: dict[str, Any] = {
    "kafka": {"bootstrap": "kafka:9092", "partitions": 6},
    "pseudonymKey": {"existingSecret": "carehub-pseudonym-key"},
    "gateway": {
        "replicas": 2,
        "tls": {"existingSecret": "carehub-gateway-tls"},
        "clientCa": {"kind": "ConfigMap", "name": "partner-ca"},
        "partners": {"kind": "Secret", "name": "carehub-partners"},
        "service": {"type": "LoadBalancer", "annotations": {"example.org/lb": "nlb"}},
    },
    "mllp": {
        "replicas": 8,  # more than kafka.partitions: the listener is no consumer, so not capped
        "facilities": {"name": "carehub-hl7-facilities"},
        "service": {"type": "LoadBalancer", "port": 12575, "annotations": {"example.org/lb": "internal"}},
        "idleTimeoutSeconds": 120.5,
    },
    "fhir": {
        "replicas": 7,  # more than kafka.partitions: the endpoint is no consumer, so not capped
        "tls": {"existingSecret": "carehub-fhir-tls", "certKey": "cert.pem", "keyKey": "key.pem"},
        "clientCa": {"kind": "ConfigMap", "name": "provider-ca"},
        "senders": {"kind": "Secret", "name": "carehub-fhir-senders"},
        "mapping": {"name": "carehub-fhir-mapping"},
        "service": {"type": "LoadBalancer", "port": 443, "annotations": {"example.org/lb": "nlb"}},
        "maxBundleBytes": 8388608,
    },
    "ingest": {"autoscaling": {"enabled": True, "maxReplicas": 12}},
    "timeline": {"autoscaling": {"enabled": True}},
    "alerts": {"autoscaling": {"enabled": True, "minReplicas": 2}},
    "population": {"autoscaling": {"enabled": True, "maxReplicas": 8}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}, "scrapeTimeout": "10s"}},
    "otel": {
        "tracesExporter": "otlp",
        "exporterOtlpEndpoint": "http://otel-collector:4318",
        "resourceAttributes": "deployment.environment=test",
        "headersSecret": {"name": "otel-headers"},
    },
    "podAntiAffinity": "hard",
    "imagePullSecrets": [{"name": "regcred"}],
    "podAnnotations": {"example.org/a": "b"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    "extraEnv": [{"name": "CAREHUB_LOG_LEVEL", "value": "debug"}],
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's objects for these values (release "carehub" in namespace "care")."""
    import helm_python as helm  # dev dependency helm-python-sdk

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="carehub", namespace="care", is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in text.split("\n---"):
            obj = helm.values_from_yaml(doc)  # Helm's own YAML reading, as on install
            if obj:
                objects.append(obj)
    return objects


@functools.cache
def rendered(which: str) -> list[dict[str, Any]]:
    return render({"required": REQUIRED, "everything": EVERYTHING}[which])


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("which", ["required", "everything"])
def test_chart_renders_objects_kubernetes_accepts(which: str) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]  # dev dependency kubernetes-validate

    objects = rendered(which)
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD's kind: checked in test_service_monitor_scrapes_every_service
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    deployments = [("Deployment", f"carehub-{s}") for s in SERVICES]
    assert set(deployments) <= set(kinds)
    assert ("Service", "carehub-gateway") in kinds and ("Service", "carehub-metrics") in kinds
    assert ("Service", "carehub-mllp") in kinds and ("Service", "carehub-fhir") in kinds
    assert not [k for k in kinds if k[0] in ("Secret", "ConfigMap")], "secrets are taken by reference only"
    hpas = {name for kind, name in kinds if kind == "HorizontalPodAutoscaler"}
    assert hpas == (set() if which == "required" else {"carehub-ingest", "carehub-timeline", "carehub-alerts",
                                                        "carehub-population"})


@pytest.mark.parametrize("which", ["required", "everything"])
def test_every_pod_is_hardened(which: str) -> None:
    pods = [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in rendered(which)
            if o["kind"] in ("Deployment", "Job")]
    assert len(pods) == len(SERVICES) + 1  # and the topics Job
    for name, pod in pods:
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        [container] = pod["containers"]
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"], name
        # the only writable places: emptyDirs on /tmp and the data dir
        empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty}
        assert writable == {"/tmp", "/var/lib/carehub"}, name
        assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] not in empty), name
        assert env_of(container)["CAREHUB_DATA_DIR"] == "/var/lib/carehub", name


def test_one_deployment_per_service_with_its_probes() -> None:
    objects = rendered("required")
    for service, command in SERVICES.items():
        deployment = find(objects, "Deployment", f"carehub-{service}")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [command]
        env = env_of(container)
        assert env["CAREHUB_KAFKA_BOOTSTRAP"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
        assert env["CAREHUB_METRICS_HOST"] == "0.0.0.0" and env["CAREHUB_METRICS_PORT"] == "9464"
        assert env["OTEL_SERVICE_NAME"] == f"carehub-{service}"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9464
        probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
        if service == "gateway":
            # the partner port is TLS only: native gRPC probes use the plaintext health-only port
            assert ports["grpc"] == 50051 and ports["grpc-health"] == 50052
            assert env["CAREHUB_GATEWAY_HEALTH_PORT"] == "50052"
            assert all(p["grpc"]["port"] == 50052 for p in probes)
            assert probes[1]["grpc"]["service"] == "carehub.v1.PartnerGateway"
        else:
            assert [p["httpGet"] for p in probes] == [{"path": "/live", "port": "metrics"},
                                                      {"path": "/ready", "port": "metrics"},
                                                      {"path": "/live", "port": "metrics"}]
        if service == "mllp":
            # MLLP is plain TCP on 2575, listening on every interface of the pod
            assert ports["mllp"] == 2575
            assert {p["name"]: p["protocol"] for p in container["ports"]}["mllp"] == "TCP"
            assert env["CAREHUB_MLLP_HOST"] == "0.0.0.0" and env["CAREHUB_MLLP_PORT"] == "2575"
            assert env["CAREHUB_MLLP_MAX_MESSAGE_BYTES"] == "1048576"  # an integer, not 1.048576e+06
            assert env["CAREHUB_MLLP_IDLE_TIMEOUT_S"] == "600"
            assert env["CAREHUB_MLLP_MAX_INFLIGHT_PER_SENDER"] == "4"
            assert "CAREHUB_HL7_FACILITIES" not in env  # the packaged facilities file by default
        if service == "fhir":
            # HTTPS on 8443, listening on every interface of the pod; probed on the metrics port
            assert ports["https"] == 8443
            assert env["CAREHUB_FHIR_HOST"] == "0.0.0.0" and env["CAREHUB_FHIR_PORT"] == "8443"
            assert env["CAREHUB_FHIR_MAX_BUNDLE_BYTES"] == "2097152"  # an integer, not 2.097152e+06
            assert env["CAREHUB_FHIR_REQUIRE_CLIENT_CERT"] == "true"
            assert env["CAREHUB_FHIR_MAX_INFLIGHT_PER_SENDER"] == "8"
            assert "CAREHUB_FHIR_MAPPING" not in env  # the packaged mapping by default
    gateway = find(objects, "Service", "carehub-gateway")
    assert gateway["spec"]["ports"] == [{"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP"}]
    assert gateway["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    mllp = find(objects, "Service", "carehub-mllp")
    assert mllp["spec"]["type"] == "ClusterIP"  # inside the cluster unless asked otherwise
    assert mllp["spec"]["ports"] == [{"name": "mllp", "port": 2575, "targetPort": "mllp", "protocol": "TCP"}]
    assert mllp["spec"]["selector"]["app.kubernetes.io/component"] == "mllp"
    assert "clusterIP" not in mllp["spec"]  # one address for every replica, unlike the headless metrics Service
    fhir = find(objects, "Service", "carehub-fhir")
    assert fhir["spec"]["type"] == "ClusterIP"
    assert fhir["spec"]["ports"] == [{"name": "https", "port": 8443, "targetPort": "https", "protocol": "TCP"}]
    assert fhir["spec"]["selector"]["app.kubernetes.io/component"] == "fhir"
    assert "clusterIP" not in fhir["spec"]


@pytest.mark.parametrize("which", ["required", "everything"])
def test_identity_indicators_and_caselists_run_exactly_one_replica(which: str) -> None:
    for service in ("identity", "indicators", "caselists"):
        spec = find(rendered(which), "Deployment", f"carehub-{service}")["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, service


def test_stream_workers_scale_at_most_to_the_partition_count() -> None:
    objects = rendered("everything")  # 6 partitions; ingest asks for up to 12
    limits = {
        name: (o["spec"]["minReplicas"], o["spec"]["maxReplicas"])
        for o in objects if o["kind"] == "HorizontalPodAutoscaler" for name in [o["metadata"]["name"]]
    }
    assert limits == {"carehub-ingest": (1, 6), "carehub-timeline": (1, 4), "carehub-alerts": (2, 4),
                      "carehub-population": (1, 6)}
    for service in ("ingest", "timeline", "alerts", "population"):
        assert "replicas" not in find(objects, "Deployment", f"carehub-{service}")["spec"]  # the HPA owns it
    capped = render({**REQUIRED, "timeline": {"replicas": 9}})
    assert find(capped, "Deployment", "carehub-timeline")["spec"]["replicas"] == 4
    # the MLLP listener consumes nothing: its replicas are not capped, and it has no autoscaler
    assert find(objects, "Deployment", "carehub-mllp")["spec"]["replicas"] == 8
    assert find(rendered("required"), "Deployment", "carehub-mllp")["spec"]["replicas"] == 1
    # nor is the FHIR endpoint
    assert find(objects, "Deployment", "carehub-fhir")["spec"]["replicas"] == 7
    assert find(rendered("required"), "Deployment", "carehub-fhir")["spec"]["replicas"] == 1


@pytest.mark.parametrize("which", ["required", "everything"])
def test_secrets_are_referenced_and_reach_only_the_services_that_use_them(which: str) -> None:
    objects = rendered(which)
    key = {"secretKeyRef": {"name": "carehub-pseudonym-key", "key": "key"}}
    for service in SERVICES:
        [container] = find(objects, "Deployment", f"carehub-{service}")["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        if service in WITHOUT_KEY:
            assert "CAREHUB_PSEUDONYM_KEY" not in env, service
            assert "carehub-pseudonym-key" not in str(container), service  # by no other route either
        else:
            assert env["CAREHUB_PSEUDONYM_KEY"] == key, service
    pod = find(objects, "Deployment", "carehub-gateway")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = env_of(container)
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "gateway-files"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "gateway-files"]
    files = {
        item["path"]: (kind, source["name"], item["key"])
        for entry in volume["projected"]["sources"] for kind, source in entry.items() for item in source["items"]
    }
    expected = {
        "tls.crt": ("secret", "carehub-gateway-tls", "tls.crt"),
        "tls.key": ("secret", "carehub-gateway-tls", "tls.key"),
        "client-ca.crt": ("secret", "carehub-gateway-tls", "ca.crt"),
        "partners.toml": ("configMap", "carehub-partners", "partners.toml"),
    }
    if which == "everything":
        expected |= {"client-ca.crt": ("configMap", "partner-ca", "ca.crt"),
                     "partners.toml": ("secret", "carehub-partners", "partners.toml")}
    assert files == expected
    assert volume["projected"]["defaultMode"] == 0o440
    for variable, path in [("CAREHUB_GATEWAY_TLS_CERT", "tls.crt"), ("CAREHUB_GATEWAY_TLS_KEY", "tls.key"),
                           ("CAREHUB_GATEWAY_CLIENT_CA", "client-ca.crt"),
                           ("CAREHUB_GATEWAY_PARTNERS_FILE", "partners.toml")]:
        assert env[variable] == f"{mount['mountPath']}/{path}"
    assert env["CAREHUB_GATEWAY_HOST"] == "0.0.0.0" and env["CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT"] == "true"


def projected_files(pod: dict[str, Any], volume_name: str) -> dict[str, tuple[str, str, str]]:
    """path in the mount -> (secret or configMap, its name, its key), of a projected volume."""
    [volume] = [v for v in pod["volumes"] if v["name"] == volume_name]
    assert volume["projected"]["defaultMode"] == 0o440
    return {
        item["path"]: (kind, source["name"], item["key"])
        for entry in volume["projected"]["sources"] for kind, source in entry.items() for item in source["items"]
    }


@pytest.mark.parametrize("which", ["required", "everything"])
def test_the_fhir_endpoint_gets_its_tls_material_and_senders_by_reference(which: str) -> None:
    pod = find(rendered(which), "Deployment", "carehub-fhir")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = env_of(container)
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "fhir-files"]
    assert mount["readOnly"] is True
    expected = {
        "tls.crt": ("secret", "carehub-fhir-tls", "tls.crt"),
        "tls.key": ("secret", "carehub-fhir-tls", "tls.key"),
        "client-ca.crt": ("secret", "carehub-fhir-tls", "ca.crt"),
        "senders.toml": ("configMap", "carehub-fhir-senders", "senders.toml"),
    }
    if which == "everything":
        expected = {
            "tls.crt": ("secret", "carehub-fhir-tls", "cert.pem"),
            "tls.key": ("secret", "carehub-fhir-tls", "key.pem"),
            "client-ca.crt": ("configMap", "provider-ca", "ca.crt"),
            "senders.toml": ("secret", "carehub-fhir-senders", "senders.toml"),
            "mapping.toml": ("configMap", "carehub-fhir-mapping", "mapping.toml"),
        }
    assert projected_files(pod, "fhir-files") == expected
    variables = {"CAREHUB_FHIR_TLS_CERT": "tls.crt", "CAREHUB_FHIR_TLS_KEY": "tls.key",
                 "CAREHUB_FHIR_CLIENT_CA": "client-ca.crt", "CAREHUB_FHIR_SENDERS_FILE": "senders.toml"}
    if which == "everything":
        variables["CAREHUB_FHIR_MAPPING"] = "mapping.toml"
        assert env["CAREHUB_FHIR_MAX_BUNDLE_BYTES"] == "8388608"
        service = find(rendered(which), "Service", "carehub-fhir")
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["metadata"]["annotations"] == {"example.org/lb": "nlb"}
        assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    for variable, path in variables.items():
        assert env[variable] == f"{mount['mountPath']}/{path}"
    assert not [e for e in env if e.startswith("CAREHUB_GATEWAY_") or e.startswith("CAREHUB_MLLP_")]


def test_the_fhir_endpoint_without_client_certificates_takes_a_ca_only_when_named() -> None:
    tokens = {**REQUIRED, "fhir": {**REQUIRED["fhir"], "requireClientCert": False}}
    pod = find(render(tokens), "Deployment", "carehub-fhir")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["CAREHUB_FHIR_REQUIRE_CLIENT_CERT"] == "false"
    assert "CAREHUB_FHIR_CLIENT_CA" not in env
    assert "client-ca.crt" not in projected_files(pod, "fhir-files")
    # a named CA: client certificates optional, and checked against it when presented
    tokens["fhir"]["clientCa"] = {"name": "provider-ca"}
    pod = find(render(tokens), "Deployment", "carehub-fhir")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["CAREHUB_FHIR_CLIENT_CA"] == "/etc/carehub/fhir/client-ca.crt"
    assert projected_files(pod, "fhir-files")["client-ca.crt"] == ("secret", "provider-ca", "ca.crt")


@pytest.mark.parametrize("which", ["required", "everything"])
def test_the_mllp_facilities_file_is_mounted_only_when_named(which: str) -> None:
    pod = find(rendered(which), "Deployment", "carehub-mllp")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = env_of(container)
    mounts = [m for m in container["volumeMounts"] if m["name"] == "mllp-files"]
    volumes = [v for v in pod["volumes"] if v["name"] == "mllp-files"]
    if which == "required":
        assert not mounts and not volumes and "CAREHUB_HL7_FACILITIES" not in env
        return
    [mount], [volume] = mounts, volumes
    assert mount["readOnly"] is True
    assert volume["projected"]["defaultMode"] == 0o440
    items = [{"key": "facilities.toml", "path": "facilities.toml"}]
    assert volume["projected"]["sources"] == [{"configMap": {"name": "carehub-hl7-facilities", "items": items}}]
    assert env["CAREHUB_HL7_FACILITIES"] == f"{mount['mountPath']}/facilities.toml"
    assert env["CAREHUB_MLLP_IDLE_TIMEOUT_S"] == "120.5"
    service = find(rendered(which), "Service", "carehub-mllp")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"example.org/lb": "internal"}
    assert service["spec"]["ports"] == [{"name": "mllp", "port": 12575, "targetPort": "mllp", "protocol": "TCP"}]


def test_otel_settings_pass_through() -> None:
    [container] = find(rendered("everything"), "Deployment", "carehub-timeline")["spec"]["template"]["spec"][
        "containers"]
    env = env_of(container)
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment=test"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {"secretKeyRef": {"name": "otel-headers", "key": "headers"}}
    assert list(env)[-1] == "CAREHUB_LOG_LEVEL"  # extraEnv last, so it wins
    [default] = find(rendered("required"), "Deployment", "carehub-timeline")["spec"]["template"]["spec"]["containers"]
    assert not [name for name in env_of(default) if name.startswith("OTEL_") and name != "OTEL_SERVICE_NAME"]


def test_service_monitor_scrapes_every_service() -> None:
    objects = rendered("everything")
    assert not [o for o in rendered("required") if o["kind"] == "ServiceMonitor"]  # off by default
    monitor = find(objects, "ServiceMonitor", "carehub")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    service = find(objects, "Service", "carehub-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    # job = the service's name, as the dashboards and alert rules (deploy/prometheus, deploy/grafana) expect
    [endpoint] = monitor["spec"]["endpoints"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"], "targetLabel": "job"} in (
        endpoint["relabelings"])
    assert service["spec"]["clusterIP"] == "None"  # one target per pod
    for service_name in SERVICES:
        labels = find(objects, "Deployment", f"carehub-{service_name}")["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), service_name
    job_labels = find(objects, "Job", "carehub-topics")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "kafka.bootstrap is required"),
        ({**REQUIRED, "pseudonymKey": {"existingSecret": ""}}, "pseudonymKey.existingSecret is required"),
        ({**REQUIRED, "gateway": {"partners": {"name": "p"}}}, "gateway.tls.existingSecret is required"),
        ({**REQUIRED, "gateway": {"tls": {"existingSecret": "t"}}}, "gateway.partners.name is required"),
        ({**REQUIRED, "alerts": {"autoscaling": {"enabled": True, "minReplicas": 5}}}, "more than kafka.partitions"),
        ({**REQUIRED, "identity": {"replicas": 2}}, "additional properties 'replicas' not allowed"),
        ({**REQUIRED, "podAntiAffinity": "maybe"}, "podAntiAffinity"),
        ({**REQUIRED, "mllp": {"autoscaling": {"enabled": True}}}, "additional properties 'autoscaling' not allowed"),
        ({**REQUIRED, "mllp": {"maxMessageBytes": 100}}, "maxMessageBytes"),
        ({**REQUIRED, "fhir": {"senders": {"name": "s"}}}, "fhir.tls.existingSecret is required"),
        ({**REQUIRED, "fhir": {"tls": {"existingSecret": "t"}}}, "fhir.senders.name is required"),
        ({**REQUIRED, "fhir": {"autoscaling": {"enabled": True}}}, "additional properties 'autoscaling' not allowed"),
        ({**REQUIRED, "fhir": {"maxBundleBytes": 100}}, "maxBundleBytes"),
        ({**REQUIRED, "fhir": {"senders": {"inline": "x"}}}, "additional properties 'inline' not allowed"),
    ],
)
def test_the_chart_refuses_incomplete_or_wrong_values(values: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


def test_the_gateway_can_be_left_out() -> None:
    objects = render({**REQUIRED, "gateway": {"enabled": False}})
    assert not [o for o in objects if o["metadata"]["name"] == "carehub-gateway"]


def test_the_mllp_listener_can_be_left_out() -> None:
    objects = render({**REQUIRED, "mllp": {"enabled": False}})
    assert not [o for o in objects if o["metadata"]["name"] == "carehub-mllp"]
    assert find(objects, "Deployment", "carehub-ingest")  # the rest is still there


def test_the_fhir_endpoint_can_be_left_out_and_then_needs_no_tls_values() -> None:
    objects = render({key: value for key, value in REQUIRED.items() if key != "fhir"} | {"fhir": {"enabled": False}})
    assert not [o for o in objects if o["metadata"]["name"] == "carehub-fhir"]
    assert find(objects, "Deployment", "carehub-mllp")  # the rest is still there


@pytest.mark.parametrize("which", ["required", "everything"])
def test_helm_lint_finds_nothing_to_fix(which: str) -> None:
    import helm_python as helm

    values = {"required": REQUIRED, "everything": EVERYTHING}[which]
    report = helm.lint(CHART, values, strict=True, namespace="care", kube_version=f"v{KUBERNETES}.0")
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error; 1 is advice
    assert not findings and not report["errors"], report
