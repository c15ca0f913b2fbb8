"""Test helpers first written for tests/unit/test_openai_backend.py, shared by other tests."""

from __future__ import annotations

ANSWER = ("Analysis:\nLocation: It stands on the floor.\nCo-occurrence: It fits the room.\nSize: Normal size.\n"
          "Summary:\nLocation: In-context\nCo-occurrence: In-context\nSize: In-context\nFinal decision: In-context.")

