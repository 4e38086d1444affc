"""Typed records that cross stage boundaries (sample -> explain -> simulate -> score -> store).

Units are stated on every field: "raw" means the SAE's own activation scale, "0..10" the quantised
scale shown to and predicted by the LLM.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

# hard_negative: a window holding the feature's top tokens where it does not fire (detection negatives)
Group = Literal["top", "interval", "random", "nonactivating", "hard_negative"]
Split = Literal["explain", "score"]
Stage = Literal["explain", "simulate", "detect"]  # the stages that call an LLM


class Window(BaseModel):
    """A short token window cut from one model context, with the feature's activation on every token."""

    feature: int = Field(description="SAE feature index")
    context_id: int = Field(description="index of the model context (row of the tokenised corpus)")
    start: int = Field(description="position of the window's first token inside its context")
    token_ids: list[int] = Field(description="token ids of the window")
    tokens: list[str] = Field(description="decoded token strings, same length as token_ids")
    activations: list[float] = Field(description="raw activation of every token, same length as tokens")
    group: Group = Field(
        description="how it was chosen: top-k, an activation interval, uniform random, never firing, "
        "or a hard negative (the feature's top tokens, not firing)"
    )
    interval: int | None = Field(default=None, description="interval index (0 = lowest) for group 'interval'")
    split: Split = Field(description="'explain' windows are shown to the explainer; 'score' windows are held out")

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0


class FeatureStats(BaseModel):
    """Streaming statistics of one feature over every non-special token the sampler saw."""

    feature: int
    n_tokens: int = Field(description="tokens seen (BOS and other special tokens excluded)")
    n_active: int = Field(description="tokens with activation > 0")
    max_activation: float = Field(description="raw scale")
    mean_active: float | None = Field(description="mean raw activation over active tokens; None if never active")
    histogram_edges: list[float] = Field(description="bin edges on the raw scale, len = len(histogram_counts)+1")
    histogram_counts: list[int] = Field(description="counts of active tokens per bin")

    @property
    def density(self) -> float:
        return self.n_active / self.n_tokens if self.n_tokens else 0.0


class FeatureSample(BaseModel):
    """Everything the sampler keeps for one feature."""

    stats: FeatureStats
    windows: list[Window]

    @property
    def feature(self) -> int:
        return self.stats.feature

    def split(self, split: Split) -> list[Window]:
        return [w for w in self.windows if w.split == split]


class Usage(BaseModel):
    input_tokens: int = 0
    cached_input_tokens: int = Field(default=0, description="input tokens read from the provider's prompt cache")
    cache_write_tokens: int = Field(default=0, description="input tokens written to the provider's prompt cache")
    output_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class CallRecord(BaseModel):
    """One LLM call (or a refused/failed one) made for a feature: what it cost and what came back."""

    stage: Stage
    feature: int
    backend: str = Field(description="backend spec, e.g. 'anthropic:claude-haiku-5-5', 'local'")
    prompt_hash: str = Field(description="sha256 of the request JSON (LLMRequest.prompt_hash)")
    ok: bool = Field(description="True if the answer was used; False for an unreadable answer or a failed call")
    response_text: str | None = Field(default=None, description="the raw answer; None if the call failed")
    error: str | None = Field(default=None, description="why the answer was not used, or why the call failed")
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(default=0.0, description="USD; None when the model's price is unknown (never 0)")
    latency_s: float = Field(default=0.0, description="seconds of the successful HTTP attempt")
    attempts: int = Field(default=1, description="HTTP tries of this call (transient errors retried)")
    model: str | None = Field(default=None, description="model name the server reported")
    detail: dict[str, Any] = Field(default_factory=dict, description="stage specifics: mode, shuffle order, candidate")


class Explanation(BaseModel):
    feature: int
    text: str = Field(description="the parsed, short explanation")
    raw_completion: str = Field(description="the LLM's whole answer, kept for audit")
    backend: str = Field(description="backend spec, e.g. 'anthropic:claude-...', 'local', 'baseline'")
    prompt_hash: str = Field(description="sha256 of the exact prompt sent")
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(default=0.0, description="USD; None when a call's price is unknown")


class Simulation(BaseModel):
    """Predicted 0..10 activation for every token of every scoring window of one feature."""

    feature: int
    explanation_source: str = Field(description="'llm', 'baseline' or 'other:<feature>' (control)")
    backend: str
    mode: Literal["logprob", "sampled", "baseline"]
    predictions: list[list[float]] = Field(
        description="0..10 per token, one list per window, same order as the windows"
    )
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(default=0.0, description="USD; None when a call's price is unknown")


class TokenLogit(BaseModel):
    """One vocabulary token and the logit the feature's decoder direction adds to it (W_dec[f] @ W_U)."""

    token: str = Field(description="decoded token string")
    value: float = Field(description="direct logit effect of a unit activation, logit units")


class FeatureReport(BaseModel):
    """All a reader (table, show, exports) needs about one scored feature of one run."""

    run_id: str
    feature: int
    stats: FeatureStats
    windows: list[Window] = Field(description="explanation and scoring windows, in sampler order")
    explanation: Explanation | None = Field(default=None, description="None when explaining failed")
    scores: dict | None = Field(
        default=None, description="FeatureScores.to_columns() plus 'json' (FeatureScores.to_json()); None if not scored"
    )
    controls: dict[str, dict] = Field(
        default_factory=dict, description="control name ('baseline', 'other') -> its scores columns"
    )
    detection: dict[str, dict] = Field(
        default_factory=dict,
        description="'llm', 'baseline', 'other' -> its detection_scores row (explanation_source and json kept); "
        "empty when detection did not run",
    )
    errors: list[str] = Field(default_factory=list, description="recorded failures: 'stage: message'")
    redraws: list[dict] = Field(
        default_factory=list,
        description="its `redraw_scores` rows (autointerp.redraws): scores on fresh window draws; empty if none",
    )
    model_name: str = Field(default="", description="subject model name")
    sae_name: str = Field(default="", description="SAE identifier (folder name or hook) for exports")
    top_logits: list[TokenLogit] | None = Field(
        default=None, description="tokens the feature promotes most, highest first; None when the run has none"
    )
    bottom_logits: list[TokenLogit] | None = Field(
        default=None, description="tokens the feature suppresses most, lowest first; None when the run has none"
    )
