"""Tests for autointerp/settings_hash.py: what goes into the hash of the settings behind a score."""

import hashlib

import pytest

from autointerp import settings_hash as sh
from autointerp.config import LLMConfig, RunConfig, SamplerConfig, ScoringConfig
from autointerp.settings_hash import prompt_digests, score_settings, settings_differences, settings_hash

PROMPTS = {
    "explain_system.md": "e1",
    "simulate_user.md": "s1",
    "detect_user.md": "d1",
    "README.md": "r1",
}


def settings(**config) -> dict:
    key = RunConfig(**{"sae": "demo", **config}).results_key()
    return score_settings(key, "corpus-fp", PROMPTS)


def test_what_changes_a_score_changes_the_hash():
    base = settings(llm=LLMConfig(explainer="anthropic:claude-x"))
    digest = settings_hash(base)
    changed = [
        settings(llm=LLMConfig(explainer="anthropic:claude-y")),
        settings(llm=LLMConfig(explainer="anthropic:claude-x", simulator="openai:gpt-x")),
        settings(llm=LLMConfig(explainer="anthropic:claude-x", best_of=3)),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), sampler=SamplerConfig(seed=1)),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), sampler=SamplerConfig(window_size=64)),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), scoring=ScoringConfig(quantise_rule="ceil")),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), scoring=ScoringConfig(n_permutations=10)),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), scoring=ScoringConfig(detection_threshold="auto")),
        score_settings(
            RunConfig(sae="demo", llm=LLMConfig(explainer="anthropic:claude-x")).results_key(), "other", PROMPTS
        ),
        score_settings(
            RunConfig(sae="demo", llm=LLMConfig(explainer="anthropic:claude-x")).results_key(),
            "corpus-fp",
            PROMPTS | {"simulate_user.md": "s2"},
        ),
    ]
    assert len({settings_hash(c) for c in changed} | {digest}) == len(changed) + 1


def test_what_does_not_change_a_score_leaves_the_hash():
    base = settings_hash(settings(llm=LLMConfig(explainer="anthropic:claude-x")))
    same = [
        # the same contexts in other batches; which features get controls; where the features came from
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), sampler=SamplerConfig(batch_size=64)),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), scoring=ScoringConfig(controls_share=0.5)),
        settings(llm=LLMConfig(explainer="anthropic:claude-x", max_in_flight=3, simulator="anthropic:claude-x")),
        settings(llm=LLMConfig(explainer="anthropic:claude-x"), sae="other-sae", model="gpt2"),
        score_settings(
            RunConfig(sae="demo", llm=LLMConfig(explainer="anthropic:claude-x")).results_key(),
            "corpus-fp",
            PROMPTS | {"detect_user.md": "d2", "README.md": "r2"},  # files simulation never reads
        ),
    ]
    assert {settings_hash(s) for s in same} == {base}


def test_only_the_prompts_a_run_reads_are_kept():
    llm = settings(llm=LLMConfig(explainer="anthropic:claude-x"))
    assert llm["prompts"] == {"explain_system.md": "e1", "simulate_user.md": "s1"}
    assert llm["simulator"] == "anthropic:claude-x"  # None means the explainer's
    assert settings(llm=LLMConfig(explainer="baseline"))["prompts"] == {}
    local_sim = settings(llm=LLMConfig(explainer="baseline", simulator="local"))
    assert local_sim["prompts"] == {"simulate_user.md": "s1"}
    detection = score_settings(RunConfig(sae="demo").results_key(), "c", PROMPTS, "detection")
    assert detection["prompts"] == {"explain_system.md": "e1", "detect_user.md": "d1"}


def test_prompt_digests_hash_the_bytes_of_the_prompt_files(tmp_path, monkeypatch):
    (tmp_path / "simulate_user.md").write_bytes(b"Predict {{x}}\n")
    (tmp_path / "explain_fewshot.json").write_bytes(b'{"examples": []}')
    monkeypatch.setattr(sh, "prompts_dir", lambda: tmp_path)
    first = prompt_digests()
    assert first == {
        "explain_fewshot.json": hashlib.sha256(b'{"examples": []}').hexdigest(),
        "simulate_user.md": hashlib.sha256(b"Predict {{x}}\n").hexdigest(),
    }
    (tmp_path / "simulate_user.md").write_bytes(b"Predict {{x}}\n\n")  # a byte the loader would not show
    assert prompt_digests()["simulate_user.md"] != first["simulate_user.md"]


def test_the_shipped_prompts_are_all_hashed():
    digests = prompt_digests()
    assert {"explain_system.md", "simulate_user.md", "simulate_fewshot.json"} <= set(digests)
    assert all(len(d) == 64 for d in digests.values())


def test_hash_is_canonical_and_short():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert len(settings_hash({})) == sh.HASH_LENGTH


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({"x": 1}, {"x": 1}, []),
        ({"s": {"seed": 0, "n": 5}}, {"s": {"seed": 1, "n": 5}}, [("s.seed", 0, 1)]),
        ({"p": {"a.md": "1"}}, {"p": {}}, [("p.a.md", "1", None)]),
        ({"x": [1]}, {"x": [2], "y": 3}, [("x", [1], [2]), ("y", None, 3)]),
    ],
)
def test_settings_differences(a, b, expected):
    assert settings_differences(a, b) == expected
