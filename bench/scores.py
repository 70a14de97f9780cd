"""Separation scores: the paper's SDR (eq. 2) over whole songs, and optional BSSEval v4 via museval."""

from __future__ import annotations

import numpy as np

# The paper's eq. 2, global over every sample it is given: on a stereo (frames, 2) song it sums over both
# channels, as the Music Demixing Challenge 2021 SDR does (the paper scored mono downmixes; on mono input
# the two agree).
from unmix.train.metrics import sdr

__all__ = ["bsseval_sdr", "sdr"]


def bsseval_sdr(
    references: dict[str, np.ndarray], estimates: dict[str, np.ndarray], sample_rate: int
) -> dict[str, float]:
    """BSSEval v4 SDR per stem (museval: 1 s windows, median over windows), as SiSEC 2018 reports it.

    Raises ImportError when museval (the `eval` extra) is not installed.
    """
    import museval  # optional: pip install 'unmix[eval]'

    stems = list(references)
    refs = np.stack([references[stem] for stem in stems]).astype(np.float64)
    ests = np.stack([estimates[stem] for stem in stems]).astype(np.float64)
    scores, _, _, _ = museval.evaluate(refs, ests, win=sample_rate, hop=sample_rate)
    return {stem: float(np.nanmedian(scores[index])) for index, stem in enumerate(stems)}
