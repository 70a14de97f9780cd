"""fp32 ties of the nearest-code choice: accepted only when fp32 rounding cannot tell the codes apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_export_bundle import tiny_separator

from unmix.export import ExportError
from unmix.export.checks import _compare
from unmix.export.reference import TorchReference
from unmix.export.ties import resolve_ties, tie_tolerance


def test_near_equal_distances_are_ties_and_others_are_not():
    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((8, 16)).astype(np.float32)
    x = codebook[2] + 0.01 * rng.standard_normal(16)
    # code 5 becomes x's mirror image through code 2's distance: the same distance up to ~1e-9
    direction = rng.standard_normal(16)
    direction -= direction @ (x - codebook[2]) / np.sum((x - codebook[2]) ** 2) * (x - codebook[2])
    codebook[5] = x + np.linalg.norm(x - codebook[2]) * direction / np.linalg.norm(direction)
    embeddings = np.stack([x, x, x])[None].astype(np.float32)  # (1, 3, 16)
    reference = np.array([[2, 2, 2]])
    graph = np.array([[2, 5, 7]])  # frame 1: the mirror code (a tie); frame 2: an unrelated code
    resolved, ties, real = resolve_ties(graph, reference, embeddings, codebook)
    assert (ties, real) == (1, 1)
    np.testing.assert_array_equal(resolved, [[2, 5, 2]])
    gap = abs(np.sum((x - codebook[5]) ** 2) - np.sum((x - codebook[2]) ** 2))
    assert gap <= tie_tolerance(16, np.sum(x**2), np.sum(codebook[2] ** 2))


def test_reference_decodes_the_graphs_tie_choice_and_flags_real_disagreements():
    torch.set_num_threads(1)
    separator = tiny_separator(90)
    reference = TorchReference(separator)
    mixture = np.random.default_rng(1).standard_normal((1, 1, 8 * 64)).astype(np.float32)
    chosen = int(reference.outputs(mixture)["codes"][0, 3])
    twin = (chosen + 1) % 64
    # Make `twin` a copy of frame 3's code, perturbed far below the fp32 resolution of the distances,
    # then pretend the graph picked the other one of the pair on frame 3.
    with torch.no_grad():
        separator.codebook.k[twin] = separator.codebook.k[chosen] * (1 + 1e-7)
    reference = TorchReference(separator)
    raw = reference.outputs(mixture)
    graph_codes = raw["codes"].copy()
    graph_codes[0, 3] = twin if raw["codes"][0, 3] == chosen else chosen
    expected = reference(mixture, {"codes": graph_codes})
    assert int(expected["tie_frames"]) == 1 and expected["codes"][0, 3] == graph_codes[0, 3]
    np.testing.assert_allclose(expected["stem"], reference.decode(graph_codes), atol=1e-6)
    far = graph_codes.copy()
    far[0, 5] = (raw["codes"][0, 5] + 17) % 64  # a code nowhere near a tie
    expected = reference(mixture, {"codes": far})
    with pytest.raises(ExportError, match="codes agree with the reference on"):
        _compare("test", {"codes": far}, expected, 1e-4)
