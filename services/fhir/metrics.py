"""Prometheus metrics of the FHIR door (services/fhir)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BUNDLES = Counter("carehub_fhir_bundles_total", "FHIR Bundles received, by Bundle type and HTTP status",
                  ["type", "status"])
EVENTS = Counter("carehub_fhir_events_total", "Care events mapped from FHIR Bundles and written")
WARNINGS = Counter("carehub_fhir_warnings_total", "Imperfect elements of accepted Bundles (OperationOutcome "
                   "warnings), by sending organisation", ["org"])
DUPLICATES = Counter("carehub_fhir_duplicates_total", "Bundles sent again after they were accepted (answered "
                     "200, nothing written)")
SECONDS = Histogram("carehub_fhir_response_seconds", "From a request's body received to its answer",
                    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
INFLIGHT = Gauge("carehub_fhir_bundles_in_flight", "Bundles being read, mapped and stored (each sender has at "
                 "most CAREHUB_FHIR_MAX_INFLIGHT_PER_SENDER)")
