"""Batch reference implementations that the streaming services are checked against."""
