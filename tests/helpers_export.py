"""For export tests: a hand-made ExportContext, and the other side's rules re-stated as validators.

`validate_neuronpedia_batch(body)` states the rules of Neuronpedia's upload-batch route as read in
hijohnnylin/neuronpedia at commit ebb8426fc550ad5d1f76d52c271a624af3c08a57 (2026-08-20), file
`apps/webapp/app/api/feature/upload-batch/route.tsx` (its yup schema `uploadBatchSchema`, then the
checks after it: tokens and values of equal length, unique indexes), plus the source naming rule of
`apps/webapp/lib/utils/source.ts` (`getSourceSetNameFromSource`). Written from reading, not copied.

`SAEDASHBOARD_CONVERTER_FEATURE_KEYS` / `..._ACTIVATION_KEYS` / `..._BATCH_KEYS`: the keys Neuronpedia's
`utils/neuronpedia-utils/neuronpedia_utils/convert-saedashboard-to-neuronpedia-export.py` (same commit)
reads with `[...]` (a missing one is a KeyError there).
"""

import math
import re
from typing import Any

from autointerp.export.context import ExportContext

ROUTE_MAX_FEATURES = 128
ROUTE_MAX_INDEX = 10_000_000
ROUTE_MAX_LOGITS = 20
ROUTE_TEXT_UNITS = (1, 512)  # yup string().min(1).max(512): JavaScript length, UTF-16 code units
ROUTE_TOKENS = (1, 1024)
ROUTE_MAX_QUANTILE = 99_999_999
SOURCE_FORM = re.compile(r"(\d+|e)-[a-z0-9][a-z0-9_-]*")

SAEDASHBOARD_CONVERTER_BATCH_KEYS = {"layer", "sae_id_suffix", "features", "model_id"}
SAEDASHBOARD_CONVERTER_FEATURE_KEYS = {
    "feature_index",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_pearson",
    "correlated_neurons_l1",
    "correlated_features_indices",
    "correlated_features_pearson",
    "correlated_features_l1",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values",
    "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "decoder_weights_dist",
    "activations",
}
SAEDASHBOARD_CONVERTER_ACTIVATION_KEYS = {
    "tokens",
    "values",
    "bin_contains",
    "bin_max",
    "bin_min",
    "qualifying_token_index",
}


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def js_length(text: str) -> int:
    """String.length in JavaScript: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _is_lower_string(value: Any) -> bool:
    return isinstance(value, str) and value == value.lower()


def validate_neuronpedia_batch(body: Any) -> None:
    """Raise AssertionError where `body` breaks a rule of the upload-batch route (module doc)."""
    assert isinstance(body, dict) and set(body) == {"modelId", "source", "features"}
    assert _is_lower_string(body["modelId"]) and body["modelId"]
    assert _is_lower_string(body["source"]) and SOURCE_FORM.fullmatch(body["source"]), body["source"]
    features = body["features"]
    assert isinstance(features, list) and 1 <= len(features) <= ROUTE_MAX_FEATURES
    assert len({f["index"] for f in features}) == len(features), "All indexes must be unique."
    for feature in features:
        assert set(feature) <= {"index", "density", "topLogits", "bottomLogits", "explanations", "activations"}
        assert isinstance(feature["index"], int) and not isinstance(feature["index"], bool)
        assert 0 <= feature["index"] <= ROUTE_MAX_INDEX
        if "density" in feature:
            assert is_number(feature["density"]) and 0 <= feature["density"] <= 1
        for side in ("topLogits", "bottomLogits"):
            logits = feature.get(side)
            if logits is not None:
                assert isinstance(logits, list) and len(logits) <= ROUTE_MAX_LOGITS
                for logit in logits:
                    assert set(logit) == {"token", "value"}
                    assert isinstance(logit["token"], str) and logit["token"] and is_number(logit["value"])
        for explanation in feature.get("explanations", []):
            assert set(explanation) <= {"text", "methodName", "modelName"}
            text = explanation["text"]
            assert isinstance(text, str) and ROUTE_TEXT_UNITS[0] <= js_length(text) <= ROUTE_TEXT_UNITS[1]
            for key in ("methodName", "modelName"):
                value = explanation.get(key)
                assert value is None or _is_lower_string(value)
        activations = feature["activations"]
        assert isinstance(activations, list) and len(activations) >= 1
        for act in activations:
            assert set(act) <= {"tokens", "values", "quantileMax", "quantileMin", "quantileFraction"}
            tokens, values = act["tokens"], act["values"]
            assert isinstance(tokens, list) and ROUTE_TOKENS[0] <= len(tokens) <= ROUTE_TOKENS[1]
            assert all(isinstance(t, str) and t for t in tokens), "yup string().required() refuses ''"
            assert isinstance(values, list) and len(values) == len(tokens)
            assert all(is_number(v) for v in values)
            for key in ("quantileMax", "quantileMin"):
                assert act.get(key) is None or (is_number(act[key]) and act[key] <= ROUTE_MAX_QUANTILE)
            fraction = act.get("quantileFraction")
            assert fraction is None or (is_number(fraction) and 0 <= fraction <= 1)


def make_context(**overrides: Any) -> ExportContext:
    """The context of a run of the demo SAE's shape: hook blocks.8.hook_resid_post, 128-token contexts."""
    config = {
        "sae": "/models/my-sae",
        "model": "HuggingFaceTB/SmolLM2-135M",
        "corpus": {"source": "shakespeare", "text_field": "text"},
        "dtype": None,
        "sampler": {
            "n_tokens": 60_000,
            "context_size": None,
            "batch_size": 16,
            "window_left": 24,
            "n_top_explain": 10,
            "n_top_score": 5,
            "n_intervals": 5,
            "per_interval_score": 1,
            "n_random_score": 5,
            "n_nonactivating_score": 5,
            "seed": 3,
        },
        "llm": {"explainer": "anthropic:claude-haiku-5-5", "explainer_max_tokens": 120},
    }
    values: dict[str, Any] = {
        "run_id": "run-test",
        "config": config,
        "versions": {"autointerp": "0.1.0"},
        "created_at": "2026-01-02T03:04:05+00:00",
        "updated_at": "2026-01-02T04:05:06+00:00",
        "sae_cfg": {"architecture": "topk", "d_in": 576, "d_sae": 4096, "metadata": {"hook_name": "blocks.8.x"}},
        "hook_name": "blocks.8.hook_resid_post",
        "sae_context_size": 128,
        "prepend_bos": True,
    }
    values.update(overrides)
    return ExportContext(**values)
