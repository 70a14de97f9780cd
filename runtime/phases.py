"""A transposed convolution (kernel 4, stride 2, padding 1) as one 3-tap convolution to its two output phases.

Output frame 2m is x[m]·W₁ + x[m−1]·W₃ and frame 2m+1 is x[m+1]·W₀ + x[m]·W₂ (W_k the kernel's tap k), so a
convolution over x[m−1], x[m], x[m+1] with 2·C_out output channels computes both phases, even frames in the first
C_out channels and odd frames in the rest, and interleaving them gives the transposed convolution's output. The
OpenVINO backend uses it (its transposed convolutions have no AMX kernel) and so do the streaming graphs (a
convolution caches its history; a transposed one would need its overlap tail).
"""

from __future__ import annotations

import numpy as np


def phase_taps(weights: np.ndarray) -> np.ndarray:
    """(C_in, C_out, 4) transposed-convolution weights → (2·C_out, C_in, 3) phase-convolution weights."""
    c_out = weights.shape[1]
    taps = np.zeros((2 * c_out, weights.shape[0], 3), weights.dtype)
    taps[:c_out, :, 0], taps[:c_out, :, 1] = weights[:, :, 3].T, weights[:, :, 1].T  # even output frames
    taps[c_out:, :, 1], taps[c_out:, :, 2] = weights[:, :, 2].T, weights[:, :, 0].T  # odd output frames
    return taps
