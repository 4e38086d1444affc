"""The `Metric` record (a value, or the reason it is undefined) and the array helpers every scoring module uses.

Pure numpy; no I/O. A metric that cannot be computed (a constant input, no positive windows, ...) is a
`Metric` with ``value=None`` and a ``reason``, never 0 and never an exception. Exceptions are kept for
programming errors (arrays of different lengths, predictions off the 0..10 scale).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from autointerp.errors import expected

N_LEVELS = 11  # the 0..10 scale


@dataclass(frozen=True)
class Metric:
    """A metric value, or ``None`` with the reason it is undefined. Exactly one of the two is set."""

    value: float | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError(expected("Metric", f"value={self.value!r}, reason={self.reason!r}", "exactly one set"))

    @classmethod
    def ok(cls, value: float) -> "Metric":
        return cls(float(value), None)

    @classmethod
    def undefined(cls, reason: str) -> "Metric":
        return cls(None, reason)

    @property
    def defined(self) -> bool:
        return self.value is not None


def pair_arrays(a: Any, p: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Two inputs as flat float64 arrays of equal length; ValueError naming `name` otherwise."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(p, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(expected(name, f"truth of length {x.size} and prediction of length {y.size}", "equal"))
    return x, y


def is_constant(x: np.ndarray) -> bool:
    """All values exactly equal (True for an empty array)."""
    # Exact equality on the inputs: a centred sum of squares can be a rounding residue instead of 0.
    return bool(np.all(x == x[0])) if x.size else True


def rank_average(x: Any) -> np.ndarray:
    """Ranks 1..n of a 1-d array; ties share the mean of their ranks ([5, 1, 5] -> [2.5, 1, 2.5])."""
    v = np.asarray(x, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # start index of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks
