"""Writing a run database: a run and its status, then each stage's result per feature.

Each feature's stage result is committed in one transaction together with the feature's status, so an
interrupted run loses only the work in flight. Writes replace rows on their primary key: redoing work
never duplicates a row. LLM calls are a ledger: every call is a new row.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

from autointerp.errors import StoreError
from autointerp.records import CallRecord, Explanation, FeatureSample, Simulation
from autointerp.scoring import FeatureScores
from autointerp.settings_hash import settings_hash
from autointerp.store import rows
from autointerp.store.connection import guarded
from autointerp.store.queries import StoreQueries
from autointerp.store.schema import FeatureStage, RunStatus

if TYPE_CHECKING:  # config imports the corpus module and with it torch, the scorers the LLM backends
    from autointerp.config import RunConfig
    from autointerp.scorers.detection import DetectionResult


class StoreWrites(StoreQueries):
    """The writers of a run database (a store opened with create=True); they read through StoreQueries."""

    # ------------------------------------------------------------------------------------ helpers

    def _set_stage(self, run_id: str, features: Iterable[int], stage: FeatureStage) -> None:
        now = rows.now()
        self._put(
            "feature_status",
            ({"run_id": run_id, "feature": f, "stage": stage, "updated_at": now} for f in features),
        )

    def _put_errors(self, run_id: str, feature: int, errors: Iterable[tuple[str, str]]) -> None:
        now = rows.now()
        self._put(
            "errors",
            (
                {
                    "run_id": run_id,
                    "feature": feature,
                    "stage": stage,
                    "message": message,
                    "created_at": now,
                    "resolved": 0,
                }
                for stage, message in errors
            ),
            replace=False,
        )

    def _put_settings(self, run_id: str, settings: Mapping[str, Any] | None) -> str | None:
        """Store the settings once per run under their hash (first writer wins: the row is the same for every
        feature); their hash, None when there are none."""
        if settings is None:
            return None
        digest = settings_hash(settings)
        self.db.table("settings").insert(self._redact(rows.settings_row(run_id, digest, settings)), ignore=True)
        return digest

    def _touch(self, run_id: str) -> None:
        self.db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", [rows.now(), run_id])

    def _put_calls(self, run_id: str, feature: int, stage: str | None, calls: Iterable[CallRecord]) -> None:
        """The calls as new llm_calls rows, under `stage`, or each under its own when None."""
        self._put("llm_calls", (rows.call_row(run_id, feature, stage, c) for c in calls), replace=False)

    # ------------------------------------------------------------------------------------ runs

    @guarded
    def create_run(
        self,
        run_id: str,
        name: str,
        config: "RunConfig",
        sae_fingerprint: str,
        corpus_fingerprint: str,
        versions: Mapping[str, str | None] | None = None,
        *,
        training_run: str | None = None,
        step: int | None = None,
    ) -> None:
        """Record a new run with its full config (status 'sampling'). versions None -> package_versions().

        Raises StoreError if run_id already exists (resume it instead).
        """
        self._writing()
        if self.get_run(run_id) is not None:
            raise StoreError(f"run database {self.path}: run {run_id!r} already exists; resume it or pick another id.")
        versions = rows.package_versions() if versions is None else versions
        row = rows.run_row(run_id, name, config, sae_fingerprint, corpus_fingerprint, versions, training_run, step)
        with self.db.atomic():
            self._put("runs", [row], replace=False)

    @guarded
    def update_run_config(self, run_id: str, config: "RunConfig") -> None:
        """Store a config that settles what the stored one left open (e.g. the LLM backends chosen after
        `autointerp sample`). The caller checks that nothing already decided changes."""
        self._writing()
        with self.db.atomic():
            self.db.execute(
                "UPDATE runs SET config_json = ?, results_key_json = ?, updated_at = ? WHERE run_id = ?",
                [
                    self._redact({"c": config.model_dump_json()})["c"],
                    json.dumps(config.results_key(), sort_keys=True),
                    rows.now(),
                    run_id,
                ],
            )

    @guarded
    def set_run_status(self, run_id: str, status: RunStatus) -> None:
        if status not in get_args(RunStatus):
            raise ValueError(f"run status: found {status!r}; expected one of {get_args(RunStatus)}")
        self._writing()
        with self.db.atomic():
            self.db.execute("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?", [status, rows.now(), run_id])

    # ------------------------------------------------------------------------------------ stage results

    @guarded
    def save_samples(self, run_id: str, samples: Sequence[FeatureSample]) -> None:
        """Stats and windows of every sampled feature, and status 'sampled', in one transaction.

        A feature saved again has its windows replaced (none of the old ones survive).
        """
        self._writing()
        features = [s.feature for s in samples]
        with self.db.atomic():
            self._put("features", (rows.stats_row(run_id, s.stats) for s in samples))
            self.db.conn.executemany(
                "DELETE FROM examples WHERE run_id = ? AND feature = ?", [(run_id, f) for f in features]
            )
            self._put(
                "examples",
                (rows.window_row(run_id, s.feature, i, w) for s in samples for i, w in enumerate(s.windows)),
            )
            self._set_stage(run_id, features, "sampled")
            self._touch(run_id)

    @guarded
    def save_sampling_plan(self, run_id: str, features: Iterable[int]) -> None:
        """The features the run samples (`sampling_plan`), so a resumed run knows when sampling is finished."""
        self._writing()
        with self.db.atomic():
            self._put("sampling_plan", ({"run_id": run_id, "feature": int(f)} for f in features))

    @guarded
    def save_explanation(
        self, run_id: str, expl: Explanation, source: str = "llm", *, calls: Sequence[CallRecord] = ()
    ) -> None:
        """An explanation (source 'llm' or 'baseline') and its calls; an 'llm' one sets status 'explained'."""
        self._writing()
        with self.db.atomic():
            self._put("explanations", [rows.explanation_row(run_id, expl, source)])
            self._put_calls(run_id, expl.feature, "explain", calls)
            if source == "llm":
                self._set_stage(run_id, [expl.feature], "explained")
            self._touch(run_id)

    @guarded
    def save_scored(
        self,
        run_id: str,
        feature: int,
        simulations: Sequence[Simulation],
        scores: Mapping[str, FeatureScores],
        *,
        lifts: Mapping[str, float | None] | None = None,
        calls: Sequence[CallRecord] = (),
        settings: Mapping[str, Any] | None = None,
        detections: Sequence["DetectionResult"] = (),
        detection_settings: Mapping[str, Any] | None = None,
        errors: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Every scorer's results for one feature and status 'scored', in one transaction.

        simulations and scores (keyed by explanation_source) land in `simulations` and `scores`; `lifts`
        ('lift', 'lift_other'; interpret.control_lifts) go on the 'llm' scores row (a missing one, and both on
        control rows, are stored as NULL). `detections` (one DetectionResult per explanation judged) land in
        `detection_scores`. `settings` / `detection_settings` (settings_hash.score_settings of each scorer) are
        stored once per run under their hash, and the hash on every row of that scorer; None leaves it NULL.
        `calls` are recorded each under its own stage ('simulate', 'detect'). `errors` ((stage, message): a
        scorer that failed on the LLM explanation while another succeeded) are recorded as open errors.
        Replaces whatever the feature had before (a control scored earlier but not now is removed).
        """
        self._writing()
        stray = [s.feature for s in (*simulations, *detections) if s.feature != feature]
        if stray:
            raise ValueError(
                f"save_scored feature {feature}: found results of features {stray}; expected only {feature}"
            )
        unknown = set(lifts or {}) - set(rows.LIFT_COLUMNS)
        if unknown:
            raise ValueError(f"save_scored lifts: found {sorted(unknown)}; expected only {rows.LIFT_COLUMNS}")
        with self.db.atomic():
            for table in ("simulations", "scores", "detection_scores"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ? AND feature = ?", [run_id, feature])
            digest = self._put_settings(run_id, settings)
            detection_digest = self._put_settings(run_id, detection_settings)
            self._put("simulations", (rows.simulation_row(run_id, s) for s in simulations))
            self._put(
                "scores",
                (
                    rows.score_row(run_id, feature, source, s, (lifts or {}) if source == "llm" else {}, digest)
                    for source, s in scores.items()
                ),
            )
            self._put("detection_scores", (rows.detection_row(run_id, d, detection_digest) for d in detections))
            self._put_calls(run_id, feature, None, calls)
            self._put_errors(run_id, feature, errors)
            if not errors:  # the final rows hold every result now; after a failed scorer a retry reuses the rest
                self.db.execute("DELETE FROM scorer_results WHERE run_id = ? AND feature = ?", [run_id, feature])
            self._set_stage(run_id, [feature], "scored")
            self._touch(run_id)

    @guarded
    def save_scorer_result(
        self,
        run_id: str,
        feature: int,
        scorer: str,
        explanation_source: str,
        *,
        explanation_sha: str,
        settings_hash: str,
        result_json: str,
        calls: Sequence[CallRecord] = (),
    ) -> None:
        """One finished scorer result of a feature still being scored (`scorer_results`) and the calls that made
        it (each under its own stage), in one transaction, as soon as it arrives: an interrupted run keeps it and
        `load_scorer_results` gives it back instead of a new LLM call. Replaces an earlier row of the same
        (feature, scorer, explanation_source)."""
        self._writing()
        row = {
            "run_id": run_id,
            "feature": feature,
            "scorer": scorer,
            "explanation_source": explanation_source,
            "explanation_sha": explanation_sha,
            "settings_hash": settings_hash,
            "result_json": result_json,
            "created_at": rows.now(),
        }
        with self.db.atomic():
            self._put("scorer_results", [row])
            self._put_calls(run_id, feature, None, calls)
            self._touch(run_id)

    @guarded
    def save_redraws(
        self, run_id: str, redraws: Sequence[Mapping[str, Any]], *, calls: Sequence[CallRecord] = ()
    ) -> None:
        """Rows of `redraw_scores` (autointerp.redraws.redraw_row: feature, redraw, scorer, ...) and their calls
        (each under its own stage), in one transaction; a row with the same (feature, redraw, scorer) is
        replaced."""
        self._writing()
        with self.db.atomic():
            self._put("redraw_scores", ({"run_id": run_id, **r, "created_at": rows.now()} for r in redraws))
            for c in calls:
                self._put_calls(run_id, c.feature, None, [c])
            self._touch(run_id)

    @guarded
    def record_failure(
        self,
        run_id: str,
        feature: int,
        stage: str,
        message: str,
        *,
        calls: Sequence[CallRecord] = (),
        more: Sequence[tuple[str, str]] = (),
        own_call_stages: bool = False,
    ) -> None:
        """A feature's stage failed for good: an open error (and one per (stage, message) of `more`: every
        scorer that failed), its calls, status 'failed' (never a score). The calls are recorded under `stage`
        (best-of-n's judging simulations count as 'explain'), or each under its own with own_call_stages."""
        self._writing()
        with self.db.atomic():
            self._put_errors(run_id, feature, [(stage, message), *more])
            self._put_calls(run_id, feature, None if own_call_stages else stage, calls)
            self._set_stage(run_id, [feature], "failed")
            self._touch(run_id)

    @guarded
    def resolve_failures(self, run_id: str, features: Iterable[int]) -> None:
        """Mark the failed and partly scored features' open errors resolved and put each back at its last
        completed stage ('explained' if it has an LLM explanation, else 'sampled') so pending_features() offers
        it again.
        For `--retry-failed`; a retry that fails again records a new error. Features not failed are left."""
        self._writing()
        failed = self.failed_features(run_id).keys() | self.partly_scored_features(run_id).keys()
        features = [f for f in features if f in failed]
        explained = self.load_explanations(run_id).keys()
        with self.db.atomic():
            self.db.conn.executemany(
                "UPDATE errors SET resolved = 1 WHERE run_id = ? AND feature = ? AND resolved = 0",
                [(run_id, f) for f in features],
            )
            self._set_stage(run_id, [f for f in features if f in explained], "explained")
            self._set_stage(run_id, [f for f in features if f not in explained], "sampled")
            self._touch(run_id)
