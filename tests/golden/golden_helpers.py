"""Golden prompt files and the golden windows for tests/test_explain.py and tests/test_simulate.py.

A golden file holds the exact text of a request (system, every turn, the parameters) in a form that
reads well in a diff. `UPDATE_GOLDEN=1 pytest tests/test_explain.py tests/test_simulate.py` rewrites
them; review the diff before committing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers_windows import make_window

from autointerp.llm.base import LLMRequest
from autointerp.records import Window

GOLDEN_DIR = Path(__file__).parent


def render_request(request: LLMRequest, extra: dict[str, str] | None = None) -> str:
    parts = [f"=== system ===\n{request.system}"]
    for i, message in enumerate(request.prefix, 1):
        parts.append(f"=== prefix {i}: {message.role} ===\n{message.content}")
    for i, message in enumerate(request.messages, 1):
        parts.append(f"=== messages {i}: {message.role} ===\n{message.content}")
    params = request.model_dump(exclude={"system", "prefix", "messages"})
    parts.append(f"=== parameters ===\n{json.dumps(params, sort_keys=True)}")
    for title, text in (extra or {}).items():
        parts.append(f"=== {title} ===\n{text}")
    return "\n".join(parts) + "\n"


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(text, encoding="utf-8")
        if os.environ.get("UPDATE_GOLDEN") != "1":
            raise AssertionError(f"{path} did not exist; written now. Review it, then run the test again.")
        return
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"prompt differs from {path}; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"


def golden_explain_windows() -> list[Window]:
    """Three explanation windows of a made-up 'dog' feature (max 4.0), with whitespace tokens to escape."""
    return [
        make_window(["The", " dog", " barked", " at", " the", " cat", "."], [0, 4.0, 0.3, 0, 0, 1.0, 0], context_id=0),
        make_window(
            ["def", " fetch", "(", "dog", "):", "\n", "\t", "return", "  ", ""],
            [0, 0.5, 0, 3.2, 0, 0, 0, 0, 0, 0],
            context_id=1,
        ),
        make_window(["Hot", " dogs", " and", " a", " cold", " drink", "\r\n"], [0, 1.7, 0, 0, 0, 0, 0], context_id=2),
    ]


def golden_score_windows() -> list[Window]:
    """Three held-out windows of the same feature."""
    return [
        make_window(["My", " dog", " sleeps", "."], [0, 3.9, 0, 0], split="score", context_id=3),
        make_window(
            ["It", " rained", " all", " day", "\n"],
            [0, 0, 0, 0, 0],
            split="score",
            group="random",
            context_id=4,
        ),
        make_window(
            ["Walk", " the", " dog", "\t", "now"],
            [0, 0, 2.0, 0, 0],
            split="score",
            group="interval",
            context_id=5,
        ),
    ]
