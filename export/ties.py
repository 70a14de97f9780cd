"""Numerical ties of the nearest-code choice, which fp32 cannot decide.

PyTorch computes ‖x‖² − 2·x·kᵀ + ‖k‖² with its GEMM; the graph computes ‖e‖² − 2·x·Eᵀ with ONNX
Runtime's. Both round, differently. When two codes' true distances differ by less than that rounding
error, either choice is correct and the two may differ. Such a frame is a tie, not a disagreement:
comparisons take the graph's code there and check everything downstream (the decoded audio) exactly.
Any other difference is a real disagreement and fails the export.
"""

from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF = 2.0**-24  # fp32


def tie_tolerance(width: int, embedding_norms: np.ndarray, code_norms: np.ndarray) -> np.ndarray:
    """Bound on |error(d_a) − error(d_b)| for fp32 distances d = ‖x‖² − 2·x·e + ‖e‖² of width `width`.

    Each distance sums about width + 2 rounded terms of magnitude ≤ ‖x‖² + ‖e‖² (|2·x·e| ≤ ‖x‖² + ‖e‖²),
    so its error is at most γ·2(‖x‖² + ‖e‖²) with γ = (width + 2)·u (Higham's bound); two of them, twice that.
    """
    return 4 * (width + 2) * UNIT_ROUNDOFF * (embedding_norms + code_norms)


def resolve_ties(
    graph_codes: np.ndarray, reference_codes: np.ndarray, embeddings: np.ndarray, codebook: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """The reference codes with numerical ties resolved toward the graph's codes.

    `embeddings` (N, T', C) are the reference encoder's outputs, `codebook` (K, C). Returns the
    resolved codes, the number of tie frames and the number of real disagreements (left as they were).
    """
    differ = graph_codes != reference_codes
    if not differ.any():
        return reference_codes, 0, 0
    x = embeddings[differ].astype(np.float64)
    graph_vectors = codebook[graph_codes[differ]].astype(np.float64)
    reference_vectors = codebook[reference_codes[differ]].astype(np.float64)
    gap = np.abs(((x - graph_vectors) ** 2).sum(-1) - ((x - reference_vectors) ** 2).sum(-1))
    norms = np.maximum((graph_vectors**2).sum(-1), (reference_vectors**2).sum(-1))
    tie = gap <= tie_tolerance(codebook.shape[1], (x**2).sum(-1), norms)
    resolved = reference_codes.copy()
    frames = np.argwhere(differ)[tie]
    resolved[tuple(frames.T)] = graph_codes[tuple(frames.T)]
    return resolved, int(tie.sum()), int((~tie).sum())
