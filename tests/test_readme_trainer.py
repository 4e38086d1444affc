"""The README's SAELens-trainer example runs as written: SAELens trains, CheckpointScorer scores each
checkpoint, and the database ends with one run per checkpoint."""

import re
import sqlite3
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_trainer_code() -> str:
    found = re.search(r"<!-- saelens-trainer -->\n```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert found, "README: the trainer example follows the <!-- saelens-trainer --> marker"
    return found.group(1)


@pytest.mark.slow
def test_the_readme_trainer_example_scores_every_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes scores/ and checkpoints/ where it runs
    exec(compile(readme_trainer_code(), "README.md:saelens-trainer", "exec"), {})
    checkpoints = sorted(int(p.name.removeprefix("final_")) for p in (tmp_path / "checkpoints" / "tiny").iterdir())
    with sqlite3.connect(tmp_path / "scores" / "tiny-training" / "autointerp.sqlite") as db:
        steps = sorted(row[0] for row in db.execute("SELECT step FROM runs WHERE training_run = 'tiny'"))
        scored = db.execute("SELECT count(*) FROM scores WHERE explanation_source = 'llm'").fetchone()[0]
    assert len(checkpoints) == 3 and steps == checkpoints and checkpoints[-1] >= 8192  # the last batch may overshoot
    assert scored > 0
    printed = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in printed] == checkpoints  # the example's own table, one line per step
