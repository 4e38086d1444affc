"""Best-of-n (autointerp/best_of.py): candidates from the explainer, judged by the simulator on held-out
explanation windows, against the real Anthropic SDK talking to a loopback server."""

from __future__ import annotations

import asyncio

import pytest
from helpers_windows import make_sample, make_window
from loopback_llm import LoopbackServer, start_loopback

from autointerp.best_of import best_of_split, explain_best_of
from autointerp.config import RunConfig
from autointerp.explain import explain_feature
from autointerp.llm import make_backend

pytestmark = pytest.mark.usefixtures("no_llm_keys")


def cfg(**llm) -> RunConfig:
    return RunConfig(sae="demo", llm=llm)


def anthropic_backend(server: LoopbackServer):
    return make_backend(
        f"anthropic:claude-haiku-4-5@{server.url}", max_attempts=1, timeout_s=10.0, retry_initial_wait_s=0.01
    )


def _simulating_responder(candidates: list[str]):
    """Explain requests get the next candidate; simulate requests mark every token the explanation names."""

    def respond(kind: str, body: dict) -> str:
        system = body["system"][0]["text"] if isinstance(body["system"], list) else body["system"]
        user = body["messages"][-1]["content"]
        if "Explanation:" not in system and "Activations:" not in system:
            raise AssertionError("unexpected request")
        if "Activations:" not in system:
            return candidates.pop(0)
        named = user.split("\n", 1)[0].removeprefix("Explanation: ").split()[-1]
        items = []
        for block in user.split("Excerpt ")[1:]:
            number = int(block.split(":", 1)[0])
            for line in block.split("\n")[1:]:
                if "\t" in line:
                    index, token = line.split("\t", 1)
                    if token.strip() == named:
                        items.append(f"{number}:{index}=9")
        return "Activations: " + (", ".join(items) or "none")

    return respond


def test_best_of_keeps_the_candidate_that_simulates_best() -> None:
    windows = [
        make_window(["the", " dog", " ran"], [0, 5.0, 0], context_id=0),
        make_window(["a", " dog", " sat"], [0, 4.0, 0], context_id=1),
        make_window(["my", " dog", " ate"], [0, 3.0, 0], context_id=2),
        make_window(["one", " cat", " hid"], [0, 0.0, 0], context_id=3),
    ]
    assert best_of_split(windows)[1] == [windows[1]]  # the second strongest is held out
    server = start_loopback(responder=_simulating_responder(["Explanation: cat", "Explanation: dog"]))
    try:
        backend = anthropic_backend(server)
        explanation, calls = asyncio.run(explain_best_of(backend, make_sample(windows), cfg(best_of=2)))
    finally:
        server.stop()
    assert explanation.text == "dog"
    stages = sorted((c.stage, c.detail.get("candidate")) for c in calls)
    assert stages == [("explain", 0), ("explain", 1), ("simulate", 0), ("simulate", 1)]
    assert explanation.usage.output_tokens == sum(c.usage.output_tokens for c in calls)
    shown = server.requests[0].body["messages"][-1]["content"]
    assert " sat" not in shown and " ran" in shown  # the held-out window is not shown to the explainer


def test_the_baseline_has_one_explanation_so_best_of_is_a_plain_explanation() -> None:
    windows = [make_window(["a", " dog", " ran"], [0, 5.0, 0], context_id=i) for i in range(3)]
    backend = make_backend("baseline")
    best, calls = asyncio.run(explain_best_of(backend, make_sample(windows), cfg(best_of=3)))
    plain, _ = asyncio.run(explain_feature(backend, make_sample(windows), cfg()))
    assert calls == [] and best == plain
