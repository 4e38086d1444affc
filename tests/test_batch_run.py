"""`autointerp run --batch` end to end: the real anthropic and openai SDKs against the loopback server's batch
endpoints, on a small demo run (sampled once per module). Checks the rounds (all explanations in one batch,
then every scoring request in one), scores equal to a live run's, the batch discount in the stored costs, and
the faults: an expired batch, partial failures, unreadable answers, a create whose reply was lost, a kill
between submit and store and a SIGKILL while polling; `--retry-failed`. Every test but the refusals samples
(once per module, ~20 s on CPU) and is marked slow: `pytest tests/test_batch_run.py` runs them all (~2 min)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from loopback_llm import LoopbackServer, start_loopback

from autointerp.cli import main
from autointerp.llm.batch import BatchClient

N_FEATURES = 3
KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5-mini"}  # gpt-5-mini: sampled simulation


@pytest.fixture(autouse=True)
def _no_keys(no_llm_keys) -> None:
    """Tests see no real keys or base URLs."""


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("batch") / "sampled"
    argv = ["--sae", "demo", "--n-tokens", "2048", "--n-features", str(N_FEATURES), "--run-dir", str(run_dir)]
    assert main(["sample", *argv, "--device", "cpu"]) == 0
    return run_dir


def answers(kind: str, body: dict) -> str:
    """An explainer, a detection judge and a sparse simulator that always answer in form."""
    system = str(body.get("system", "")) + str(body.get("messages", [{}])[0].get("content", ""))[:400]
    last = body["messages"][-1]["content"]
    text = last if isinstance(last, str) else "".join(part.get("text", "") for part in last)
    if "You study one feature" in system:
        return f"Explanation: words about kings, kind {zlib.crc32(text.encode()) % 997}"  # one per feature
    if "You judge whether" in system:
        n = len(re.findall(r"^Excerpt \d+:", text, flags=re.M))
        return "\n".join(f"{i + 1}: {'yes' if i % 2 else 'no'}" for i in range(n))
    return "Activations: 1:2=5, 2:1=10"


@pytest.fixture
def server():
    server = start_loopback(responder=answers)
    yield server
    server.stop()


def run(sampled: Path, target: Path, kind: str, server: LoopbackServer, monkeypatch, *extra: str) -> int:
    if not target.exists():
        shutil.copytree(sampled, target)
    monkeypatch.setenv(KEYS[kind], "sk-loopback-not-a-real-key-0123")
    url = server.url if kind == "anthropic" else server.openai_url
    argv = ["--sae", "demo", "--n-tokens", "2048", "--n-features", str(N_FEATURES), "--run-dir", str(target)]
    return main(["run", *argv, "--explainer", f"{kind}:{MODELS[kind]}@{url}", "--batch", *extra])


def rows(run_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'autointerp.sqlite'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def batch_sizes(server: LoopbackServer) -> list[int]:
    return [len(b.items) for b in sorted(server.batches.values(), key=lambda b: b.created_at)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_batch_run_explains_in_one_batch_then_scores_in_one(sampled, tmp_path, kind, server, monkeypatch):
    started = time.monotonic()
    assert run(sampled, tmp_path / "run", kind, server, monkeypatch) == 0
    seconds = time.monotonic() - started
    sizes = batch_sizes(server)
    assert len(sizes) == 2 and sizes[0] == N_FEATURES, sizes  # one explanation request per feature
    live = [r.path for r in server.requests if r.path.rstrip("/").endswith(("/messages", "/chat/completions"))]
    assert live == []  # nothing went through the live endpoints
    scored = rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0]
    assert scored == N_FEATURES
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM detection_scores")[0][0] == N_FEATURES
    controls = rows(tmp_path / "run", "SELECT count(*) FROM scores WHERE explanation_source != 'llm'")[0][0]
    assert controls > 0  # the controls' requests went in the scoring batch too (there was no third batch)
    n_calls = rows(tmp_path / "run", "SELECT count(*) FROM llm_calls")[0][0]
    assert n_calls == sum(sizes)  # every stored answer used once, no call outside the batches
    states = rows(tmp_path / "run", "SELECT state, count(*) FROM batches GROUP BY state")
    assert states == [("ingested", 2)]
    print(f"{kind}: batches of {sizes} requests, {seconds:.1f} s")


@pytest.mark.slow
def test_batch_costs_are_at_the_batch_discount(sampled, tmp_path, server, monkeypatch):
    from autointerp.llm import make_backend
    from autointerp.records import Usage

    assert run(sampled, tmp_path / "run", "anthropic", server, monkeypatch) == 0
    backend = make_backend(f"anthropic:{MODELS['anthropic']}@{server.url}", api_key="sk-loopback-0123456789")
    found = rows(
        tmp_path / "run",
        "SELECT input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, cost_usd FROM llm_calls",
    )
    assert found
    for inp, cached, written, out, cost in found:
        usage = Usage(input_tokens=inp, cached_input_tokens=cached, cache_write_tokens=written, output_tokens=out)
        assert cost == pytest.approx(backend.cost(usage, batch=True))
        assert cost == pytest.approx(backend.cost(usage) / 2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_an_expired_batch_fails_its_features_and_retry_failed_resends_only_those(
    sampled, tmp_path, kind, server, monkeypatch
):
    server.batch_faults.append("expire:1")  # the explanation batch: one request ran, the others expired
    assert run(sampled, tmp_path / "run", kind, server, monkeypatch) == 1  # some features failed
    failed = rows(tmp_path / "run", "SELECT feature, stage, message FROM errors WHERE resolved = 0")
    assert len(failed) == N_FEATURES - 1 and all(stage == "explain" for _, stage, _ in failed)
    assert all("expired" in message for *_, message in failed)
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == 1
    before = batch_sizes(server)

    assert run(sampled, tmp_path / "run", kind, server, monkeypatch, "--retry-failed") == 0
    after = batch_sizes(server)[len(before) :]
    assert after[0] == N_FEATURES - 1  # only the expired explanation requests were sent again
    assert rows(tmp_path / "run", "SELECT count(*) FROM errors WHERE resolved = 0") == [(0,)]
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES


@pytest.mark.slow
def test_partial_failures_are_recorded_per_feature(sampled, tmp_path, server, monkeypatch):
    server.reset(faults=["ok", "400", "ok"])  # per batch request, in order: the second explanation is refused
    assert run(sampled, tmp_path / "run", "anthropic", server, monkeypatch) == 1
    failed = rows(tmp_path / "run", "SELECT stage, message FROM errors WHERE resolved = 0")
    assert len(failed) == 1 and failed[0][0] == "explain" and "invalid_request_error" in failed[0][1]
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES - 1


@pytest.mark.slow
def test_unreadable_answers_are_asked_again_in_later_rounds_and_retry_failed_resends_them(
    sampled, tmp_path, monkeypatch
):
    mute = {"on": True}

    def responder(kind: str, body: dict) -> str:
        system = str(body.get("system", ""))
        return "Explanation:" if mute["on"] and "You study one feature" in system else answers(kind, body)

    with start_loopback(responder=responder) as server:
        assert run(sampled, tmp_path / "run", "anthropic", server, monkeypatch) == 1
        # each unreadable answer is shown back and asked again, one round each: 3 answers per feature
        assert batch_sizes(server) == [N_FEATURES] * 3
        failed = rows(tmp_path / "run", "SELECT stage, message FROM errors WHERE resolved = 0")
        assert len(failed) == N_FEATURES and all(stage == "explain" for stage, _ in failed)
        unusable = rows(tmp_path / "run", "SELECT count(*) FROM batch_requests WHERE retryable = 1")[0][0]
        assert unusable == 3 * N_FEATURES

        mute["on"] = False
        assert run(sampled, tmp_path / "run", "anthropic", server, monkeypatch, "--retry-failed") == 0
        sizes = batch_sizes(server)[3:]
        assert sizes[0] == N_FEATURES and len(sizes) == 2  # each feature's first request again, then scoring
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_kill_between_submit_and_store_resumes_without_submitting_again(sampled, tmp_path, kind, server, monkeypatch):
    real_submit = BatchClient.submit

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after the submit runs (not even `except Exception`)."""

    async def submit_then_die(self, items, *, key=None):
        await real_submit(self, items, key=key)
        raise Killed

    monkeypatch.setattr(BatchClient, "submit", submit_then_die)
    with pytest.raises(Killed):
        run(sampled, tmp_path / "run", kind, server, monkeypatch)
    assert rows(tmp_path / "run", "SELECT batch_id, state FROM batches") == [(None, "submitting")]
    assert len(server.batches) == 1

    monkeypatch.setattr(BatchClient, "submit", real_submit)
    assert run(sampled, tmp_path / "run", kind, server, monkeypatch) == 0
    sizes = batch_sizes(server)
    assert len(sizes) == 2 and sizes[0] == N_FEATURES  # the first batch was found, not sent again
    stored = {b for (b,) in rows(tmp_path / "run", "SELECT batch_id FROM batches")}
    assert stored == set(server.batches)
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_lost_create_reply_is_found_not_submitted_twice(sampled, tmp_path, kind, server, monkeypatch):
    server.batch_faults.append("lost")  # the explanation batch is made, but its create call gets a 500
    assert run(sampled, tmp_path / "run", kind, server, monkeypatch) == 0
    sizes = batch_sizes(server)
    assert len(sizes) == 2 and sizes[0] == N_FEATURES  # found again, not resubmitted
    assert {b for (b,) in rows(tmp_path / "run", "SELECT batch_id FROM batches")} == set(server.batches)
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES


