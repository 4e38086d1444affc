"""User-facing errors: one paragraph that names the input, what was found and what was expected.

The CLI prints these without a traceback (unless --debug) and exits non-zero. Anything else that
escapes is a bug and keeps its traceback.
"""


class AutointerpError(Exception):
    """Bad input or an unmet precondition, explained for the user."""

    exit_code = 2


class InputError(AutointerpError):
    """A file, key or argument the user gave does not fit what was expected."""


class StoreError(AutointerpError):
    """The run's database cannot be used as asked (other SAE, newer schema, corrupt, read-only)."""

    exit_code = 3


def expected(what: str, found: str, wanted: str, hint: str = "") -> str:
    """Compose the standard message: `<what>: found <found>; expected <wanted>. <hint>`."""
    message = f"{what}: found {found}; expected {wanted}."
    return f"{message} {hint}".strip()
