"""Reading a run database: runs, feature progress, stage results as records, and the raw rows that
summaries and tables are computed from (the statistics themselves live with the readers,
`autointerp.run_summary` and `autointerp.tables`). Only tables are read, never the views, so a file
written before the views existed reads the same; a column an older schema version lacks reads as NULL
(a file opened read-only is never upgraded)."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autointerp.errors import StoreError, expected
from autointerp.records import Explanation, FeatureReport, FeatureSample, Window
from autointerp.store import rows
from autointerp.store.connection import StoreConnection, guarded
from autointerp.store.schema import DETECTION_COLUMNS, STAGES, TABLES, FeatureStage


class StoreQueries(StoreConnection):
    """The readers of a run database (everything here works on a read-only store)."""

    # ------------------------------------------------------------------------------------ runs

    @guarded
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row with config, results_key and versions decoded (keys lose `_json`); None if absent."""
        found = self._rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows.decode_run(found[0]) if found else None

    def require_run(self, run_id: str) -> dict[str, Any]:
        """get_run, raising StoreError when the database has no such run."""
        run = self.get_run(run_id)
        if run is None:
            raise StoreError(expected(f"run database {self.path}", f"no run {run_id!r}", "a run id it holds"))
        return run

    @guarded
    def list_runs(self) -> list[dict[str, Any]]:
        """Every run in the database (decoded like get_run), ordered by training_run, step, created_at."""
        found = self._rows("SELECT * FROM runs ORDER BY training_run, step, created_at, rowid")
        return [rows.decode_run(r) for r in found]

    @guarded
    def latest_run_id(self) -> str | None:
        found = self._rows("SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1")
        return found[0]["run_id"] if found else None

    # ------------------------------------------------------------------------------------ progress

    @guarded
    def pending_features(self, run_id: str, stage: FeatureStage) -> list[int]:
        """Features not yet at `stage` ('explained' or 'scored'), failed excluded, ascending."""
        if stage not in STAGES[1:]:
            raise ValueError(f"pending_features stage: found {stage!r}; expected one of {STAGES[1:]}")
        before = STAGES[: STAGES.index(stage)]
        marks = ", ".join("?" * len(before))
        found = self._rows(
            f"SELECT feature FROM feature_status WHERE run_id = ? AND stage IN ({marks}) ORDER BY feature",
            [run_id, *before],
        )
        return [r["feature"] for r in found]

    @guarded
    def failed_features(self, run_id: str) -> dict[int, str]:
        """Features whose status is 'failed' -> the stage of their latest open error."""
        found = self._rows(
            """
            SELECT s.feature,
                   (SELECT e.stage FROM errors e
                    WHERE e.run_id = s.run_id AND e.feature = s.feature AND e.resolved = 0
                    ORDER BY e.id DESC LIMIT 1) AS stage
            FROM feature_status s WHERE s.run_id = ? AND s.stage = 'failed' ORDER BY s.feature
            """,
            [run_id],
        )
        return {r["feature"]: r["stage"] or "" for r in found}

    @guarded
    def open_errors(self, run_id: str) -> list[tuple[int, str, str]]:
        """(feature, stage, message) of every error not yet resolved, oldest first (the CLI groups them)."""
        found = self._rows(
            "SELECT feature, stage, message FROM errors WHERE run_id = ? AND resolved = 0 ORDER BY id", [run_id]
        )
        return [(r["feature"], r["stage"], r["message"]) for r in found]

    @guarded
    def load_scorer_results(
        self, run_id: str, feature: int | None = None
    ) -> dict[tuple[int, str, str], dict[str, Any]]:
        """(feature, scorer, explanation_source) -> its `scorer_results` row (explanation_sha, settings_hash,
        result_json, created_at): the finished results of features not yet fully scored, for all features or one;
        empty for a file written before the table existed."""
        if "scorer_results" not in self.db.table_names():
            return {}
        where, params = ("AND feature = ?", [run_id, feature]) if feature is not None else ("", [run_id])
        found = self._rows(f"SELECT * FROM scorer_results WHERE run_id = ? {where}", params)
        return {(r["feature"], r["scorer"], r["explanation_source"]): r for r in found}

    @guarded
    def partly_scored_features(self, run_id: str) -> dict[int, list[str]]:
        """Features scored by some scorers while another failed (status 'scored' with open errors) -> the
        stages of those errors ('simulate', 'detect'): not fully scored, so `--retry-failed` redoes them."""
        found = self._rows(
            """
            SELECT s.feature, e.stage FROM feature_status s
            JOIN errors e ON e.run_id = s.run_id AND e.feature = s.feature AND e.resolved = 0
            WHERE s.run_id = ? AND s.stage = 'scored' ORDER BY s.feature, e.id
            """,
            [run_id],
        )
        out: dict[int, list[str]] = {}
        for r in found:
            out.setdefault(r["feature"], []).append(r["stage"])
        return out

    @guarded
    def stage_counts(self, run_id: str) -> dict[str, int]:
        """Status ('sampled', 'explained', 'scored', 'failed') -> how many of the run's features have it;
        statuses no feature has are absent."""
        found = self._rows("SELECT stage, count(*) AS n FROM feature_status WHERE run_id = ? GROUP BY stage", [run_id])
        return {r["stage"]: r["n"] for r in found}

    @guarded
    def call_totals(self, run_id: str) -> dict[str, Any]:
        """Every recorded LLM call of the run summed: llm_calls (count), cost_usd (None when some call's
        price is unknown: a total that leaves calls out is not the total), unpriced_calls (calls of unknown
        price), input_tokens, cached_input_tokens, cache_write_tokens, output_tokens (0 when there was none)."""
        return self._rows(
            "SELECT count(*) AS llm_calls, "
            "CASE WHEN count(*) > count(cost_usd) THEN NULL ELSE total(cost_usd) END AS cost_usd, "
            "count(*) - count(cost_usd) AS unpriced_calls, "
            "coalesce(sum(input_tokens), 0) AS input_tokens, "
            "coalesce(sum(cached_input_tokens), 0) AS cached_input_tokens, "
            "coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens, "
            "coalesce(sum(output_tokens), 0) AS output_tokens "
            "FROM llm_calls WHERE run_id = ?",
            [run_id],
        )[0]

    # ------------------------------------------------------------------------------------ records

    @guarded
    def load_samples(self, run_id: str) -> list[FeatureSample]:
        """Every sampled feature's stats and windows (sampler order), by ascending feature."""
        windows = self._windows(run_id)
        return [
            FeatureSample(stats=rows.stats(r), windows=windows.get(r["feature"], []))
            for r in self._rows("SELECT * FROM features WHERE run_id = ? ORDER BY feature", [run_id])
        ]

    @guarded
    def sampled_features(self, run_id: str) -> set[int]:
        """The features whose samples are stored."""
        return {r["feature"] for r in self._rows("SELECT feature FROM features WHERE run_id = ?", [run_id])}

    @guarded
    def sampling_plan(self, run_id: str) -> list[int]:
        """The features the run chose to sample, ascending; empty for a run sampled before plans were stored."""
        if "sampling_plan" not in self.db.table_names():
            return []
        found = self._rows("SELECT feature FROM sampling_plan WHERE run_id = ? ORDER BY feature", [run_id])
        return [r["feature"] for r in found]

    @guarded
    def load_explanations(self, run_id: str, source: str = "llm") -> dict[int, Explanation]:
        found = self._rows(
            "SELECT * FROM explanations WHERE run_id = ? AND source = ? ORDER BY feature", [run_id, source]
        )
        return {r["feature"]: rows.explanation(r) for r in found}

    @guarded
    def load_reports(self, run_id: str) -> list[FeatureReport]:
        """One report per sampled feature (ascending): stats, windows, LLM explanation, scores, controls and
        open errors. `scores` holds the 'llm' row's columns, lift, lift_other and json; `controls` maps
        'baseline' / 'other' to their rows (with `explanation_source`, e.g. 'other:17'); `detection` maps
        'llm' / 'baseline' / 'other' to their detection_scores rows."""
        run = self.require_run(run_id)
        config = run["config"]
        windows = self._windows(run_id)
        explanations = self.load_explanations(run_id)
        scores: dict[int, dict[str, Any]] = {}
        controls: dict[int, dict[str, dict]] = {}
        for row in self._rows("SELECT * FROM scores WHERE run_id = ?", [run_id]):
            feature, source = row.pop("feature"), row.pop("explanation_source")
            del row["run_id"]
            if source == "llm":
                scores[feature] = row
            else:
                controls.setdefault(feature, {})[source.split(":")[0]] = {**row, "explanation_source": source}
        detection = self.detection_rows(run_id, ["backend", *DETECTION_COLUMNS, "settings_hash", "json"])
        errors: dict[int, list[str]] = {}
        for row in self._rows("SELECT * FROM errors WHERE run_id = ? AND resolved = 0 ORDER BY id", [run_id]):
            errors.setdefault(row["feature"], []).append(f"{row['stage']}: {row['message']}")
        return [
            FeatureReport(
                run_id=run_id,
                feature=r["feature"],
                stats=rows.stats(r),
                windows=windows.get(r["feature"], []),
                explanation=explanations.get(r["feature"]),
                scores=scores.get(r["feature"]),
                controls=controls.get(r["feature"], {}),
                detection=detection.get(r["feature"], {}),
                errors=errors.get(r["feature"], []),
                model_name=config.get("model") or "",
                sae_name=Path(config["sae"]).name or config["sae"],
            )
            for r in self._rows("SELECT * FROM features WHERE run_id = ? ORDER BY feature", [run_id])
        ]

    # ------------------------------------------------------------------------------------ score columns

    @guarded
    def llm_score_rows(self, run_id: str, columns: Sequence[str]) -> list[dict[str, Any]]:
        """The given columns of every 'llm' scores row of the run (one per scored feature), unordered."""
        return self._rows(
            f"SELECT {self._score_select('llm_score_rows', columns)} FROM scores "
            "WHERE run_id = ? AND explanation_source = 'llm'",
            [run_id],
        )

    @guarded
    def score_rows(self, run_id: str, columns: Sequence[str]) -> dict[int, dict[str, dict[str, Any]]]:
        """feature -> source -> the given columns of that scores row, for every row of the run. Sources are
        'llm', 'baseline' and 'other' (the row's full explanation_source, e.g. 'other:17', is kept under
        'explanation_source')."""
        found = self._rows(
            f"SELECT feature, explanation_source, {self._score_select('score_rows', columns)} FROM scores "
            "WHERE run_id = ? ORDER BY feature, explanation_source",
            [run_id],
        )
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for row in found:
            feature, source = row.pop("feature"), row["explanation_source"]
            out.setdefault(feature, {}).setdefault(source.split(":")[0], row)
        return out

    @guarded
    def detection_rows(self, run_id: str, columns: Sequence[str]) -> dict[int, dict[str, dict[str, Any]]]:
        """feature -> source ('llm', 'baseline', 'other') -> the given columns of its detection_scores row
        (explanation_source kept, e.g. 'other:17'); empty for a file written before detection existed."""
        for column in columns:  # names go into the SQL text: only the table's own may pass
            if column not in TABLES["detection_scores"][0]:
                raise ValueError(f"detection_rows column: found {column!r}; expected a detection_scores column")
        if "detection_scores" not in self.db.table_names():
            return {}
        select = ", ".join(dict.fromkeys(["feature", "explanation_source", *columns]))
        found = self._rows(
            f"SELECT {select} FROM detection_scores WHERE run_id = ? ORDER BY feature, explanation_source", [run_id]
        )
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for row in found:
            feature = row.pop("feature")
            out.setdefault(feature, {}).setdefault(row["explanation_source"].split(":")[0], row)
        return out

    @guarded
    def redraw_rows(self, run_id: str, feature: int | None = None) -> list[dict[str, Any]]:
        """The run's `redraw_scores` rows (all, or one feature's), by feature, redraw and scorer; empty for a
        file written before redraws existed."""
        if "redraw_scores" not in self.db.table_names():
            return []
        where, params = ("AND feature = ?", [run_id, feature]) if feature is not None else ("", [run_id])
        return self._rows(
            f"SELECT * FROM redraw_scores WHERE run_id = ? {where} ORDER BY feature, redraw, scorer", params
        )

    @guarded
    def feature_scores(self, run_id: str, column: str = "correlation") -> dict[int, float | None]:
        """feature -> one column of its 'llm' scores row (for paired comparisons and density breakdowns)."""
        select = self._score_select("feature_scores", [column])
        found = self._rows(
            f"SELECT feature, {select} FROM scores WHERE run_id = ? AND explanation_source = 'llm'", [run_id]
        )
        return {r["feature"]: r[column] for r in found}

    # ------------------------------------------------------------------------------------ settings

    @guarded
    def run_settings(self, run_id: str) -> dict[str, dict[str, Any]]:
        """settings_hash -> the settings it digests (settings_hash.score_settings), for every hash the run's
        score rows carry; empty for a run stored before settings were recorded."""
        if "settings" not in self.db.table_names():
            return {}
        found = self._rows("SELECT settings_hash, settings_json FROM settings WHERE run_id = ?", [run_id])
        return {r["settings_hash"]: json.loads(r["settings_json"]) for r in found}

    @guarded
    def settings_hash_counts(self, run_id: str) -> dict[str | None, int]:
        """settings_hash (None: not recorded) -> number of the run's 'llm' score rows that carry it."""
        select = self._score_select("settings_hash_counts", ["settings_hash"])
        found = self._rows(
            f"SELECT {select}, count(*) AS n FROM scores WHERE run_id = ? AND explanation_source = 'llm' "
            "GROUP BY 1 ORDER BY 2 DESC, 1",
            [run_id],
        )
        return {r["settings_hash"]: r["n"] for r in found}

    @guarded
    def feature_densities(self, run_id: str) -> dict[int, float]:
        found = self._rows("SELECT feature, density FROM features WHERE run_id = ?", [run_id])
        return {r["feature"]: r["density"] for r in found}

    def _score_select(self, caller: str, columns: Sequence[str]) -> str:
        """The SELECT list for scores columns: a column this file's (older) schema lacks reads as NULL."""
        # Column names go into the SQL text, so only the table's own names may pass.
        for column in columns:
            if column not in TABLES["scores"][0]:
                raise ValueError(f"{caller} column: found {column!r}; expected a scores column such as 'correlation'")
        present = self.db.table("scores").columns_dict
        return ", ".join(column if column in present else f"NULL AS {column}" for column in columns)

    def _windows(self, run_id: str) -> dict[int, list[Window]]:
        windows: dict[int, list[Window]] = {}
        for r in self._rows("SELECT * FROM examples WHERE run_id = ? ORDER BY feature, idx", [run_id]):
            windows.setdefault(r["feature"], []).append(rows.window(r))
        return windows
