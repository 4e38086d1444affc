"""The `autointerp` command: parse flags, build a RunConfig, call the stage functions. Nothing else."""

import argparse
import errno
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from autointerp.errors import (
    EXIT_FEATURES_FAILED,
    EXIT_OK,
    EXIT_STORE,
    AutointerpError,
    InputError,
    disk_full,
    expected,
)

# flag -> (dotted RunConfig field, type). A flag's help is that field's `Field(description=...)` in
# autointerp/config.py, the one place the wording lives (job files use the same fields).
RUN_FLAGS: dict[str, tuple[str, type]] = {
    "--sae": ("sae", str),
    "--model": ("model", str),
    "--corpus": ("corpus.source", str),
    "--text-field": ("corpus.text_field", str),
    "--device": ("device", str),
    "--dtype": ("dtype", str),
    "--run-dir": ("run_dir", str),
    "--n-tokens": ("sampler.n_tokens", int),
    "--context-size": ("sampler.context_size", int),
    "--batch-size": ("sampler.batch_size", int),
    "--window-size": ("sampler.window_size", int),
    "--max-state-gb": ("sampler.max_state_gb", float),
    "--checkpoint-tokens": ("sampler.checkpoint_tokens", int),
    "--n-features": ("selection.n_features", int),
    "--features": ("selection.features", str),
    "--seed": ("selection.seed", int),
    "--explainer": ("llm.explainer", str),
    "--simulator": ("llm.simulator", str),
    "--max-in-flight": ("llm.max_in_flight", int),
    "--prices": ("llm.prices_file", str),  # named by docs and warnings (`--prices FILE`)
    "--batch": ("llm.batch", bool),  # a switch: given means true
    "--quantise": ("scoring.quantise_rule", str),
    "--controls-share": ("scoring.controls_share", float),
    "--scorers": ("scoring.scorers", str),
    "--redraws": ("scoring.redraws", int),
    "--stratify": ("selection.stratify_by_density", bool),  # a switch: given means true
}


def field_description(dotted: str) -> str:
    """The description of RunConfig field `dotted` (e.g. 'sampler.n_tokens'); KeyError if there is none."""
    from pydantic import BaseModel

    from autointerp.config import RunConfig

    model: type[BaseModel] = RunConfig
    *parents, last = dotted.split(".")
    for name in parents:
        model = model.model_fields[name].annotation  # type: ignore[assignment]  # nested configs are models
    description = model.model_fields[last].description
    if not description:
        raise KeyError(f"RunConfig field {dotted!r} has no description")
    return description


class RunFlagHelpFormatter(argparse.HelpFormatter):
    """Reads a run flag's help from RunConfig only when help is printed: that needs autointerp.config,
    which imports torch (about a second), and commands such as `table` must not pay for it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        dotted = getattr(action, "run_field", None)
        if dotted is None:
            return super()._get_help_string(action)
        return field_description(dotted).replace("%", "%%")  # argparse %-formats help text


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def config_fields() -> dict[str, bool]:
    """Every RunConfig setting by dotted name (e.g. 'sampler.n_tokens') -> whether it is a section (a nested
    model such as 'sampler') rather than a value."""
    from pydantic import BaseModel

    from autointerp.config import RunConfig

    out: dict[str, bool] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            section = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            out[prefix + name] = section
            if section:
                walk(field.annotation, f"{prefix}{name}.")  # type: ignore[arg-type]  # a nested model

    walk(RunConfig, "")
    return out


def nearest_setting(key: str, fields: dict[str, bool]) -> str | None:
    """The RunConfig setting a mistyped or misplaced dotted `key` most likely meant: the closest dotted name,
    else the setting whose own name is closest to the key's last part (e.g. top-level `n_tokens`)."""
    import difflib

    names = [name for name, section in fields.items() if not section]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaves = {name.rsplit(".", 1)[-1]: name for name in names}
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaves), n=1, cutoff=0.6)
    return leaves[close[0]] if close else None


