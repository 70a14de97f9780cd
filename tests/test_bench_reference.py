"""The PyTorch paths the benchmark compares against, and the worker's handling of rows this machine cannot run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from runtime_bundle import tiny_bundle

from unmix.bench.models import random_separator, random_separators
from unmix.bench.reference import PaperStylePath, exact_separate
from unmix.bench.worker import Job, main
from unmix.train.config import TINY


@pytest.fixture(scope="module")
def separator():
    return random_separator(TINY, 7)


def whole(separator, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass on the whole signal (items, frames), zero-padded to the hop."""
    padded = np.pad(signal, ((0, 0), (0, -signal.shape[1] % TINY.hop_length))).astype(np.float32)
    with torch.no_grad():
        stem, codes = separator(torch.from_numpy(padded[:, None]))
    return stem[:, 0, : signal.shape[1]].numpy(), codes[:, : signal.shape[1] // TINY.hop_length].numpy()


def test_exact_separate_equals_one_whole_signal_pass(separator):
    signal = (0.1 * np.random.default_rng(0).standard_normal((2, 100_003))).astype(np.float32)
    stem, codes = exact_separate(separator, signal, chunk_seconds=0.3)  # several overlap-save windows
    expected_stem, expected_codes = whole(separator, signal)
    assert stem.shape == signal.shape and codes.shape == (2, 100_003 // TINY.hop_length)
    np.testing.assert_allclose(stem, expected_stem, atol=1e-5)
    assert (codes == expected_codes).all()


def test_paper_style_path_runs_non_overlapping_chunks(separator):
    chunk = 4096
    mono = (0.1 * np.random.default_rng(1).standard_normal(3 * chunk + 1003)).astype(np.float32)
    path = PaperStylePath(separator, chunk=chunk)
    stem = path(mono)
    assert stem.shape == mono.shape
    # each chunk is separated on its own, exactly as a pass over that chunk alone (cropped to the hop, as the
    # model's forward crops)
    starts = range(0, len(mono), chunk)
    kept = [len(mono[start : start + chunk]) // 8 * 8 for start in starts]
    for start, out in zip(starts, kept, strict=True):
        expected = whole(separator, mono[None, start : start + out])[0][0]
        np.testing.assert_allclose(stem[start : start + out], expected, atol=1e-5)
    assert (stem[len(mono) - 1003 + 1000 :] == 0).all()  # the last < hop samples are zero-padded, as the paper's code
    assert len(path.last_codes) == sum(length // 8 for length in kept)
    # non-overlapping chunks are not the whole-signal result: the chunk edges differ (the seams)
    assert not np.allclose(stem, whole(separator, mono[None])[0][0], atol=1e-4)


def test_cuda_variants_are_refused_on_the_cpu(separator):
    with pytest.raises(ValueError, match="CUDA variant"):
        PaperStylePath(separator, device="cpu", variant="compile-fp16")
    with pytest.raises(ValueError, match="unknown PyTorch variant"):
        PaperStylePath(separator, variant="eager-bf16")


def test_random_separators_are_reproducible_per_stem():
    first = random_separators(TINY, ("bass", "vocals"), seed=3)
    again = random_separators(TINY, ("vocals",), seed=3)
    other = random_separators(TINY, ("vocals",), seed=4)
    key = "mixture_encoder.level_blocks.0.model.0.0.weight"
    assert torch.equal(first["vocals"].state_dict()[key], again["vocals"].state_dict()[key])
    assert not torch.equal(first["vocals"].state_dict()[key], first["bass"].state_dict()[key])
    assert not torch.equal(first["vocals"].state_dict()[key], other["vocals"].state_dict()[key])
    assert len(first["bass"].codebook.k.unique(dim=0)) == TINY.codebook_size  # distinct codes


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU reports")
@pytest.mark.parametrize(
    ("backend", "variant", "expected"),
    [
        ("pytorch", "eager-fp32", "no CUDA device"),
        ("pytorch", "cudagraph-fp16", "no CUDA device"),
        ("ort", "fp32", "CUDAExecutionProvider"),
        ("trt", "fp16", ""),
    ],
)
def test_gpu_rows_report_unavailable_without_a_gpu(tmp_path, tmp_path_factory, capsys, backend, variant, expected):
    np.save(tmp_path / "chunk.npy", np.zeros(4096, np.float32))
    job = Job(
        backend=backend,
        variant=variant,
        device="cuda",
        scope="chunk",
        stems=["vocals"],
        threads=1,
        sample_rate=44100,
        chunk_file=str(tmp_path / "chunk.npy"),
        track_file="",
        warmup_file="",
        scratch=str(tmp_path),
        model={"config": TINY.to_dict(), "seed": 0},
        bundle=str(tiny_bundle(tmp_path_factory)),
    )
    job.save(tmp_path / "job.json")
    assert main(["worker", str(tmp_path / "job.json")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["result"]
    assert result["status"] in ("unavailable", "failed") and expected in result["message"]
    assert "\n" not in result["message"]
