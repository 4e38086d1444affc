"""Checks made before the first token is sampled.

Sampling is the long part of a run on a CPU and the LLM stages come after it, so a setting those stages read
(a backend spec, a missing API key, a price file, the scorers) must be refused before sampling starts, not
after: every setting is parsed, and every backend and scorer built (building checks credentials, makes no
call), in seconds. Settings pydantic can check alone (`--max-in-flight 0`) are refused earlier still, by
RunConfig's field constraints when the config is built.
"""

import torch

from autointerp.config import RunConfig
from autointerp.dtypes import parse_dtype
from autointerp.errors import InputError, expected
from autointerp.selection import parse_feature_list


def check_device(device: str | None) -> None:
    """InputError unless `device` (None: the default) names a device this torch build can use."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise InputError(expected(f"--device {device!r}", "not a device name", "cpu, cuda or cuda:N")) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "a torch built without CUDA" if torch.version.cuda is None else "no usable CUDA GPU"
            raise InputError(
                expected(
                    f"--device {device}",
                    f"{why} (torch {torch.__version__})",
                    "a CUDA GPU visible to this process",
                    "Use --device cpu, or install a CUDA build of torch on a machine with a GPU.",
                )
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InputError(
                expected(
                    f"--device {device}", f"{torch.cuda.device_count()} CUDA device(s)", "an index below that count"
                )
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(expected(f"--device {device}", "no MPS device", "cpu or cuda"))
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise InputError(expected(f"--device {device}", f"device type {parsed.type!r}", "cpu, cuda or cuda:N"))


def check_sampling(cfg: RunConfig) -> None:
    """The settings sampling reads that pydantic cannot check alone: device, dtype, the feature list's form
    (window and context sizes are checked by the sampler before it streams)."""
    check_device(cfg.device)
    if cfg.dtype is not None:
        try:
            parse_dtype(cfg.dtype)
        except ValueError as err:
            raise InputError(expected("--dtype", repr(cfg.dtype), str(err))) from None
    if cfg.selection.features is not None:
        parse_feature_list(cfg.selection.features, d_sae=2**62)  # the form only; the range once the SAE is loaded


def check_llm(cfg: RunConfig) -> str:
    """Build the explainer, simulator and scorers `cfg` names (InputError for a bad spec, a missing key, a bad
    price file or scorer); returns the sentence saying which backends run. Nothing is called."""
    from autointerp.interpret import resolve_backends
    from autointerp.scorers import make_scorer

    _, simulator, _, note = resolve_backends(cfg)
    for name in cfg.scoring.scorers or ():
        make_scorer(name, simulator, cfg)
    return note


def check_run(cfg: RunConfig, llm: bool = True) -> None:
    """Every check of this module for a run; with llm=False (`autointerp sample`) the LLM settings are
    checked only when some are given (the run that follows may still choose them)."""
    check_sampling(cfg)
    if cfg.llm.batch:  # before the backends are built: --batch with the local model must not load it
        from autointerp.batch_run import check_batch

        check_batch(cfg)
    if llm or cfg.llm.explainer is not None or cfg.llm.simulator is not None:
        check_llm(cfg)