@pytest.mark.slow
def test_a_run_killed_while_polling_resumes_polling_the_same_batch(sampled, tmp_path, server, monkeypatch):
    """SIGKILL of a real `autointerp run --batch` process while its explanation batch runs; the next run polls
    that batch (the provider's 'in_progress', then 'ended') instead of submitting it again."""
    target = tmp_path / "run"
    shutil.copytree(sampled, target)
    job = tmp_path / "job.toml"
    job.write_text("[llm]\nbatch_poll_s = 0.05\n")
    server.batch_faults.append("slow:4")
    argv = ["--sae", "demo", "--n-tokens", "2048", "--n-features", str(N_FEATURES), "--run-dir", str(target)]
    spec = f"anthropic:{MODELS['anthropic']}@{server.url}"
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-loopback-not-a-real-key-0123", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "autointerp.cli", "run", *argv, "--explainer", spec, "--batch", "--job", str(job)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if (target / "autointerp.sqlite").exists() and rows(target, "SELECT count(*) FROM batches")[0][0]:
            time.sleep(0.3)  # a few polls of the open batch
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert rows(target, "SELECT state, provider_status FROM batches") == [("open", "in_progress")]

    assert run(sampled, target, "anthropic", server, monkeypatch, "--job", str(job)) == 0
    sizes = batch_sizes(server)
    assert len(sizes) == 2 and sizes[0] == N_FEATURES
    assert rows(target, "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES


@pytest.mark.slow
def test_batch_and_live_runs_store_the_same_scores(sampled, tmp_path, server, monkeypatch):
    assert run(sampled, tmp_path / "batch", "anthropic", server, monkeypatch) == 0
    shutil.copytree(sampled, tmp_path / "live")
    argv = ["--sae", "demo", "--n-tokens", "2048", "--n-features", str(N_FEATURES), "--run-dir", str(tmp_path / "live")]
    assert main(["run", *argv, "--explainer", f"anthropic:{MODELS['anthropic']}@{server.url}"]) == 0
    sql = "SELECT feature, explanation_source, correlation, lift, lift_other FROM scores ORDER BY 1, 2"
    assert rows(tmp_path / "batch", sql) == rows(tmp_path / "live", sql)
    sql = "SELECT feature, explanation_source, balanced_accuracy FROM detection_scores ORDER BY 1, 2"
    assert rows(tmp_path / "batch", sql) == rows(tmp_path / "live", sql)
    cost = "SELECT sum(cost_usd), sum(input_tokens + cached_input_tokens + output_tokens) FROM llm_calls"
    (batch_usd, batch_tokens), (live_usd, live_tokens) = (
        rows(tmp_path / "batch", cost)[0],
        rows(tmp_path / "live", cost)[0],
    )
    print(
        f"3 features: batch ${batch_usd:.5f} ({batch_tokens:,} tokens), live ${live_usd:.5f} ({live_tokens:,} tokens)"
    )
    assert batch_usd < live_usd


@pytest.mark.parametrize("backend", ["baseline", "local"])
def test_batch_with_a_backend_without_a_batch_api_is_refused_before_sampling(tmp_path, backend, capsys):
    argv = ["--sae", "demo", "--n-tokens", "2048", "--n-features", "2", "--run-dir", str(tmp_path / "r")]
    assert main(["run", *argv, "--explainer", backend, "--batch"]) != 0
    err = capsys.readouterr().err
    assert "--batch" in err and "no batch API" in err
    assert not (tmp_path / "r" / "autointerp.sqlite").exists()


def test_check_batch_names_the_backend_without_a_batch_api():
    from autointerp.batch_run import check_batch
    from autointerp.config import LLMConfig, RunConfig
    from autointerp.errors import InputError

    def cfg(**llm) -> RunConfig:
        return RunConfig(sae="demo", llm=LLMConfig(batch=True, **llm))

    check_batch(cfg(explainer="anthropic:claude-haiku-4-5", simulator="openai:gpt-5-mini"))  # both have one
    with pytest.raises(InputError, match=r"simulator 'vllm:m@http://h:8000/v1'.*no batch API"):
        check_batch(cfg(explainer="openai:gpt-5-mini", simulator="vllm:m@http://h:8000/v1"))
    check_batch(RunConfig(sae="demo", llm=LLMConfig(explainer="local")))  # no --batch: nothing to refuse
    assert RunConfig(sae="demo", llm=LLMConfig(batch=True)).results_key() == RunConfig(sae="demo").results_key()
