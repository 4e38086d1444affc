"""`autointerp run --batch` end to end: the real anthropic and openai SDKs against the loopback server's batch
endpoints, on a small demo run (sampled once per module). Checks the rounds (all explanations in one batch,
then every scoring request in one), scores equal to a live run's, the batch discount in the stored costs, and
the faults: an expired batch, partial failures, a kill between submit and store; `--retry-failed`."""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from loopback_llm import LoopbackServer, start_loopback

from autointerp.cli import main
from autointerp.llm.batch import BatchClient

N_FEATURES = 3
KEYS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}


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
        return "Explanation: words about kings and lords"
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


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_batch_run_explains_in_one_batch_then_scores_in_one(sampled, tmp_path, kind, server, monkeypatch):
    started = time.monotonic()
    assert run(sampled, tmp_path / "run", kind, server, monkeypatch) == 0
    seconds = time.monotonic() - started
    sizes = batch_sizes(server)
    assert len(sizes) == 2 and sizes[0] == N_FEATURES, sizes  # one explanation request per feature
    assert server.count == 0  # nothing went through the live endpoint
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


def test_partial_failures_are_recorded_per_feature(sampled, tmp_path, server, monkeypatch):
    server.reset(faults=["ok", "400", "ok"])  # per batch request, in order: the second explanation is refused
    assert run(sampled, tmp_path / "run", "anthropic", server, monkeypatch) == 1
    failed = rows(tmp_path / "run", "SELECT stage, message FROM errors WHERE resolved = 0")
    assert len(failed) == 1 and failed[0][0] == "explain" and "invalid_request_error" in failed[0][1]
    assert rows(tmp_path / "run", "SELECT count(DISTINCT feature) FROM scores")[0][0] == N_FEATURES - 1


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_kill_between_submit_and_store_resumes_without_submitting_again(
    sampled, tmp_path, kind, server, monkeypatch
):
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


def test_a_slow_batch_is_polled_and_the_run_resumes_after_a_kill_while_polling(sampled, tmp_path, server, monkeypatch):
    job = tmp_path / "job.toml"
    job.write_text("[llm]\nbatch_poll_s = 0.05\n")
    server.batch_faults.append("slow:0.5")
    assert run(sampled, tmp_path / "run", "anthropic", server, monkeypatch, "--job", str(job)) == 0
    assert batch_sizes(server)[0] == N_FEATURES
    words = {w for (w,) in rows(tmp_path / "run", "SELECT provider_status FROM batches")}
    assert "ended" in words


@pytest.mark.parametrize("backend", ["baseline", "local"])
def test_batch_with_a_backend_without_a_batch_api_is_refused_before_sampling(tmp_path, backend, capsys):
    argv = ["--sae", "demo", "--n-tokens", "2048", "--n-features", "2", "--run-dir", str(tmp_path / "r")]
    assert main(["run", *argv, "--explainer", backend, "--batch"]) != 0
    err = capsys.readouterr().err
    assert "--batch" in err and "no batch API" in err
    assert not (tmp_path / "r" / "autointerp.sqlite").exists()
