"""Neuronpedia's names for where features live: a model id and a source `<layer>-<set name>`.

Read from Neuronpedia's own code (hijohnnylin/neuronpedia at commit ebb8426f, 2026-08-20):
- `apps/webapp/app/api/feature/upload-batch/route.tsx`: `modelId` and `source` are required strings,
  lowercased; the source must be one of the sources of a source set the uploader created.
- `apps/webapp/lib/utils/source.ts`, `getSourceSetNameFromSource`: the set name is what follows the first
  '-' of the source, up to an optional `__<suffix>`; a source that is only an integer names the model's
  neurons, not an SAE. The Python client's `SourceSet.new` (neuronpedia 1.2.1) creates one source per
  layer, named `<layer>-<set name>`; its notebook asks for set names of letters, digits and hyphens.

Defaults, in order: the exporter's options; SAELens's `neuronpedia_id` (`<model id>/<source>`) in the
SAE's cfg.json; the model's name (last path part, lowercased) and `<hook layer>-<set name>` with the set
name defaulting to the SAE's folder name; the reports' SAE name when it already has the source form.
"""

import re
from dataclasses import dataclass

from autointerp.errors import InputError, expected
from autointerp.export.context import ExportContext
from autointerp.hooks import hook_layer
from autointerp.records import FeatureReport

# Model ids on Neuronpedia: lowercase letters, digits, '.', '_' and '-' ("gpt2-small", "llama3.1-8b").
MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
# `<layer>-<set>[__<suffix>]`: the layer a number (or 'e', Neuronpedia's embedding layer); set names seen
# there use letters, digits, '-' and '_' ("res-jb", "res_post_32k-oai").
SOURCE = re.compile(r"(?P<layer>\d+|e)-(?P<set>[a-z0-9][a-z0-9_-]*?)(?:__(?P<suffix>[a-z0-9_-]+))?")


@dataclass(frozen=True)
class NeuronpediaTarget:
    """Where an upload goes: model id and source, and where each came from (for messages and side files)."""

    model_id: str
    source: str
    origin: str

    @property
    def layer(self) -> int | None:
        """The source's layer number; None for Neuronpedia's embedding layer 'e'."""
        found = SOURCE.fullmatch(self.source)
        layer = found.group("layer") if found else None
        return int(layer) if layer is not None and layer.isdigit() else None

    @property
    def set_name(self) -> str:
        found = SOURCE.fullmatch(self.source)
        return found.group("set") if found else ""

    @property
    def suffix(self) -> str | None:
        found = SOURCE.fullmatch(self.source)
        return found.group("suffix") if found else None


def slug(text: str) -> str:
    """Lowercase letters and digits, every other run of characters one '-' ("Blocks.8 Res" -> "blocks-8-res")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _one(reports: list[FeatureReport], attribute: str, option: str) -> str | None:
    values = {getattr(report, attribute).strip() for report in reports} - {""}
    if len(values) > 1:
        raise InputError(
            expected(
                f"Neuronpedia names: the reports' {attribute}",
                f"several values {sorted(values)}",
                "exactly one",
                f"Export one run at a time, or pass {option}.",
            )
        )
    return values.pop() if values else None


def resolve_target(
    reports: list[FeatureReport],
    context: ExportContext | None,
    *,
    model_id: str | None = None,
    source: str | None = None,
    set_name: str | None = None,
) -> NeuronpediaTarget:
    """The model id and source of an export (module doc for the order); InputError when neither the
    options nor the run give a name of the right form."""
    origins = []
    np_model, np_source = None, None
    if context is not None and context.neuronpedia_id and "/" in context.neuronpedia_id:
        np_model, np_source = context.neuronpedia_id.strip().split("/", 1)

    if model_id is not None:
        origins.append("model_id option")
    elif np_model:
        model_id = np_model
        origins.append("SAELens neuronpedia_id")
    else:
        name = (context.config.get("model") if context is not None else None) or _one(reports, "model_name", "model_id")
        if name:
            # "HuggingFaceTB/SmolLM2-135M" -> "smollm2-135m": Neuronpedia model ids are lowercase, no org.
            model_id = str(name).strip().rstrip("/").rsplit("/", 1)[-1]
            origins.append("model name")

    hook = context.hook_name if context is not None else None
    layer = hook_layer(hook) if hook else None
    sae_name = _one(reports, "sae_name", "source")
    if source is not None:
        origins.append("source option")
    elif set_name is None and np_source:
        source = np_source
        origins.append("SAELens neuronpedia_id")
    elif layer is not None and (set_name or sae_name):
        source = f"{layer}-{slug(set_name or sae_name or '')}"
        origins.append(f"layer {layer} of hook {hook} + " + ("set_name option" if set_name else "SAE name"))
    elif set_name is None and sae_name and SOURCE.fullmatch(sae_name.lower()):
        source = sae_name
        origins.append("SAE name")

    model_id = (model_id or "").strip().lower()
    source = (source or "").strip().lower()
    if not MODEL_ID.fullmatch(model_id):
        raise InputError(
            expected(
                "Neuronpedia model id",
                repr(model_id) if model_id else "none (no option, no SAELens neuronpedia_id, no model name)",
                "a Neuronpedia model id such as 'gpt2-small' (lowercase letters, digits, '.', '_', '-')",
                "Pass model_id (CLI: --np-model-id).",
            )
        )
    if not SOURCE.fullmatch(source):
        found = repr(source) if source else "none (no option, no SAELens neuronpedia_id, no hook layer)"
        raise InputError(
            expected(
                "Neuronpedia source",
                found,
                "'<layer>-<set name>' such as '8-res-demo', naming a source of a source set you created",
                "Pass source (CLI: --np-source), or set_name (--np-set-name) when the SAE's hook has a layer.",
            )
        )
    return NeuronpediaTarget(model_id=model_id, source=source, origin=", ".join(origins))
