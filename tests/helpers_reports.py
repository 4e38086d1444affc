"""Hand-made FeatureReports for export tests: realistic windows, stats, scores and controls.

`make_report(feature)` builds one scored feature that fires on a small set of concept tokens;
`make_reports(n)` many of them (every 9th failed to explain: no explanation, no scores, an error);
`hostile_report()` one whose tokens and explanation hold markup, quotes, ampersands, newlines and tabs;
`edge_reports()` the limits a Neuronpedia upload cares about (long/astral/empty explanations, no windows).
"""

import random

from helpers_windows import make_window

from autointerp.records import Explanation, FeatureReport, FeatureStats, Window
from autointerp.scoring import score_feature

RUN_ID = "run-test"
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M"
SAE_NAME = "8-res-demo"
BACKEND = "anthropic:claude-haiku-5-5"
WINDOW_LEN = 12
N_INTERVALS = 3

FILLER = (
    " the",
    " of",
    " and",
    " to",
    " a",
    " in",
    " was",
    " he",
    " that",
    " it",
    " with",
    " as",
    " for",
    " his",
    " on",
    " is",
    " at",
    " by",
    " had",
    " from",
    " they",
    " this",
    " which",
    " were",
    " be",
    " morning",
    " river",
    " said",
    " old",
    " house",
    " after",
    " then",
    ".",
    ",",
    "\n",
    " little",
)
CONCEPTS = (
    ("animals, mostly pets (dog, cat, horse)", (" dog", " cat", " horse", " puppy")),
    ("small integers written as digits", (" 3", " 7", " 12", " 42")),
    ("the word 'river' and other bodies of water", (" river", " lake", " stream", " sea")),
    ("closing parentheses and brackets in code", (")", "]", "})", "))")),
    ("past-tense verbs of motion", (" walked", " ran", " drove", " climbed")),
)
# Markup and awkward characters a browser page must show as text and never run.
HOSTILE_TOKENS = (
    "<script>alert(1)</script>",
    '<img src=x onerror="window.__pwned=1">',
    ' "quoted"',
    " AT&T",
    " &amp;",
    "line\nbreak",
    "\ttab",
    "</script><!--",
    " it's",
)
HOSTILE_EXPLANATION = (
    "HTML-ish text: <b>bold</b> </script><script>window.__pwned=2</script> & \"quotes\" 'apostrophes' <!-- x"
)


