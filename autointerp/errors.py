"""User-facing errors: one paragraph that names the input, what was found and what was expected.

The CLI prints these without a traceback (unless --debug) and exits with the error's `exit_code`. Anything
else that escapes is a bug and keeps its traceback.

Exit statuses of the `autointerp` command (README, "Command line"), one meaning each:
    0    done: every sampled feature was scored (or the command had nothing to score)
    1    the run finished, but some features failed; the others are stored and `--retry-failed` redoes them
    2    bad input: a flag, job file, SAE, model, backend spec or API key; nothing was sampled or called
    3    the run directory was refused: made with other settings, in use by another process, damaged,
         read-only, or its disk is full
    130  interrupted (Ctrl-C); finished explanations and judgements are stored, sampling keeps its last
         checkpoint; the same command resumes
"""

EXIT_OK = 0
EXIT_FEATURES_FAILED = 1
EXIT_INPUT = 2
EXIT_STORE = 3
EXIT_INTERRUPTED = 130


class AutointerpError(Exception):
    """Bad input or an unmet precondition, explained for the user."""

    exit_code = EXIT_INPUT


class InputError(AutointerpError):
    """A file, key or argument the user gave does not fit what was expected."""


class StoreError(AutointerpError):
    """The run's database or directory cannot be used as asked (other SAE or settings, newer schema, corrupt,
    read-only, in use by another process, disk full)."""

    exit_code = EXIT_STORE


class DiskFull(StoreError):
    """No space left where the run writes: nothing is damaged, and the same command resumes once there is."""


def expected(what: str, found: str, wanted: str, hint: str = "") -> str:
    """Compose the standard message: `<what>: found <found>; expected <wanted>. <hint>`."""
    message = f"{what}: found {found}; expected {wanted}."
    return f"{message} {hint}".strip()


def disk_full(where: str, detail: str) -> DiskFull:
    """The error for a write that found no space left at `where` (a file or folder)."""
    return DiskFull(
        f"{where}: the disk is full ({detail}); nothing stored is damaged. Free some space and run the same "
        "command again: it resumes from what is stored."
    )
