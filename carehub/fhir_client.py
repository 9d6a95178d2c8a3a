"""`carehub send-fhir`: POST FHIR Bundles to carehub's FHIR endpoint and print each answer.

A message Bundle goes to ``[base]/$process-message``, any other Bundle to ``[base]`` (a
transaction). Each file holds one Bundle (JSON) or, with the ``.ndjson`` suffix, one per line.
The sender authenticates with a client certificate (mutual TLS) or a bearer token, as configured
on the endpoint. A 503 or a connection error is retried (the endpoint answers 503 when the hub
could not store the Bundle yet); anything else is printed with its OperationOutcome.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Answer:
    source: str
    bundle_id: str
    status: int
    issues: list[str]

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def bundles_of(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(where, body) for every Bundle in the files."""
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".ndjson":
            for i, line in enumerate(data.splitlines(), 1):
                if line.strip():
                    yield f"{path}:{i}", line
        else:
            yield str(path), data


def _issues(response: httpx.Response) -> list[str]:
    try:
        resource: Any = response.json()
    except ValueError:
        return [response.text[:200]]
    if resource.get("resourceType") == "Bundle":  # a transaction-response
        resource = ((resource.get("entry") or [{}])[0].get("response") or {}).get("outcome") or {}
    return [f"{i.get('severity')}: {', '.join(i.get('expression') or []) or '-'}: {i.get('diagnostics', '')}"
            for i in resource.get("issue") or []]


def client(ca: Path | None, cert: Path | None, key: Path | None, token: str | None,
           timeout: float) -> httpx.Client:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(verify=tls_context(ca, cert, key), headers=headers, timeout=timeout)


def tls_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Verify the server by ``ca`` (the system's CAs if None); present ``cert`` when given.
    (httpx 0.28 takes client certificates only through an SSLContext.)"""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def send(http: httpx.Client, base: str, source: str, body: bytes, retries: int = 5) -> Answer:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = {}
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    url = base.rstrip("/") + ("/$process-message" if kind == "message" else "")
    bundle_id = str(parsed.get("id", "")) if isinstance(parsed, dict) else ""
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            response = http.post(url, content=body)
        except httpx.TransportError:
            if attempt == retries:
                raise
        else:
            if response.status_code != 503 or attempt == retries:
                return Answer(source, bundle_id, response.status_code, _issues(response))
            delay = float(response.headers.get("retry-after", delay))
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")
