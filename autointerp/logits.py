"""Each feature's direct effect on the logits: its decoder row through the unembedding, W_dec[f] @ W_U.

The tokens a feature most promotes and most suppresses when it fires (ignoring the layers after the SAE's
hook and the final norm, as Neuronpedia's and SAEDashboard's logit tables do). Computed once at sampling,
while the model is loaded, and stored in the `feature_logits` table; the Neuronpedia and SAEDashboard
exports read them from there.
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import torch

N_LOGITS = 10  # tokens kept on each side, as Neuronpedia's feature pages show


class FeatureLogits(BaseModel):
    """The top and bottom tokens of one feature's W_dec[f] @ W_U, largest magnitude first."""

    feature: int
    top: list[tuple[int, str, float]] = Field(description="(token id, token text, logit value), largest first")
    bottom: list[tuple[int, str, float]] = Field(description="(token id, token text, logit value), most negative first")


def feature_logits(
    W_dec_SD: "torch.Tensor",
    W_U_DV: "torch.Tensor",
    features: Sequence[int],
    tokenizer: Any,
    k: int = N_LOGITS,
    batch: int = 256,
) -> list[FeatureLogits]:
    """Top and bottom `k` tokens of W_dec[f] @ W_U for each feature f (logit units), `batch` features at a time.

    W_dec_SD: [d_sae, d_model]; W_U_DV: [d_model, d_vocab]; tokenizer: anything with `decode([id])`, giving
    each token's text (None: the id as text).
    """
    import torch  # only here: exporters read stored logits without torch

    decode = _token_text(tokenizer)
    k = min(k, W_U_DV.shape[1])
    out: list[FeatureLogits] = []
    for start in range(0, len(features), batch):
        chunk = list(features[start : start + batch])
        with torch.no_grad():
            rows_FD = W_dec_SD[torch.tensor(chunk, device=W_dec_SD.device)].to(W_U_DV.device, torch.float32)
            logits_FV = rows_FD @ W_U_DV.float()
        top_v, top_i = logits_FV.topk(k, dim=1)
        bottom_v, bottom_i = logits_FV.topk(k, dim=1, largest=False)
        for row, feature in enumerate(chunk):
            out.append(
                FeatureLogits(
                    feature=int(feature),
                    top=[(int(i), decode(int(i)), float(v)) for i, v in zip(top_i[row], top_v[row], strict=True)],
                    bottom=[
                        (int(i), decode(int(i)), float(v)) for i, v in zip(bottom_i[row], bottom_v[row], strict=True)
                    ],
                )
            )
    return out


def _token_text(tokenizer: Any) -> Callable[[int], str]:
    if tokenizer is None:
        return str
    return lambda token_id: tokenizer.decode([token_id])


def save_feature_logits(store, run_id: str, logits: Sequence[FeatureLogits]) -> None:
    """Write `logits` to the run's `feature_logits` table, replacing a feature's earlier rows."""
    rows = [
        {"run_id": run_id, "feature": item.feature, "side": side, "rank": rank, "token_id": t, "token": s, "value": v}
        for item in logits
        for side, entries in (("top", item.top), ("bottom", item.bottom))
        for rank, (t, s, v) in enumerate(entries)
    ]
    with store.db.atomic():  # nests (a savepoint) inside a caller's transaction, where `with conn` would commit it
        store.db.conn.executemany(
            "DELETE FROM feature_logits WHERE run_id = ? AND feature = ?", [(run_id, x.feature) for x in logits]
        )
        store.db.table("feature_logits").insert_all(rows)


def load_feature_logits(store, run_id: str) -> dict[int, FeatureLogits]:
    """feature -> its stored logits for run `run_id`; empty for a run sampled before logits were stored."""
    if "feature_logits" not in store.db.table_names():
        return {}
    found: dict[int, dict[str, list]] = {}
    for row in store.db.query(
        "SELECT feature, side, token_id, token, value FROM feature_logits WHERE run_id = ? "
        "ORDER BY feature, side, rank",
        [run_id],
    ):
        found.setdefault(row["feature"], {"top": [], "bottom": []})[row["side"]].append(
            (row["token_id"], row["token"], row["value"])
        )
    return {f: FeatureLogits(feature=f, top=v["top"], bottom=v["bottom"]) for f, v in found.items()}


def save_run_logits(store, run_id: str, sae, model, features: Sequence[int]) -> None:
    """Compute and store the logits of `features` when the SAE has a decoder (`weights['W_dec']`) and the
    model an unembedding (`W_U`); an SAE run through someone else's encode has neither, and gets none."""
    weights = getattr(sae, "weights", None)
    W_U_DV = getattr(model, "W_U", None)
    if not weights or "W_dec" not in weights or W_U_DV is None or not features:
        return
    save_feature_logits(
        store, run_id, feature_logits(weights["W_dec"], W_U_DV, features, getattr(model, "tokenizer", None))
    )
