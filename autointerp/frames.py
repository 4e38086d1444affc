"""A run directory's database as pandas DataFrames, in one line: `autointerp.load("scores/demo")`.

One frame per thing a reader wants, each with a run_id column so a training run's checkpoints sit in one
frame: `features` (the `feature_scores` view: one row per sampled feature with its statistics, status, LLM
explanation and headline scores), `scores` (every scores row: the LLM explanation's and each control's),
`detection` (detection scorer rows), `calls` (every LLM call: tokens, latency, cost), `logits` (top and
bottom W_dec @ W_U tokens per feature) and `runs`. Per-window JSON columns are left out; they stay in the
file. pandas is an optional dependency (`pip install "autointerp[frames]"`).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autointerp.store import RunStore

if TYPE_CHECKING:
    import pandas as pd

# frame -> (table or view, columns left out)
FRAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "features": ("feature_scores", ()),
    "scores": ("scores", ("json",)),
    "detection": ("detection_scores", ("json",)),
    "calls": ("llm_calls", ()),
    "logits": ("feature_logits", ()),
    "runs": ("runs", ()),
}


@dataclass(frozen=True)
class RunFrames:
    """The frames of one database (see the module docstring); a table the file lacks gives an empty frame."""

    features: "pd.DataFrame"
    scores: "pd.DataFrame"
    detection: "pd.DataFrame"
    calls: "pd.DataFrame"
    logits: "pd.DataFrame"
    runs: "pd.DataFrame"


def load_frames(run_dir: str | Path, run_id: str | None = None) -> RunFrames:
    """Read the database of `run_dir` (read-only) into RunFrames; `run_id`: that run's rows only."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "autointerp.load returns pandas DataFrames, and pandas is not installed: "
            'pip install "autointerp[frames]" (or pip install pandas).'
        ) from None
    with RunStore.open(Path(run_dir), create=False) as store:
        if run_id is not None:
            store.require_run(run_id)
        present = set(store.db.table_names()) | set(store.db.view_names())
        frames = {}
        for frame, (source, left_out) in FRAMES.items():
            if source not in present:  # a file written before this table existed
                frames[frame] = pd.DataFrame()
                continue
            columns = [c for c in _columns(store, source) if c not in left_out]
            select = ", ".join(f'"{c}"' for c in columns)
            where, params = (" WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
            frames[frame] = pd.read_sql_query(f'SELECT {select} FROM "{source}"{where}', store.db.conn, params=params)
    return RunFrames(**frames)


def _columns(store: RunStore, source: str) -> list[str]:
    return [row[1] for row in store.db.execute(f'PRAGMA table_info("{source}")').fetchall()]
