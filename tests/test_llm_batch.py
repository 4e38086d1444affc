"""Provider batch APIs (autointerp.llm.batch) through the real anthropic and openai SDKs against the
loopback server's batch endpoints: submit, poll, fetch; an expired batch; partial failures; resubmitting
only the failed requests; a failed OpenAI batch; finding a batch that was submitted but never stored."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
from loopback_llm import LoopbackServer, start_loopback

from autointerp.errors import InputError
from autointerp.llm import LLMCallError, LLMRequest, Message, make_backend
from autointerp.llm.batch import BatchResult, batch_client, split_items

KEY = "sk-loopback-not-a-real-key-0123"
KINDS = ["anthropic", "openai"]
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}


@pytest.fixture(autouse=True)
def _no_keys(no_llm_keys) -> None:
    """Tests see no real keys or base URLs."""


@pytest.fixture
def server():
    server = start_loopback(responder=lambda kind, body: "Explanation: words about dogs")
    yield server
    server.stop()


def backend_for(kind: str, server: LoopbackServer, model: str | None = None):
    url = server.url if kind == "anthropic" else server.openai_url
    return make_backend(
        f"{kind}:{model or MODELS[kind]}@{url}", api_key=KEY, retry_initial_wait_s=0.01, max_attempts=2, timeout_s=5.0
    )


def item(feature: int, **kwargs) -> tuple[str, LLMRequest]:
    request = LLMRequest(
        system="You explain features.",
        prefix=(Message(role="user", content="dog\t10"), Message(role="assistant", content="Explanation: dog")),
        messages=(Message(role="user", content=f"feature {feature}: bark\t7"),),
        max_tokens=50,
        **kwargs,
    )
    return f"explain-f{feature}", request


def submit_and_wait(client, items, **kwargs) -> tuple[str, list, list[BatchResult]]:
    async def go():
        batch_id = await client.submit(items, **kwargs)
        states = [await client.status(batch_id)]
        while not states[-1].done:
            await asyncio.sleep(0.05)
            states.append(await client.status(batch_id))
        return batch_id, states, await client.results(batch_id, dict(items))

    return asyncio.run(go())


def by_id(results: list[BatchResult]) -> dict[str, BatchResult]:
    return {r.custom_id: r for r in results}


@pytest.mark.parametrize("kind", KINDS)
def test_submit_poll_fetch(kind: str, server: LoopbackServer) -> None:
    server.batch_faults.append("slow:0.4")
    llm = backend_for(kind, server)
    client = batch_client(llm)
    items = [item(f) for f in range(3)]
    started = time.monotonic()
    batch_id, states, results = submit_and_wait(client, items)
    assert states[0].state == "in_progress" and states[0].processing == 3  # the id came back before the answers
    assert states[-1].done and states[-1].succeeded == 3 and time.monotonic() - started >= 0.4
    assert sorted(by_id(results)) == [cid for cid, _ in items]
    for r in results:
        assert r.status == "succeeded" and r.response.text == "Explanation: words about dogs"
        assert r.response.via_batch and r.response.usage.input_tokens > 0
        assert r.cost_usd == pytest.approx(llm.cost(r.response.usage) / 2)  # the batch discount
    assert llm.n_calls == 3 and llm.total_cost_usd == pytest.approx(sum(r.cost_usd for r in results))
    # each request went out as the live body: the batch pays for the same prompt
    sent = server.batches[batch_id].items
    assert len(sent) == 3 and all(i["outcome"] == "succeeded" for i in sent)
    kinds = {r.kind for r in server.requests}
    assert kinds == ({"anthropic-batch"} if kind == "anthropic" else {"openai-batch"})


def test_batch_requests_are_the_live_bodies(server: LoopbackServer) -> None:
    llm = backend_for("anthropic", server, model="claude-haiku-5-5")
    cid, request = item(1)
    asyncio.run(batch_client(llm).submit([(cid, request)]))
    (batch,) = server.batches.values()
    # the whole prompt (caching breakpoints, thinking off) reached the server as a live call would send it
    assert batch.items[0]["body"]["usage"]["cache_creation_input_tokens"] > 0
    assert llm.request_body(request)["thinking"] == {"type": "disabled"}


@pytest.mark.parametrize("kind", KINDS)
def test_expired_batch_returns_the_unrun_requests_as_retryable(kind: str, server: LoopbackServer) -> None:
    server.batch_faults.append("expire:1")
    items = [item(f) for f in range(3)]
    _, states, results = submit_and_wait(batch_client(backend_for(kind, server)), items)
    assert states[-1].succeeded == 1 and states[-1].expired == 2
    assert states[-1].provider_status == ("expired" if kind == "openai" else "ended")
    got = by_id(results)
    assert got["explain-f0"].status == "succeeded"
    assert [got[f"explain-f{f}"].status for f in (1, 2)] == ["expired", "expired"]
    assert all(got[f"explain-f{f}"].retryable and got[f"explain-f{f}"].response is None for f in (1, 2))


@pytest.mark.parametrize("kind", KINDS)
def test_partial_failure_then_resubmit_only_the_failed(kind: str, server: LoopbackServer) -> None:
    server.reset(faults=["ok", "400", "500", "ok"])
    llm = backend_for(kind, server)
    client = batch_client(llm)
    items = [item(f) for f in range(4)]
    _, states, results = submit_and_wait(client, items)
    got = by_id(results)
    assert states[-1].succeeded == 2 and states[-1].errored == 2
    assert got["explain-f1"].status == "errored" and not got["explain-f1"].retryable  # a bad request stays bad
    assert got["explain-f2"].status == "errored" and got["explain-f2"].retryable  # a server error may pass
    assert "400" in got["explain-f1"].error or "invalid_request" in got["explain-f1"].error

    retry = [(cid, req) for cid, req in items if got[cid].retryable]
    second_id, _, again = submit_and_wait(client, retry)
    assert [i["custom_id"] for i in server.batches[second_id].items] == ["explain-f2"]  # nothing paid twice
    assert [r.status for r in again] == ["succeeded"]


def test_failed_openai_batch_reports_why(server: LoopbackServer) -> None:
    server.batch_faults.append("fail")
    _, states, results = submit_and_wait(batch_client(backend_for("openai", server)), [item(1), item(2)])
    assert states[-1].provider_status == "failed" and "invalid_file" in states[-1].error
    assert [r.status for r in results] == ["errored", "errored"] and all(r.retryable for r in results)


@pytest.mark.parametrize("kind", KINDS)
def test_results_before_the_end_are_refused(kind: str, server: LoopbackServer) -> None:
    server.batch_faults.append("slow:30")
    client = batch_client(backend_for(kind, server))

    async def go():
        batch_id = await client.submit([item(1)])
        with pytest.raises(LLMCallError, match="results come once it has ended"):
            await client.results(batch_id)
        return (await client.cancel(batch_id)).state

    assert asyncio.run(go()) in ("canceling", "ended")


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_submitted_but_not_stored_is_found_again(kind: str, server: LoopbackServer) -> None:
    client = batch_client(backend_for(kind, server))
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)

    async def go():
        batch_id = await client.submit([item(1), item(2)], key="run7-explain-0")
        # ... the process dies here, before the id is stored; a restart looks for it:
        return batch_id, await client.find("run7-explain-0", since=since, n_requests=2)

    batch_id, found = asyncio.run(go())
    assert [s.batch_id for s in found] == [batch_id]


def test_bad_batches_are_refused_before_anything_is_sent(server: LoopbackServer) -> None:
    client = batch_client(backend_for("anthropic", server, model="claude-haiku-5-5"))
    for items, match in [
        ([], "no requests"),
        ([item(1), item(1)], "appears twice"),
        ([("feature 1", item(1)[1])], "letters, digits"),
        ([("a", item(1, assistant_prefill="Explanation:")[1])], "prefill"),
    ]:
        with pytest.raises(InputError, match=match):
            asyncio.run(client.submit(items))
    assert server.count == 0
    with pytest.raises(InputError, match="no batch API"):
        batch_client(make_backend("baseline"))


def test_split_items_respects_counts_and_sizes() -> None:
    items = [item(f) for f in range(7)]
    assert [len(c) for c in split_items(items, 3)] == [3, 3, 1]
    assert [len(c) for c in split_items(items, 10, max_bytes=25, size=lambda r: 10)] == [2, 2, 2, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_create_whose_reply_is_lost_is_not_retried_and_is_found(kind: str, server: LoopbackServer) -> None:
    server.batch_faults.append("lost")  # made and running, but the create call is answered 500
    client = batch_client(backend_for(kind, server))  # max_attempts=2: a retryable 500 would be sent again
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)

    async def go():
        with pytest.raises(LLMCallError, match="reply lost"):
            await client.submit([item(1), item(2)], key="run8-explain-0")
        return await client.find("run8-explain-0", since=since, n_requests=2)

    found = asyncio.run(go())
    assert len(server.batches) == 1  # a second create would have billed the same requests twice
    assert [s.batch_id for s in found] == list(server.batches)
