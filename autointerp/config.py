"""Every knob of a run, typed and documented. The resolved config is stored with each run.

Job files (`jobs/*.toml`) and CLI flags map onto these models; `RunConfig.results_key()` lists the
settings that change results, which a resumed run must not change.
"""

from typing import Literal

from pydantic import BaseModel, Field

from autointerp.corpus import CorpusSpec


class SamplerConfig(BaseModel):
    n_tokens: int = Field(
        default=60_000, gt=0, description="corpus tokens streamed (small default for a CPU demo; real runs want 1M+)"
    )
    context_size: int | None = Field(
        default=None, description="model context length; None -> the SAE's context_size, else 128"
    )
    batch_size: int = Field(default=16, gt=0, description="contexts per forward pass")
    window_size: int = Field(default=32, gt=1, description="tokens per example window")
    window_left: int = Field(
        default=24, ge=0, description="tokens kept left of a window's peak (most context on the left)"
    )
    explain_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="share of contexts assigned to the explanation split"
    )
    n_top_explain: int = Field(default=10, ge=0, description="top windows per feature shown to the explainer")
    n_top_score: int = Field(default=5, ge=0, description="top windows per feature held out for scoring")
    n_intervals: int = Field(default=5, gt=0, description="equal-width activation intervals of (0, max] below the top")
    per_interval_explain: int = Field(default=2, ge=0, description="windows drawn per interval for the explainer")
    per_interval_score: int = Field(default=1, ge=0, description="windows drawn per interval for scoring")
    n_random_score: int = Field(
        default=5, ge=0, description="uniformly random windows for scoring (true activations kept)"
    )
    n_nonactivating_score: int = Field(
        default=5, ge=0, description="windows from contexts where the feature never fires, for scoring"
    )
    interval_grid: int = Field(
        default=64, ge=8, description="fine cells of the doubling grid behind intervals and histograms"
    )
    seed: int = 0


class SelectionConfig(BaseModel):
    n_features: int | None = Field(default=None, description="draw this many live features at random (seeded)")
    features: str | None = Field(default=None, description="explicit features, e.g. '3,17,100-120'")
    stratify_by_density: bool = Field(default=False, description="draw evenly across log-density buckets")
    density_probe_tokens: int = Field(
        default=20_000, description="tokens scanned to find live features when the SAE ships no sparsity file"
    )
    seed: int = 0


class LLMConfig(BaseModel):
    explainer: str | None = Field(
        default=None, description="backend spec; None -> a provider whose key is set, else 'local'"
    )
    simulator: str | None = Field(default=None, description="backend spec; None -> same as the explainer")
    max_in_flight: int | None = Field(
        default=None, description="requests in flight per backend; None -> backend default"
    )
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    explainer_max_tokens: int = 120
    best_of: int = Field(
        default=1, ge=1, description="explanations drawn per feature; the best on a held-out slice is kept"
    )
    prices_file: str | None = Field(
        default=None, description="JSON/TOML price table overriding the built-in one (USD per million tokens)"
    )


class ScoringConfig(BaseModel):
    quantise_rule: Literal["floor", "ceil"] = Field(
        default="floor", description="0..10 quantisation: OpenAI floors, delphi ceils"
    )
    controls_share: float = Field(
        default=1.0, ge=0, le=1, description="share of features also scored with control explanations"
    )
    detection_threshold: float = Field(
        default=0.5, description="a window is predicted to fire when its max prediction >= this (0..10)"
    )


class RunConfig(BaseModel):
    sae: str = Field(description="SAE folder or built-in name ('demo')")
    model: str | None = Field(default=None, description="subject model; None -> the SAE's metadata.model_name")
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    device: str | None = None
    dtype: str | None = None
    run_dir: str | None = Field(
        default=None, description="where the run's SQLite database lives; None -> scores/<name>"
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)

    def results_key(self) -> dict:
        """The settings that change results; device/dtype/run_dir and rate limits do not count."""
        data = self.model_dump(exclude={"device", "dtype", "run_dir"})
        for key in ("max_in_flight", "requests_per_minute", "tokens_per_minute", "prices_file"):
            data["llm"].pop(key)
        for key in ("explainer", "simulator"):  # the same model served from another address is the same
            if data["llm"][key]:
                data["llm"][key] = data["llm"][key].split("@http")[0]
        return data
