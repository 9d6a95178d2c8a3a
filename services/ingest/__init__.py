"""Ingest: validate provider events, pseudonymise them, drop duplicates, dead-letter the rest."""
