"""A feature one scorer failed on is partly scored, not scored; `--retry-failed` completes it."""

import asyncio
import io

from rich.console import Console
from test_interpret import baseline_run, failing
from test_store import RUN

from autointerp.config import LLMConfig, RunConfig
from autointerp.interpret import interpret_run
from autointerp.scorers import DetectionFailure, DetectionScorer
from autointerp.show import summary_table
from autointerp.tables import format_rows, run_table


def test_a_failed_scorer_leaves_the_feature_partly_scored_and_retry_failed_completes_it(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(DetectionScorer, "score", failing(DetectionFailure, "detect"))
        store, summary = baseline_run(tmp_path)
    assert (summary["scored"], summary["partly_scored"], summary["failed"]) == (0, 3, 0)
    assert store.partly_scored_features(RUN) == {1: ["detect"], 2: ["detect"], 3: ["detect"]}
    row = format_rows(run_table([tmp_path]), "csv")
    assert "partly_scored" in row.splitlines()[0]
    console = Console(file=io.StringIO(), width=120)
    console.print(summary_table(summary))  # the end-of-run table says which scorer is missing
    assert "partly scored (a scorer failed)" in console.file.getvalue() and "1 (detection)" in console.file.getvalue()

    cfg = RunConfig(sae="demo", llm=LLMConfig(explainer="baseline"))
    again = asyncio.run(interpret_run(store, RUN, cfg))  # without --retry-failed nothing is redone
    assert (again["scored"], again["partly_scored"]) == (0, 3)
    retried = asyncio.run(interpret_run(store, RUN, cfg, retry_failed=True))
    assert (retried["scored"], retried["partly_scored"], retried["failed"]) == (3, 0, 0)
    assert store.partly_scored_features(RUN) == {}
    assert sorted(store.detection_rows(RUN, ["recall"])) == [1, 2, 3] and retried["correlation_n"] == 3
