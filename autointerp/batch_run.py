"""Batch mode (`autointerp run --batch`): the LLM stages sent through the provider's batch API, in rounds.

A round is a replay pass and then a batch. The pass runs the ordinary LLM stages (autointerp.interpret, and
through it autointerp.explain and the scorers, unchanged) against `ReplayBackend`s, which answer every
request from the answers stored in the run database and hold every other request back, collecting it. When
nothing more can move, the pass is cancelled and what it collected is submitted as one batch per backend.
Features whose answers were all stored finish during the pass and are stored by the ordinary code, each in
its own transaction, with the same parsing, scoring and failure recording as a live run. So:

    round 1: every feature's explanation request                 -> one batch
    round 2: every scoring request (simulation and detection, of
             the LLM explanation and of both controls)           -> one batch
    round 3+: only where an answer could not be read and the stage asks again (rare)

Requests are identified by a hash of backend and request (`request_id`, the batch's custom id), so a pass
asks for exactly the requests a live run would send, and a request is never submitted twice. Every batch and
its requests are stored before submission (autointerp.batch_ledger) and the provider's id right after, so a
run killed at any point resumes by finding and polling the same batches. A request that errored or expired
fails its feature like a failed live call; so do answers that stayed unreadable after the stage's re-asks.
`--retry-failed` drops exactly those requests' outcomes (the ones a stored failure's calls point to) and
resubmits only them.
Costs come from the stored responses, marked `via_batch`, at the provider's batch discount.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, cast

from autointerp.batch_ledger import Answer, BatchLedger
from autointerp.config import RunConfig
from autointerp.errors import InputError, expected
from autointerp.interpret import (
    SCORERS_IN_ORDER,
    backend_specs,
    control_partners,
    interpret_run,
    resolve_backends,
    settle_scorers,
)
from autointerp.llm.base import LLMBackend, LLMCallError, LLMRequest, LLMResponse, complete_each
from autointerp.llm.batch import LIMITS, BatchClient, batch_client, split_items
from autointerp.llm.spec import parse_backend_spec
from autointerp.llm_calls import LLMStageFailure
from autointerp.reporting import Progress, Reporter
from autointerp.scorers import ScoringItem, make_scorer

BATCH_KINDS = ("anthropic", "openai")  # the backends whose providers have a batch API
MAX_ROUNDS = 12  # explain + score, and the stages' own re-asks of unreadable answers (a few each)
IDLE_TICK_S = 0.02  # a replay pass makes no I/O: this long with nothing asked, `IDLE_TICKS` times, is the end
IDLE_TICKS = 10
FIND_SLACK = datetime.timedelta(minutes=10)  # clock difference allowed when finding an unstored batch


def check_batch(cfg: RunConfig) -> None:
    """InputError, before anything is sampled or submitted, when --batch meets a backend without a batch API."""
    if not cfg.llm.batch:
        return
    for role, spec in zip(("explainer", "simulator"), backend_specs(cfg)[:2], strict=True):
        kind = parse_backend_spec(spec).kind
        if kind not in BATCH_KINDS:
            raise InputError(
                expected(
                    f"--batch with {role} {spec!r}",
                    f"a {kind} backend, which has no batch API",
                    "anthropic:<model> or openai:<model> for both explainer and simulator",
                    "Drop --batch to run it live.",
                )
            )


def request_id(backend: str, request: LLMRequest) -> str:
    """The custom id of `request` to `backend`: the same request always gets the same id (1-64 characters)."""
    return "r" + hashlib.sha256(f"{backend}\n{request.model_dump_json()}".encode()).hexdigest()[:48]


class Activity:
    """What a pass does: `count` of requests asked and store calls (a pass with requests waiting is over when it
    stops moving); `answered`: prompt hash (CallRecord.prompt_hash) -> custom id of each stored answer used."""

    def __init__(self) -> None:
        self.count = 0
        self.answered: dict[str, str] = {}


class _CountingStore:
    """The run's store, counting every call into `activity` (a feature being scored, CPU only, still shows as
    activity, so a pass is not cut short while features finish). A failure stored with its calls marks the
    stored answers those calls got as unusable, so `--retry-failed` asks for them again."""

    _WITH_CALLS = frozenset({"record_failure", "save_scored"})

    def __init__(self, store: Any, activity: Activity, ledger: BatchLedger) -> None:
        self._store, self._activity, self._ledger = store, activity, ledger

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._activity.count += 1
            if name in self._WITH_CALLS:
                failed = [c.prompt_hash for c in kwargs.get("calls") or () if not c.ok]
                self._ledger.mark_unusable([self._activity.answered[h] for h in failed if h in self._activity.answered])
            return value(*args, **kwargs)

        return counted


class ReplayBackend:
    """Stands in for `backend` during a pass: stored answers come back as responses (an errored or expired
    request as an LLMCallError), any other request is noted in `wanted` and waits until the pass is
    cancelled. Everything else (name, capabilities, cost) is the wrapped backend's."""

    _HIDDEN = frozenset({"score_value_slots", "score_yes_no", "judge_tokens"})  # teacher-forced modes: no batch
    max_in_flight = 1_000_000  # a batch takes every request at once: interpret_run must not hold features back

    def __init__(
        self,
        backend: LLMBackend,
        answers: dict[str, Answer],
        wanted: dict[str, tuple[LLMBackend, LLMRequest]],
        activity: Activity,
    ) -> None:
        self._backend, self._answers, self._wanted, self._activity = backend, answers, wanted, activity

    def __getattr__(self, name: str) -> Any:
        if name in self._HIDDEN:
            raise AttributeError(name)
        return getattr(self._backend, name)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        cid = request_id(self._backend.name, request)
        self._activity.count += 1
        answer = self._answers.get(cid)
        if answer is None:
            self._wanted[cid] = (self._backend, request)
            await asyncio.Event().wait()  # until the pass is cancelled
        assert answer is not None
        self._activity.answered[request.prompt_hash()] = cid
        if answer.response is None:
            raise LLMCallError(self._backend.name, None, f"batch request {cid} {answer.status}: {answer.error}", 1)
        return answer.response

    async def complete_all(self, requests: Sequence[LLMRequest]) -> list[LLMResponse | LLMCallError]:
        return await complete_each(self.complete, requests)  # through this replay's complete, not the backend's