def _window(
    rng: random.Random,
    feature: int,
    context_id: int,
    group: str,
    split: str,
    peak: float,
    concept: tuple[str, ...],
    interval: int | None = None,
    forced: tuple[str, ...] = (),
) -> Window:
    tokens = [rng.choice(FILLER) for _ in range(WINDOW_LEN)]
    acts = [0.0] * WINDOW_LEN
    if peak > 0:
        at = rng.randrange(WINDOW_LEN // 2, WINDOW_LEN - 1)
        tokens[at] = rng.choice(concept)
        acts[at] = peak
        acts[at + 1] = round(0.3 * peak, 4)
    for i, token in enumerate(forced):
        tokens[i] = token
    return make_window(
        tokens,
        acts,
        feature=feature,
        context_id=context_id,
        start=rng.randrange(0, 200),  # drawn before the token ids, as the fixtures always were
        token_ids=[rng.randrange(50_000) for _ in tokens],
        group=group,
        interval=interval,
        split=split,
    )


def _stats(rng: random.Random, feature: int, max_activation: float) -> FeatureStats:
    n_tokens = 200_000
    density = 10 ** rng.uniform(-4, -1.3)
    n_active = max(1, round(density * n_tokens))
    n_bins = 16
    edges = [max_activation * i / n_bins for i in range(n_bins + 1)]
    weights = [0.62**i for i in range(n_bins)]
    counts = [int(n_active * w / sum(weights)) for w in weights]
    counts[0] += n_active - sum(counts)
    mean = sum(c * (edges[i] + edges[i + 1]) / 2 for i, c in enumerate(counts)) / n_active
    return FeatureStats(
        feature=feature,
        n_tokens=n_tokens,
        n_active=n_active,
        max_activation=max_activation,
        mean_active=mean,
        histogram_edges=edges,
        histogram_counts=counts,
    )


def _scores(rng: random.Random, windows: list[Window], max_activation: float, noise: float) -> dict:
    held_out = [w for w in windows if w.split == "score"]
    preds = []
    for w in held_out:
        preds.append([min(10.0, max(0.0, round(10 * a / max_activation + rng.gauss(0, noise)))) for a in w.activations])
    scores = score_feature(
        [w.activations for w in held_out],
        preds,
        [w.group for w in held_out],
        [w.interval for w in held_out],
        max_activation,
    )
    return scores.to_columns() | {"json": scores.to_json()}


def make_report(
    feature: int,
    *,
    explained: bool = True,
    explanation: str | None = None,
    windows: bool = True,
    forced_tokens: tuple[str, ...] = (),
) -> FeatureReport:
    """One feature: 5 top (3 explain, 2 score), 3 intervals x (1 explain + 1 score), 2 random and
    2 non-activating score windows, each WINDOW_LEN tokens; scored with a noisy simulator and a
    noisier baseline control unless `explained` is False (then no explanation, no scores, an error).
    `forced_tokens` overwrite the first tokens of the first top window of each split."""
    rng = random.Random(feature * 7919 + 1)
    text, concept = CONCEPTS[feature % len(CONCEPTS)]
    max_activation = round(rng.uniform(2.0, 30.0), 3)
    out: list[Window] = []
    context = feature * 1000

    def add(group: str, split: str, peak: float, interval: int | None = None, forced: tuple[str, ...] = ()) -> None:
        nonlocal context
        context += 1
        out.append(_window(rng, feature, context, group, split, peak, concept, interval, forced))

    if windows:
        for i, split in enumerate(("explain", "explain", "explain", "score", "score")):
            peak = max_activation if i == 0 else round(max_activation * rng.uniform(0.8, 0.99), 4)
            add("top", split, peak, forced=forced_tokens if i in (0, 3) else ())
        for k in range(N_INTERVALS):
            for split in ("explain", "score"):
                add("interval", split, round(max_activation * rng.uniform(k / 4 + 0.02, (k + 1) / 4), 4), k)
        add("random", "score", round(max_activation * rng.uniform(0.05, 0.3), 4))
        add("random", "score", 0.0)
        add("nonactivating", "score", 0.0)
        add("nonactivating", "score", 0.0)

    report = FeatureReport(
        run_id=RUN_ID,
        feature=feature,
        stats=_stats(rng, feature, max_activation),
        windows=out,
        model_name=MODEL_NAME,
        sae_name=SAE_NAME,
    )
    if not explained:
        report.errors = ["explain: anthropic returned 529 overloaded after 5 tries"]
        return report
    report.explanation = Explanation(
        feature=feature,
        text=text if explanation is None else explanation,
        raw_completion=f"Explanation: {text}",
        backend=BACKEND,
        prompt_hash=f"{feature:064x}",
    )
    if windows:
        report.scores = _scores(rng, out, max_activation, noise=1.0)
        baseline = _scores(rng, out, max_activation, noise=4.0)
        baseline.pop("json")
        report.controls = {"baseline": baseline}
    return report


def make_reports(n: int, start: int = 0) -> list[FeatureReport]:
    """n reports for features start, start+1, ...; every 9th failed to explain."""
    return [make_report(f, explained=(f % 9 != 8)) for f in range(start, start + n)]


def hostile_report(feature: int = 666) -> FeatureReport:
    """Markup, quotes, ampersands, newlines and tabs in tokens (both splits) and in the explanation."""
    return make_report(feature, explanation=HOSTILE_EXPLANATION, forced_tokens=HOSTILE_TOKENS)


def edge_reports(start: int = 900) -> list[FeatureReport]:
    """[600-char explanation, 300 astral emoji (600 UTF-16 units), blank explanation, no windows]."""
    return [
        make_report(start, explanation="x" * 600),
        make_report(start + 1, explanation="\U0001f600" * 300),
        make_report(start + 2, explanation="   "),
        make_report(start + 3, windows=False),
    ]
