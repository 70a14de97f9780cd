"""Fidelity of a backend/precision to the PyTorch reference on the same audio.

Per stem: code agreement (fraction of latent frames whose nearest code is the same), the SNR of the
candidate's output against the reference's output, the largest absolute difference, and the change of
the paper's SDR against the true stem (candidate minus reference).
"""

from __future__ import annotations

import numpy as np

from unmix.export.parity import snr

from .scores import sdr


def compare_stem(
    reference_audio: np.ndarray,
    candidate_audio: np.ndarray,
    truth: np.ndarray | None = None,
    reference_codes: np.ndarray | None = None,
    candidate_codes: np.ndarray | None = None,
) -> dict:
    """The fidelity figures of one stem's output (codes optional: not every backend returns them)."""
    reference_audio = np.asarray(reference_audio, np.float64).reshape(-1)
    candidate_audio = np.asarray(candidate_audio, np.float64).reshape(-1)
    if reference_audio.shape != candidate_audio.shape:
        raise ValueError(f"outputs differ in length: {reference_audio.shape} vs {candidate_audio.shape}")
    row = {
        "max_abs": float(np.abs(reference_audio - candidate_audio).max(initial=0.0)),
        "snr_db": snr(reference_audio, candidate_audio),
        "code_agreement": None,
        "sdr_delta_db": None,
    }
    if reference_codes is not None and candidate_codes is not None:
        row["code_agreement"] = float(np.mean(np.asarray(reference_codes) == np.asarray(candidate_codes)))
    if truth is not None:
        truth = np.asarray(truth).reshape(-1)
        row["sdr_delta_db"] = sdr(truth, candidate_audio) - sdr(truth, reference_audio)
    return row


def compare_outputs(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], truth: dict[str, np.ndarray]
) -> dict[str, dict]:
    """`compare_stem` for every stem of two `{"audio/<stem>": …, "codes/<stem>": …}` output sets."""
    stems = [key.split("/", 1)[1] for key in reference if key.startswith("audio/")]
    return {
        stem: compare_stem(
            reference[f"audio/{stem}"],
            candidate[f"audio/{stem}"],
            truth.get(stem),
            reference.get(f"codes/{stem}"),
            candidate.get(f"codes/{stem}"),
        )
        for stem in stems
    }