class _PassReporter(Reporter):
    """A pass's notes go to the run's reporter once per run (passes repeat them); its progress is not shown
    (batch progress is)."""

    def __init__(self, outer: Reporter) -> None:
        self.outer, self.seen = outer, set[str]()

    def note(self, text: str) -> None:
        if text.startswith("Interrupted while"):  # every pass but the last ends so, by design
            return
        if text not in self.seen:
            self.seen.add(text)
            self.outer.note(text)

    def progress(self) -> Progress:
        return Progress()


def _control_probes(store: Any, run_id: str, cfg: RunConfig, simulator: LLMBackend) -> list[Coroutine]:
    """Once every feature is explained: each pending feature's control judgements, asked alongside the LLM
    explanation's (the live run asks for them after it, which would cost a round). Their results are
    dropped; interpret_run scores the controls itself once their answers are stored."""
    if store.pending_features(run_id, "explained"):
        return []
    explanations = store.load_explanations(run_id)
    baselines = store.load_explanations(run_id, "baseline")
    partners = control_partners(sorted(explanations), cfg.scoring.controls_share, cfg.selection.seed)
    names = [n for n in SCORERS_IN_ORDER if n in (cfg.scoring.scorers or ())]
    scorers = {n: make_scorer(n, simulator, cfg) for n in names}
    pending = [f for f in store.pending_features(run_id, "scored") if f in partners]
    samples = {s.feature: s for s in store.load_samples(run_id) if s.feature in pending} if pending else {}

    async def judge(name: str, item: ScoringItem) -> None:
        try:
            await scorers[name].score(item)
        except LLMStageFailure:
            pass

    probes = []
    for feature in pending:
        sample, other = samples[feature], partners[feature]
        items = []
        if feature in baselines:
            items.append(ScoringItem(sample=sample, explanation=baselines[feature].text, source="baseline"))
        if other is not None and other in explanations:
            items.append(ScoringItem(sample=sample, explanation=explanations[other].text, source=f"other:{other}"))
        probes += [judge(name, item) for item in items for name in names]
    return probes


