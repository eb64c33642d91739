"""Storage engines behind the core's storage port (core/storage.py)."""
