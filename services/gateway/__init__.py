"""The partner gateway: gRPC over TLS for partner organisations (alerts, acknowledgements, indicators)."""
