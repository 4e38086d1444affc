"""What some exporters need about a run beyond its FeatureReports: its config, the SAE's own cfg.json and
hook, versions and times. Built once per export from the run's store (`run_context`) and passed to the
exporters that take a `context` option, so the exporters themselves never open the database or the SAE.
"""

import logging
from typing import Any

from pydantic import BaseModel, Field

from autointerp.errors import AutointerpError

log = logging.getLogger(__name__)

# The sampler's context length when neither the run nor the SAE names one (autointerp.config's documented
# default for `sampler.context_size`).
DEFAULT_CONTEXT_SIZE = 128


class ExportContext(BaseModel):
    """Facts about one run that exports need; every field may be missing for an SAE folder that is gone."""

    run_id: str
    config: dict[str, Any] = Field(description="the run's RunConfig as stored with it")
    versions: dict[str, str] = Field(default_factory=dict, description="package versions the run recorded")
    created_at: str | None = Field(default=None, description="ISO 8601 time the run was created")
    updated_at: str | None = Field(default=None, description="ISO 8601 time the run was last written")
    sae_cfg: dict[str, Any] | None = Field(
        default=None, description="the SAE's cfg.json as written (SAELens or sparsify); None if unreadable"
    )
    hook_name: str | None = Field(default=None, description="TransformerLens hook the SAE reads")
    sae_context_size: int | None = Field(default=None, description="the SAE's training context length")
    prepend_bos: bool = Field(default=True, description="whether the run's contexts start with BOS")

    @property
    def neuronpedia_id(self) -> str | None:
        """SAELens's `neuronpedia_id` ('<model id>/<source>'), under `metadata` since SAELens 6."""
        cfg = self.sae_cfg or {}
        metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
        value = metadata.get("neuronpedia_id") or cfg.get("neuronpedia_id")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def context_size(self) -> int:
        """Tokens per context the sampler used: the run's setting, else the SAE's, else the default."""
        sampler = self.config.get("sampler") or {}
        return int(sampler.get("context_size") or self.sae_context_size or DEFAULT_CONTEXT_SIZE)

    @property
    def corpus_name(self) -> str:
        corpus = self.config.get("corpus") or {}
        return str(corpus.get("source") or "")


def run_context(store, run_id: str) -> ExportContext:
    """The ExportContext of run `run_id` in `store` (a RunStore). The SAE is read from the path the run
    config names; when it cannot be read, the SAE fields stay empty and exports fall back to options."""
    run = store.require_run(run_id)
    config = run["config"]
    context = ExportContext(
        run_id=run_id,
        config=config,
        versions=run.get("versions") or {},
        created_at=run.get("created_at"),
        updated_at=run.get("updated_at"),
    )
    sae = str(config.get("sae") or "")
    if not sae:
        return context
    try:
        from autointerp.sae.load import read_sae_cfg  # the cfg.json only: no weights are read

        raw, facts = read_sae_cfg(sae)
    except (OSError, ValueError, AutointerpError) as error:  # moved or deleted since the run: not fatal
        log.warning("export: could not read the run's SAE %r (%s); SAE facts left empty", sae, error)
        return context
    return context.model_copy(
        update={
            "sae_cfg": raw,
            "hook_name": facts["hook_name"],
            "sae_context_size": facts["context_size"],
            "prepend_bos": bool(facts["prepend_bos"]),
        }
    )
