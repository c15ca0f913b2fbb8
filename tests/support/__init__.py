"""Helpers shared by tests in tests/unit and tests/e2e (tests/ is on sys.path under pytest)."""