async def _replay_pass(
    store: Any,
    run_id: str,
    cfg: RunConfig,
    backends: tuple[LLMBackend, LLMBackend, LLMBackend, str],
    answers: dict[str, Answer],
    retry_failed: bool,
    reporter: Reporter,
) -> tuple[dict | None, dict[str, tuple[LLMBackend, LLMRequest]]]:
    """(the run's summary if every feature finished, else None; the requests the pass could not answer)."""
    explainer, simulator, baseline, note = backends
    wanted: dict[str, tuple[LLMBackend, LLMRequest]] = {}
    activity = Activity()
    replays = {id(b): ReplayBackend(b, answers, wanted, activity) for b in (explainer, simulator)}
    stand_ins = cast(Any, (replays[id(explainer)], replays[id(simulator)], baseline, note))
    counted = cast(Any, _CountingStore(store, activity, BatchLedger(store, run_id)))
    main = asyncio.create_task(
        interpret_run(counted, run_id, cfg, retry_failed=retry_failed, reporter=reporter, backends=stand_ins)
    )
    probes: list[asyncio.Future] = []
    probed = False
    while not main.done():
        last, still = -1, 0
        # Over when requests wait and nothing has moved for IDLE_TICKS ticks; with none waiting, the pass is
        # still working (a feature's scoring is CPU only) and runs to its end.
        while not main.done() and (still < IDLE_TICKS or not wanted):
            await asyncio.sleep(IDLE_TICK_S)
            still, last = (still + 1, last) if activity.count == last else (0, activity.count)
        if probed or main.done():
            break
        # Idle: explanations this pass could store are stored, so the controls can be asked for now.
        probed = True
        probes = [asyncio.ensure_future(p) for p in _control_probes(store, run_id, cfg, cast(Any, stand_ins[1]))]
        if not probes:
            break
    for task in (*probes, main):
        task.cancel()
    await asyncio.gather(*probes, return_exceptions=True)
    try:
        summary = await main
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # we were cancelled ourselves
            raise
        return None, wanted
    return summary, {}


async def _settle(ledger: BatchLedger, clients: dict[str, BatchClient], reporter: Reporter, poll_s: float) -> None:
    """Bring every batch of the run to 'ingested': find (or, if the provider never got it, submit) a batch
    stored without its id, poll the open ones until they end, store their results."""
    for batch in ledger.batches(("submitting",)):
        client = clients[batch.backend]
        submitted = datetime.datetime.fromisoformat(batch.submitted_at)
        adopted = ledger.adopted_ids()
        found = [
            s
            for s in await client.find(batch.batch_key, since=submitted - FIND_SLACK, n_requests=batch.n_requests)
            if s.batch_id not in adopted
        ]
        if found:
            chosen = min(found, key=lambda s: abs(((s.created_at or submitted) - submitted).total_seconds()))
            ledger.record_batch_id(batch.batch_key, chosen.batch_id)
            reporter.note(f"Found {chosen.line()}, submitted before the run stopped; polling it, not resubmitting.")
        else:
            items = list(ledger.requests(batch.batch_key).items())
            batch_id = await client.submit(items, key=batch.batch_key)
            ledger.record_batch_id(batch.batch_key, batch_id)
            reporter.note(f"{batch.backend} never received batch {batch.batch_key}; submitted it now as {batch_id}.")
    open_batches = ledger.batches(("open",))
    if not open_batches:
        return
    with reporter.progress() as progress:
        tasks = {b.batch_key: progress.add_task(f"{b.stage} batch {b.batch_id}", b.n_requests) for b in open_batches}
        shown = {b.batch_key: 0 for b in open_batches}
        words = {b.batch_key: b.provider_status for b in open_batches}
        while open_batches:
            for batch in list(open_batches):
                client, batch_id = clients[batch.backend], cast(str, batch.batch_id)
                status = await client.status(batch_id)
                done = status.total - status.processing
                progress.advance(tasks[batch.batch_key], done - shown[batch.batch_key], info=status.line())
                shown[batch.batch_key] = done
                if status.provider_status != words[batch.batch_key]:
                    words[batch.batch_key] = status.provider_status
                    ledger.record_status(batch.batch_key, status)
                    reporter.note(status.line())
                if status.done:
                    results = await client.results(batch_id, ledger.requests(batch.batch_key))
                    ledger.record_results(batch.batch_key, results)
                    failed = sum(r.response is None for r in results)
                    reporter.note(
                        f"{batch.stage} batch {batch_id}: {len(results) - failed} answers stored, {failed} failed."
                    )
                    open_batches.remove(batch)
            if open_batches:
                await asyncio.sleep(poll_s)


