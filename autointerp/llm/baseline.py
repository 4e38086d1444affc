"""The "baseline" backend: stands for "no LLM", the control every LLM explanation must beat.

It never answers a request. autointerp.explain and autointerp.simulate see a `BaselineBackend` and
compute the baseline explanation (the feature's top tokens) and simulation with the pure functions of
autointerp.baseline, which live there, at the stages' floor, because they quantise with `scoring`.
"""

from __future__ import annotations

from autointerp.llm.base import BackendOptions, BackendSpec, LLMBackend, LLMRequest, LLMResponse
from autointerp.llm.retry import PermanentError


class BaselineBackend(LLMBackend):
    """Stands for "no LLM": explain_feature / simulate_feature dispatch on it to autointerp.baseline."""

    supports_logprobs = False

    def __init__(self, spec: BackendSpec, options: BackendOptions) -> None:
        super().__init__(str(spec), "baseline", options)

    async def _call(self, request: LLMRequest) -> LLMResponse:
        raise PermanentError(
            "the baseline backend answers no LLM request; autointerp.explain.explain_feature and "
            "autointerp.simulate.simulate_feature compute baseline explanations and simulations directly"
        )
