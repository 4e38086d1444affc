"""Every knob of a run, typed and documented. The resolved config is stored with each run.

Job files (`jobs/*.toml`) and CLI flags map onto these models; `RunConfig.results_key()` lists the
settings that change results, which a resumed run must not change.
"""

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from autointerp.corpus import CorpusSpec


class SamplerConfig(BaseModel):
    n_tokens: int = Field(
        default=60_000, gt=0, description="corpus tokens to stream (small default for a CPU demo; real runs want 1M+)"
    )
    context_size: int | None = Field(
        default=None,
        description="tokens per model context (default: the SAE's context_size, else 128; at most the model's)",
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
    n_hard_negative_score: int = Field(
        default=5,
        ge=0,
        description="hard negatives for scoring: windows centred on the token at the feature's strongest "
        "explanation-split activation, from contexts where the feature never fires (see sampler.py for the rule)",
    )
    interval_grid: int = Field(
        default=64, ge=8, description="fine cells of the doubling grid behind intervals and histograms"
    )
    seed: int = Field(
        default=0, description="seed for the explain/score split, the windows drawn, and the order shown to the LLM"
    )
    max_state_gb: float | None = Field(
        default=None,
        gt=0,
        description="device memory for the sampler's per-feature state and batch work, in GiB: features are split "
        "into passes that fit (each pass streams the corpus again); the estimate is printed first (default: one "
        "pass on CPU, 80 % of the free memory on a GPU)",
    )
    checkpoint_tokens: int | None = Field(
        default=None,
        gt=0,
        description="save the sampler state every this many tokens (per rank) into the run directory, so a killed "
        "sampling pass resumes there (default: 1,000,000 in `run`/`sample`, and no sooner than 10x the last save's "
        "duration, so a wide state's saves cost at most ~10 %; off in the Python API)",
    )


class SelectionConfig(BaseModel):
    n_features: int | None = Field(
        default=None,
        gt=0,
        description="draw this many live features at random, seeded (default: 5 unless features are listed)",
    )
    features: str | None = Field(default=None, description="explicit features, e.g. '3,17,100-120'")
    stratify_by_density: bool = Field(
        default=False, description="draw features evenly across log-density buckets (from the sparsity file or probe)"
    )
    density_probe_tokens: int = Field(
        default=20_000, gt=0, description="tokens scanned to find live features when the SAE ships no sparsity file"
    )
    seed: int = Field(default=0, description="seed for feature selection and for which features get controls")


class LLMConfig(BaseModel):
    explainer: str | None = Field(
        default=None,
        description="LLM backend: anthropic:<model>, openai:<model>[@url], local or baseline "
        "(default: a provider whose API key is set, else local)",
    )
    simulator: str | None = Field(
        default=None, description="LLM backend, in the same forms as the explainer (default: the explainer)"
    )
    max_in_flight: int | None = Field(
        default=None, gt=0, description="LLM requests in flight per backend (default: the backend's own)"
    )
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    explainer_max_tokens: int = Field(default=120, gt=0)
    best_of: int = Field(
        default=1, ge=1, description="explanations drawn per feature; the best on a held-out slice is kept"
    )
    prices_file: str | None = Field(
        default=None, description="JSON/TOML price table overriding the built-in one (USD per million tokens)"
    )
    batch: bool = Field(
        default=False,
        description="send the LLM stages through the provider's batch API (half price, answers within 24 h): "
        "all explanations in one batch, then all scoring requests; a killed run resumes by polling the same batches",
    )
    batch_poll_s: float = Field(default=60.0, gt=0, description="seconds between polls of an open batch (--batch)")


class ScoringConfig(BaseModel):
    quantise_rule: Literal["floor", "ceil"] = Field(
        default="floor", description="0..10 quantisation of true activations: floor (OpenAI) or ceil (delphi)"
    )
    controls_share: float = Field(
        default=1.0, ge=0, le=1, description="share of features also scored with control explanations"
    )
    detection_threshold: float | Literal["auto"] | None = Field(
        default=None,
        description="simulation detection: a window is predicted to fire when its max prediction >= this (0..10); "
        "'auto' = the balanced split of the windows' max predictions; None -> per simulation mode: 'auto' for "
        "logprob expected values (they never drop to 0, so a fixed 0.5 calls every window positive), 0.5 for "
        "sampled and baseline integer answers (>= 0.5 = the window's highest level is at least 1)",
    )
    n_permutations: int = Field(
        default=1000,
        ge=0,
        description="permutation-null draws per simulation (no LLM call): the feature's predictions scored against "
        "shuffled windows; 1000 gives p down to ~0.001 in milliseconds; 0 skips the null",
    )

    scorers: list[Literal["simulation", "detection"]] | None = Field(
        default=None,
        description="scorers run on every explanation and control: simulation (predict each token's activation, "
        "correlate) and/or detection (say which windows match). None -> settled when the run starts and stored "
        "resolved, so the settings hash covers it: both for API backends and the baseline (20 windows judged in "
        "2 prompts take ~3,400 input (~2,500 cacheable) and ~80 output tokens against ~4,450 input for a sampled "
        "simulation, and "
        "detection is the score that moves least across pipelines); for the local model "
        "detection only when it offers the teacher-forced yes/no reading (score_yes_no), since a 135M model "
        "writing yes/no lists answers at random",
    )
    detection_windows_per_prompt: int = Field(
        default=10, ge=1, description="detection: held-out windows judged in one prompt (fewer prompts, shared prefix)"
    )

    redraws: int = Field(
        default=0,
        ge=0,
        description="fresh window draws per control-subset feature after scoring (autointerp.redraws): its stored "
        "explanation scored again on windows sampled with another seed; the per-feature std over the run's draw and "
        "these is shown next to the means (each draw re-reads the corpus through the model and rescores)",
    )

    @field_validator("scorers", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """`--scorers simulation,detection` gives one string; a job file gives a list."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    def threshold_for(self, mode: str) -> float | Literal["auto"]:
        """The detection threshold for a simulation made in `mode` ('logprob', 'sampled' or 'baseline')."""
        if self.detection_threshold is not None:
            return self.detection_threshold
        return "auto" if mode == "logprob" else 0.5


class RunConfig(BaseModel):
    sae: str = Field(
        description="SAE folder (SAELens or sparsify layout), 'demo' for the built-in one, or a SAELens pretrained "
        "name 'release/sae_id' (read from the Hugging Face cache)"
    )
    model: str | None = Field(
        default=None,
        description="subject model (TransformerLens name or 'smollm2-135m'; default: the SAE's metadata.model_name)",
    )
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    device: str | None = Field(default=None, description="cuda or cpu (default: cuda when present)")
    dtype: str | None = Field(default=None, description="model dtype (default: bfloat16 on cuda, float32 on cpu)")
    run_dir: str | None = Field(
        default=None, description="folder of the run's SQLite database (default: scores/<SAE folder name>)"
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)

    def results_key(self) -> dict:
        """The settings that change results; device/dtype/run_dir and rate limits do not count."""
        data = self.model_dump(exclude={"device", "dtype", "run_dir"})
        for key in ("max_state_gb", "checkpoint_tokens"):  # how sampling is split or saved, not what it finds
            data["sampler"].pop(key)
        llm_rates = ("max_in_flight", "requests_per_minute", "tokens_per_minute", "prices_file")
        for key in (*llm_rates, "batch", "batch_poll_s"):  # how calls are sent, not what they ask
            data["llm"].pop(key)
        data["scoring"].pop("redraws")  # redraws add rows of their own; they change no stored score
        for key in ("explainer", "simulator"):  # the same model served from another address is the same
            if data["llm"][key]:
                data["llm"][key] = data["llm"][key].split("@http")[0]
        return data