def check_job_keys(path: str, data: dict, prefix: str = "") -> None:
    """InputError naming the first key of a job file that is no RunConfig setting, and the nearest one that is:
    a mistyped key would otherwise be ignored silently and the run made with the default."""
    fields = config_fields()
    for key, value in data.items():
        dotted = prefix + key
        if dotted not in fields:
            near = nearest_setting(dotted, fields)
            hint = f"Did you mean {near!r}?" if near else "See `autointerp run --help` for the settings."
            raise InputError(expected(f"Job file {path}", f"unknown key {dotted!r}", "a RunConfig setting", hint))
        if fields[dotted] and isinstance(value, dict):
            check_job_keys(path, value, dotted + ".")


def load_job(path: str | None) -> dict:
    if not path:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(expected(f"Job file {path}", "no such file", "a TOML file such as jobs/demo.toml")) from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(expected(f"Job file {path}", f"invalid TOML ({err})", "valid TOML")) from None
    check_job_keys(path, data)
    return data


def build_config(args: argparse.Namespace):
    """Job file first, then every flag given on the command line on top."""
    from pydantic import ValidationError

    from autointerp.config import RunConfig

    data = load_job(getattr(args, "job", None))
    for flag, (dotted, _) in RUN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            _set_dotted(data, dotted, value)
    if "sae" not in data:
        raise InputError(
            "No SAE given: expected --sae PATH (or --sae demo for the built-in one) or `sae = ...` in a job file."
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        flags = [flag for flag, (dotted, _) in RUN_FLAGS.items() if where.startswith(dotted)]
        if flags:
            where += f" ({flags[0]})"
        raise InputError(expected(f"Setting {where}", repr(first.get("input")), first["msg"])) from None


def add_run_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """The run flags (all, or those in `only`); unset ones stay None so a job file's values survive.
    `parser` must use RunFlagHelpFormatter for the help to show the fields' descriptions."""
    for flag, (dotted, kind) in RUN_FLAGS.items():
        if only is None or flag in only:
            if kind is bool:
                action = parser.add_argument(flag, action="store_true", default=None, help=dotted)
            else:
                action = parser.add_argument(flag, type=kind, default=None, help=dotted)
            action.run_field = dotted  # type: ignore[attr-defined]  # read by RunFlagHelpFormatter


def cmd_info(args) -> int:
    from autointerp.inputs import load_inputs

    cfg = build_config(args)
    inputs = load_inputs(cfg, with_corpus=False)
    report = inputs.fit
    print(f"SAE            {inputs.sae.cfg.path}")
    print(
        f"architecture   {report.architecture}" + (f" (k={report.k})" if report.k else "") + f", {report.layout} layout"
    )
    print(f"d_in x d_sae   {report.d_in} x {report.d_sae}")
    print(f"hook           {report.hook_name}  (width {report.d_in}: fits)")
    print(f"model          {report.model_name} on {report.device}, {report.model_dtype}; SAE dtype {report.sae_dtype}")
    if report.density:
        summary = ", ".join(f"{k} {v:g}" for k, v in report.density.items())
        print(f"density        {summary}")
    else:
        print("density        no sparsity.safetensors (run measures it)")
    return 0


def print_renderables(*items) -> None:
    """Rich tables, rules and text on stdout, one `Console.print` each."""
    from rich.console import Console

    console = Console()
    for item in items:
        console.print(item)


def cmd_sample(args) -> int:
    from autointerp.pipeline import sample_stage
    from autointerp.terminal import TerminalReporter

    sample_stage(build_config(args), TerminalReporter())
    return 0


def cmd_run(args) -> int:
    """Exit status 1 (EXIT_FEATURES_FAILED) when some features failed, after the summary, their reasons and
    the command that retries them; 0 with the next commands to try when every feature was scored."""
    from autointerp.pipeline import run, run_folder
    from autointerp.show import summary_table
    from autointerp.terminal import TerminalReporter

    cfg = build_config(args)
    summary = run(cfg, retry_failed=args.retry_failed, reporter=TerminalReporter())
    print_renderables(summary_table(summary))
    run_dir = run_folder(cfg)
    if summary["failed"]:
        print(failure_report(run_dir, summary["run_id"], summary["failed"], getattr(args, "argv", None)))
        return EXIT_FEATURES_FAILED
    print(next_commands(run_dir, summary["run_id"]))
    return EXIT_OK


def failure_report(run_dir: Path, run_id: str, n_failed: int, argv: list[str] | None) -> str:
    """Why features failed, grouped by (stage, reason) with counts, and the command that retries them."""
    import shlex

    from autointerp.store import RunStore

    with RunStore.open(run_dir, create=False) as store:
        failed = store.failed_features(run_id)
        errors = store.open_errors(run_id)
    groups: dict[tuple[str, str], list[int]] = {}
    for feature, stage, message in errors:
        if feature in failed:
            groups.setdefault((stage, failure_reason(stage, message)), []).append(feature)
    lines = [f"{n_failed} feature(s) failed; reasons, most common first:"]
    for (stage, message), features in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(map(str, sorted(set(features))[:8])) + (", ..." if len(set(features)) > 8 else "")
        lines.append(f"  {len(set(features)):>5}  {stage}: {message}  (features {shown})")
    words = list(argv if argv is not None else sys.argv[1:])
    if "--retry-failed" not in words:
        words.append("--retry-failed")
    lines.append("Fix the cause, then retry only those features with:")
    lines.append("  " + shlex.join(["autointerp", *words]))
    return "\n".join(lines)


def failure_reason(stage: str, message: str) -> str:
    """A failure message without what differs from feature to feature (its stage and feature number), on one
    line and at most 300 characters, so the same cause groups as one reason."""
    import re

    text = " ".join(message.split()).removeprefix(f"{stage}: ")
    text = re.sub(r"^feature \d+: ", "", text)
    text = re.sub(r"\bfeature \d+\b", "feature N", text)
    return text if len(text) <= 300 else text[:299] + "…"


def next_commands(run_dir: Path, run_id: str) -> str:
    """What to try after a good run: one feature in the terminal, the browsable page, the table."""
    import shlex

    from autointerp.store import RunStore

    with RunStore.open(run_dir, create=False) as store:
        scored = list(store.feature_scores(run_id)) or list(store.load_explanations(run_id))
    where = shlex.quote(str(run_dir))
    lines = ["Next:"]
    if scored:
        lines.append(f"  autointerp show {where} {min(scored)}      # one feature: windows, explanation, scores")
    lines.append(f"  autointerp export {where} --format html --out {shlex.quote(str(run_dir / 'html'))}")
    lines.append(f"  autointerp table {where}")
    return "\n".join(lines)


def cmd_show(args) -> int:
    from autointerp.show import feature_view, load_feature_report

    print_renderables(*feature_view(load_feature_report(Path(args.run_dir), args.feature)))
    return 0


def cmd_table(args) -> int:
    from autointerp.tables import density_breakdown, format_rows, run_table

    print(format_rows(run_table([Path(p) for p in args.run_dirs]), args.format))
    if args.by_density:
        for run_dir in args.run_dirs:
            print(format_rows(density_breakdown(Path(run_dir)), args.format))
    return 0


def cmd_compare(args) -> int:
    import json

    from autointerp.tables import compact_paired_row, compare_runs, format_rows

    result = compare_runs(Path(args.a), Path(args.b))
    if args.format == "json":
        print(json.dumps(result, indent=1))
    else:
        print(format_rows(result["runs"], args.format))
        paired = result["paired_scores"]
        if paired and args.format == "terminal":  # the columns a reader compares by; csv/json/markdown keep all
            paired = [compact_paired_row(row) for row in paired]
        print(format_rows(paired or [result["unpaired"]], args.format))
        print(result["note"])
    return 0


# Exporter options (autointerp.export) -> CLI flags, and their help.
EXPORT_FLAGS = {
    "model_id": "np-model-id",
    "source": "np-source",
    "set_name": "np-set-name",
    "explanation_type": "np-explanation-type",
    "explanation_model": "np-explanation-model",
    "batch_size": "batch-size",
    "scorer": "saebench-scorer",
    "metric": "saebench-metric",
    "sae_release": "saebench-release",
    "sae_id": "saebench-sae-id",
    "title": "title",
}
EXPORT_HELP = {
    "model_id": "neuronpedia/saedashboard: Neuronpedia model id (default: SAELens neuronpedia_id, else the model)",
    "source": "neuronpedia/saedashboard: Neuronpedia source '<layer>-<set>' (default: neuronpedia_id, else hook)",
    "set_name": "neuronpedia/saedashboard: source set name; the source is '<hook layer>-<set name>'",
    "explanation_type": "neuronpedia: methodName, an explanation type registered there (default: none)",
    "explanation_model": "neuronpedia: modelName, an explanation model registered there (default: none)",
    "batch_size": "neuronpedia/saedashboard: features per batch file",
    "scorer": "saebench: detection, simulation or auto (default: detection when the run has it)",
    "metric": "saebench: balanced_accuracy (default) or accuracy (SAEBench's own; detection only)",
    "sae_release": "saebench: release name for the file and sae_lens_release_id (default: the SAE's name)",
    "sae_id": "saebench: SAE id for the file and sae_lens_id (default: custom_sae)",
    "title": "html: page title",
}


def cmd_export(args) -> int:
    from autointerp.export import export_run, exporter_options

    # Only the options the chosen format takes; a flag given for another format is refused, not dropped.
    given = {name: getattr(args, name) for name in EXPORT_FLAGS if getattr(args, name) is not None}
    unknown = [f"--{EXPORT_FLAGS[name]}" for name in given if name not in exporter_options(args.format)]
    if unknown:
        raise InputError(expected(f"export --format {args.format}", ", ".join(unknown), "options of that format"))
    written = export_run(Path(args.run_dir), args.format, Path(args.out), **given)
    for path in written:
        print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="autointerp", description="Explain and score SAE features with LLMs.")
    top.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = top.add_subparsers(dest="command", required=True)

    info = sub.add_parser(
        "info", help="what an SAE holds and whether it fits the model's hook", formatter_class=RunFlagHelpFormatter
    )
    info.add_argument("--job")
    add_run_flags(info, ("--sae", "--model", "--device", "--dtype"))
    info.set_defaults(func=cmd_info)

    for name, func, helptext in (
        ("sample", cmd_sample, "sampling stage only: contexts and statistics into the run's store"),
        ("run", cmd_run, "sample, explain, simulate and score; resumable"),
    ):
        p = sub.add_parser(name, help=helptext, formatter_class=RunFlagHelpFormatter)
        p.add_argument("--job", help="TOML job file (flags override it)")
        add_run_flags(p)
        p.add_argument("--retry-failed", action="store_true", help="redo only the features that failed")
        p.set_defaults(func=func)

    show = sub.add_parser("show", help="one feature of a run in the terminal")
    show.add_argument("run_dir")
    show.add_argument("feature", type=int)
    show.set_defaults(func=cmd_show)

    table = sub.add_parser("table", help="one row per run: scores, lift, calibration, cost")
    table.add_argument("run_dirs", nargs="+")
    table.add_argument("--format", choices=["terminal", "markdown", "csv", "json"], default="terminal")
    table.add_argument("--by-density", action="store_true", help="also break scores down by density bucket")
    table.set_defaults(func=cmd_table)

    compare = sub.add_parser("compare", help="two runs side by side, paired on shared features")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--format", choices=["terminal", "markdown", "csv", "json"], default="terminal")
    compare.set_defaults(func=cmd_compare)

    exp = sub.add_parser("export", help="explanations for feature browsers, scores for SAEBench")
    exp.add_argument("run_dir")
    exp.add_argument("--format", choices=["neuronpedia", "saedashboard", "saebench", "jsonl", "html"], required=True)
    exp.add_argument("--out", required=True)
    for name, flag in EXPORT_FLAGS.items():
        exp.add_argument(f"--{flag}", dest=name, type=int if name == "batch_size" else str, help=EXPORT_HELP[name])
    exp.set_defaults(func=cmd_export)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the command that retries failed features
    try:
        code = args.func(args)
    except AutointerpError as err:
        if args.debug:
            raise
        print(f"autointerp: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a full disk under a checkpoint, an export or the lock file: not our bug
        if args.debug or err.errno != errno.ENOSPC:
            raise
        print(f"autointerp: error: {disk_full(err.filename or 'a file being written', err.strerror)}", file=sys.stderr)
        return EXIT_STORE
    except KeyboardInterrupt:
        print(
            "autointerp: interrupted; run the same command again to resume from what the run folder holds.",
            file=sys.stderr,
        )
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
