"""The paper's quality measure (numpy only, so the benchmarks can use it without torch)."""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import ArrayLike

_Self = TypeVar("_Self", bound="_Divisible")  # typing.Self needs Python 3.11


class _Divisible(Protocol):
    """What `scaled_mixture` needs of its input: division by an int that keeps the type (ndarray, Tensor)."""

    def __truediv__(self: _Self, other: int, /) -> _Self: ...


Audio = TypeVar("Audio", bound=_Divisible)  # a numpy array or a torch tensor

SDR_EPSILON = 1e-7
STEM_COUNT = 4


def sdr(reference: ArrayLike, estimate: ArrayLike) -> float:
    """The paper's SDR (eq. 2) in dB, global over all samples: 10·log10((Σs² + ε) / (Σ(s − ŝ)² + ε)), ε = 1e-7."""
    s = np.asarray(reference, dtype=np.float64)
    s_hat = np.asarray(estimate, dtype=np.float64)
    if s.shape != s_hat.shape:
        raise ValueError(f"reference {s.shape} and estimate {s_hat.shape} differ in shape")
    return float(10 * np.log10((np.square(s).sum() + SDR_EPSILON) / (np.square(s - s_hat).sum() + SDR_EPSILON)))


def scaled_mixture(mixture: Audio) -> Audio:
    """The ScaledMixture baseline: every stem estimated as mixture / 4."""
    return mixture / STEM_COUNT
