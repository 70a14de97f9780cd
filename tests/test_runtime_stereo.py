"""Stereo separated once, on the mid channel, with the refinement placing each stem from the mixture's image."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_bundle import tiny_bundle

from unmix.runtime import Separator
from unmix.runtime.manifest import STEMS
from unmix.runtime.refinement import refine


@pytest.fixture(scope="module")
def four_stems(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, STEMS)


def _audio(frames: int, channels: int = 2, seed: int = 5) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


class CountingEngine:
    """The separator's engine, counting the mono items it is given."""

    def __init__(self, engine):
        self.engine, self.items = engine, 0
        self.stems, self.description = engine.stems, engine.description

    def run(self, batch):
        self.items += len(batch)
        return self.engine.run(batch)

    def close(self):
        self.engine.close()


def test_a_refined_stereo_song_runs_the_model_once_on_its_mid_channel(four_stems):
    audio = _audio(30_000)
    mid = Separator.from_bundle(four_stems, backend="ort", chunk=40_000)
    assert mid.stereo == "mid" and "stereo mid" in mid.description
    mid._engine = counting = CountingEngine(mid._engine)
    stems = mid.separate(audio, 44100)
    assert counting.items == 1  # one window, one item: the mid channel
    per_channel = Separator.from_bundle(four_stems, backend="ort", chunk=40_000, stereo="per-channel")
    per_channel._engine = counting = CountingEngine(per_channel._engine)
    per_channel.separate(audio, 44100)
    assert counting.items == 2
    # the stream computes the one-shot refinement of the mid channel's raw estimates, image from the mixture
    raw = Separator.from_bundle(four_stems, backend="ort", refine=False).separate(audio.mean(axis=1), 44100)
    separator = Separator.from_bundle(four_stems, backend="ort")
    expected = refine(
        audio,
        {stem: np.repeat(raw[stem][:, None], 2, axis=1) for stem in STEMS},
        weights=separator.refinement_weights,
        spread=separator.refinement_spread,
        spatial="mixture",
    )
    for stem in STEMS:
        assert stems[stem].shape == audio.shape
        np.testing.assert_allclose(stems[stem], expected[stem], rtol=0, atol=1e-5)
    np.testing.assert_allclose(sum(stems.values()), audio, rtol=0, atol=1e-5)


def test_mid_channel_chunks_exactly_and_a_panned_source_keeps_its_side(four_stems):
    left = _audio(60_000, channels=1, seed=6)[:, 0]
    audio = np.stack([left, 0.05 * left], axis=1)  # a source panned hard left
    whole = Separator.from_bundle(four_stems, backend="ort", chunk=64_000).separate(audio, 44100)
    chunked = Separator.from_bundle(four_stems, backend="ort", chunk=1024).separate(audio, 44100)
    for stem in STEMS:
        np.testing.assert_allclose(chunked[stem], whole[stem], rtol=0, atol=1e-5)
        energy = (whole[stem] ** 2).sum(axis=0)
        assert energy[0] > 100 * energy[1]  # the image comes from the mixture, not from the mono estimate


def test_mono_and_surround_are_separated_per_channel_as_before(four_stems):
    separator = Separator.from_bundle(four_stems, backend="ort", chunk=40_000)
    separator._engine = counting = CountingEngine(separator._engine)
    separator.separate(_audio(20_000, channels=1), 44100)
    assert counting.items == 1
    separator.separate(_audio(20_000, channels=6), 44100)
    assert counting.items == 1 + 6


@pytest.mark.parametrize(
    "options,words",
    [({"stereo": "side"}, "unknown stereo mode"), ({"stereo": "mid", "refine": False}, "needs the refinement")],
)
def test_stereo_modes_are_checked(four_stems, options, words):
    with pytest.raises(ValueError, match=words):
        Separator.from_bundle(four_stems, **options)
    assert Separator.from_bundle(four_stems, refine=False).stereo == "per-channel"