async def _submit(
    ledger: BatchLedger,
    clients: dict[str, BatchClient],
    wanted: dict[str, tuple[LLMBackend, LLMRequest]],
    stage: str,
    reporter: Reporter,
) -> None:
    """One batch per backend (more where the provider's per-batch limits require), each stored, then sent."""
    by_backend: dict[str, list[tuple[str, LLMRequest]]] = {}
    for cid, (backend, request) in wanted.items():
        by_backend.setdefault(backend.name, []).append((cid, request))
    for name, items in by_backend.items():
        client = clients[name]
        max_requests, max_bytes = LIMITS[client.provider]
        size = lambda r: len(r.model_dump_json()) + 200  # noqa: E731 - an upper bound of the provider's line
        for chunk in split_items(items, max_requests, max_bytes // 2, size):
            client.check(chunk)  # refuse a request the provider would, before anything is stored or sent
            key = f"autointerp-{uuid.uuid4().hex[:20]}"
            ledger.record_submission(key, name, stage, chunk)
            try:
                batch_id = await client.submit(chunk, key=key)
            except LLMCallError as exc:  # the batch may exist all the same: _settle looks for it before resending
                reporter.note(f"Submitting {stage} batch {key} to {name} failed ({exc}); looking for it next.")
                continue
            ledger.record_batch_id(key, batch_id)
            reporter.note(f"Submitted {stage} batch {batch_id} to {name}: {len(chunk)} requests.")


async def run_batched(
    store: Any, run_id: str, cfg: RunConfig, retry_failed: bool = False, reporter: Reporter | None = None
) -> dict:
    """The LLM stages of run `run_id` through batch APIs (module docstring); returns the run's summary."""
    reporter = reporter or Reporter()
    check_batch(cfg)
    cfg = settle_scorers(cfg)
    explainer, simulator, baseline, note = resolve_backends(cfg)
    clients = {b.name: batch_client(b) for b in (explainer, simulator)}
    ledger = BatchLedger(store, run_id)
    if retry_failed:
        dropped = ledger.forget_failed()
        reporter.note(f"--retry-failed: {dropped} batch request(s) without a usable answer will be sent again.")
    quiet = _PassReporter(reporter)
    for round_no in range(1, MAX_ROUNDS + 1):
        await _settle(ledger, clients, reporter, cfg.llm.batch_poll_s)
        backends = (explainer, simulator, baseline, note)
        first = retry_failed and round_no == 1
        summary, wanted = await _replay_pass(store, run_id, cfg, backends, ledger.answers(), first, quiet)
        if summary is not None:
            return summary
        store.set_run_status(run_id, "scoring")  # the pass ended as 'interrupted'; the run goes on
        known = ledger.known_ids()
        new = {cid: v for cid, v in wanted.items() if cid not in known}
        if not new:
            raise RuntimeError(
                f"batch mode, run {run_id}: a pass stopped with {len(wanted)} request(s) waiting, all already "
                "answered; expected each request to be built the same way every time (a bug: please report it)."
            )
        stage = "explain" if store.pending_features(run_id, "explained") else "score"
        await _submit(ledger, clients, new, stage, reporter)
    raise RuntimeError(
        f"batch mode, run {run_id}: still asking after {MAX_ROUNDS} rounds of batches; expected explain and score "
        "to finish in a few. Run it again to go on from what is stored."
    )
