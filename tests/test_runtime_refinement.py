"""Refinement: exact in a stream, consistent with the mixture, spatial where it can be, wired into the Separator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_bundle import tiny_bundle

from unmix.runtime import Separator
from unmix.runtime.manifest import STEMS, BundleError
from unmix.runtime.refinement import BLOCK_FRAMES, WINDOW, BandWeights, Refiner, check_spread, refine, spread_power
from unmix.train.metrics import sdr


def _signals(length: int, channels: int = 2, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    stems = {stem: (0.2 * rng.standard_normal((length, channels))).astype(np.float32) for stem in STEMS}
    return sum(stems.values()), stems


def _refine(
    mixture: np.ndarray, estimates: dict[str, np.ndarray], cuts: list[int] = (), **grid
) -> dict[str, np.ndarray]:
    """Refine with the estimates fed in pieces ending at `cuts`, the mixture always a piece ahead."""
    refiner = Refiner(tuple(estimates), mixture.shape[1], **grid)
    bounds = [0, *cuts, len(mixture)]
    parts = {stem: [] for stem in estimates}
    refiner.add_mixture(mixture[: bounds[1]])
    for index, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
        refiner.add_mixture(mixture[stop : bounds[min(index + 2, len(bounds) - 1)]])
        last = stop == len(mixture)
        for stem, audio in refiner.refine({s: e[start:stop] for s, e in estimates.items()}, final=last).items():
            parts[stem].append(audio)
    return {stem: np.concatenate(audio) for stem, audio in parts.items()}


@pytest.mark.parametrize("length", [1, 1000, WINDOW - 1, WINDOW, WINDOW + 1, 3 * WINDOW + 17])
def test_refinement_keeps_the_length_and_splits_the_mixture_exactly(length):
    """Every input sample comes out once, and the refined stems add up to the mixture (the masks sum to one)."""
    mixture, stems = _signals(length)
    noisy = {stem: audio + np.float32(0.1) for stem, audio in stems.items()}
    refined = _refine(mixture, noisy)
    for audio in refined.values():
        assert audio.shape == mixture.shape and audio.dtype == np.float32
    np.testing.assert_allclose(sum(refined.values()), mixture, rtol=0, atol=1e-5)


@pytest.mark.parametrize("window, block_frames", [(WINDOW, BLOCK_FRAMES), (512, 3)])
def test_refining_in_pieces_equals_one_pass(window, block_frames):
    """Frames and covariance blocks sit on grids fixed to the signal: any split gives bit-identical output."""
    block = window // 4 * block_frames  # samples per covariance block
    mixture, stems = _signals(2 * block + 5 * window + 123, seed=1)
    noisy = {stem: audio + 0.3 * np.roll(audio, 500, axis=0) for stem, audio in stems.items()}
    whole = _refine(mixture, noisy, window=window, block_frames=block_frames)
    around_blocks = sorted([window - 1, block, block + 1, 2 * block + 5])
    splits = ([1, 2, 3], around_blocks, list(range(97, len(mixture), len(mixture) // 23)))
    for cuts in splits:
        pieces = _refine(mixture, noisy, cuts, window=window, block_frames=block_frames)
        for stem in STEMS:
            np.testing.assert_array_equal(pieces[stem], whole[stem])


def test_the_stereo_image_separates_what_the_power_spectra_cannot():
    """Other in phase, vocals out of phase, estimates of equal power whose waveforms are unrelated noise: the
    power masks could only split each bin in half (3 dB); the spatial covariances separate them cleanly."""
    rng = np.random.default_rng(4)
    length = 6 * WINDOW

    def image(pan: list[float]) -> np.ndarray:
        return (0.2 * rng.standard_normal((length, 1)) * pan).astype(np.float32)

    stems = {"drums": image([0, 0]), "bass": image([0, 0]), "other": image([1, 1]), "vocals": image([1, -1])}
    mixture = sum(stems.values())
    guesses = {"drums": stems["drums"], "bass": stems["bass"], "other": image([1, 1]), "vocals": image([1, -1])}
    refined = _refine(mixture, guesses)
    for stem in ("other", "vocals"):
        assert sdr(stems[stem], guesses[stem]) < 0
        assert sdr(stems[stem], refined[stem]) > 20, f"{stem}: {sdr(stems[stem], refined[stem]):.1f} dB"


def test_a_mono_recording_stored_as_stereo_refines_as_mono():
    """Identical channels make every spatial covariance singular: the filter stays finite and gives the mono result."""
    mixture, stems = _signals(3 * WINDOW, channels=1, seed=5)
    noisy = {stem: audio + np.float32(0.05) * np.roll(audio, 300, axis=0) for stem, audio in stems.items()}
    mono = refine(mixture, noisy)
    stereo = refine(np.repeat(mixture, 2, axis=1), {stem: np.repeat(audio, 2, axis=1) for stem, audio in noisy.items()})
    for stem in STEMS:
        assert np.isfinite(stereo[stem]).all()
        np.testing.assert_allclose(stereo[stem], np.repeat(mono[stem], 2, axis=1), rtol=0, atol=1e-5)


def test_more_than_two_channels_are_refined_one_by_one():
    """Surround: a covariance over many channels would cost their square; each channel is refined as mono."""
    mixture, stems = _signals(2 * WINDOW, channels=3, seed=6)
    noisy = {stem: audio + np.float32(0.05) * np.roll(audio, 300, axis=0) for stem, audio in stems.items()}
    together = refine(mixture, noisy)
    for channel in range(3):
        alone = refine(mixture[:, [channel]], {stem: audio[:, [channel]] for stem, audio in noisy.items()})
        for stem in STEMS:
            np.testing.assert_array_equal(together[stem][:, [channel]], alone[stem])


def test_a_stem_that_owns_every_bin_gets_the_whole_mixture_and_silence_splits_equally():
    """Perfect reconstruction to the signal's edges; a bin no estimate claims goes to every stem equally."""
    mixture, stems = _signals(3 * WINDOW + 5)
    silent = {stem: np.zeros_like(mixture) for stem in STEMS}
    owner = _refine(mixture, silent | {"bass": stems["bass"]})
    np.testing.assert_allclose(owner["bass"], mixture, rtol=0, atol=1e-5)
    np.testing.assert_allclose(owner["vocals"], 0, atol=1e-5)
    for audio in _refine(mixture, silent).values():
        np.testing.assert_allclose(audio, mixture / 4, rtol=0, atol=1e-5)


def test_refinement_removes_noise_the_mixture_does_not_hold():
    """Estimates with added noise, as a decoder's wrong codes make: the masks take most of it out."""
    rng = np.random.default_rng(2)
    time = np.arange(4 * 44100) / 44100
    tones = {"drums": 60.0, "bass": 110.0, "other": 660.0, "vocals": 2500.0}
    stems = {s: (0.2 * np.sin(2 * np.pi * f * time))[:, None].astype(np.float32) for s, f in tones.items()}
    mixture = sum(stems.values())
    noisy = {s: a + (0.1 * rng.standard_normal(a.shape)).astype(np.float32) for s, a in stems.items()}
    refined = _refine(mixture, noisy)
    for stem in STEMS:
        before, after = sdr(stems[stem], noisy[stem]), sdr(stems[stem], refined[stem])
        assert after > before + 10, f"{stem}: {before:.1f} dB → {after:.1f} dB"


def test_band_weights_hand_a_band_to_the_stem_whose_noise_they_discount():
    """Vocals' estimate carries a noise floor over the whole spectrum, as a decoder's wrong codes leave; a gain
    of −30 dB above 4 kHz takes the high band (where only drums and other sound) from vocals, and nothing else."""
    rng = np.random.default_rng(4)
    time = np.arange(3 * 44100) / 44100
    tones = {"drums": 6000.0, "bass": 80.0, "other": 9000.0, "vocals": 500.0}
    stems = {s: (0.2 * np.sin(2 * np.pi * f * time))[:, None].astype(np.float32) for s, f in tones.items()}
    mixture = sum(stems.values())
    noisy = dict(stems, vocals=stems["vocals"] + (0.05 * rng.standard_normal(stems["vocals"].shape)).astype(np.float32))
    weights = BandWeights((0.0, 4000.0, 22050.0), {"vocals": (0.0, -30.0)})
    plain, weighted = refine(mixture, noisy), refine(mixture, noisy, weights=weights.per_bin(WINDOW, 44100))
    for stem in ("drums", "other", "vocals"):
        assert sdr(stems[stem], weighted[stem]) > sdr(stems[stem], plain[stem]) + 3, stem
    np.testing.assert_allclose(sum(weighted.values()), mixture, rtol=0, atol=1e-5)
    unit = BandWeights((0.0, 22050.0), {stem: (0.0,) for stem in STEMS}).per_bin(WINDOW, 44100)
    for stem, audio in refine(mixture, noisy, weights=unit).items():
        np.testing.assert_array_equal(audio, plain[stem])  # 0 dB everywhere is the plain refinement, bit for bit


def test_a_spread_power_gives_a_stem_the_partial_its_estimate_places_two_bins_off():
    """Other's estimate is its tone two bins sharp, so its power is nil at the true bin (the Hann window's first
    zero) and vocals' faint noise floor takes the partial; spread over 3 bins, other's power reaches it."""
    rng = np.random.default_rng(5)
    time = np.arange(3 * 44100) / 44100
    bin_hz = 44100 / WINDOW
    tones = {"drums": 6000.0, "bass": 80.0, "other": 245 * bin_hz, "vocals": 1500.0}
    stems = {s: (0.2 * np.sin(2 * np.pi * f * time))[:, None].astype(np.float32) for s, f in tones.items()}
    mixture = sum(stems.values())
    sharp = (0.2 * np.sin(2 * np.pi * 247 * bin_hz * time))[:, None].astype(np.float32)
    noise = (0.01 * rng.standard_normal(mixture.shape)).astype(np.float32)
    estimates = dict(stems, other=sharp, vocals=stems["vocals"] + noise)
    plain, spread = refine(mixture, estimates), refine(mixture, estimates, spread={"other": 3})
    for stem in ("other", "vocals"):
        assert sdr(stems[stem], spread[stem]) > sdr(stems[stem], plain[stem]) + 10, stem
    for stem in ("drums", "bass"):
        assert abs(sdr(stems[stem], spread[stem]) - sdr(stems[stem], plain[stem])) < 0.1, stem
    np.testing.assert_allclose(sum(spread.values()), mixture, rtol=0, atol=1e-5)
    for stem, audio in refine(mixture, estimates, spread={"other": 1}).items():
        np.testing.assert_array_equal(audio, plain[stem])  # a spread of one bin is none, bit for bit


def test_spread_power_averages_each_bin_with_its_neighbours_and_refuses_even_widths():
    power = np.array([1.0, 0.0, 0.0, 4.0, 2.0])[None, :, None]
    np.testing.assert_allclose(spread_power(power, 3)[0, :, 0], [2 / 3, 1 / 3, 4 / 3, 2.0, 8 / 3])  # edges repeated
    np.testing.assert_allclose(spread_power(power, 5)[0, :, 0], [3 / 5, 6 / 5, 7 / 5, 8 / 5, 10 / 5])
    assert spread_power(power, 1) is power
    for stem, bins, match in [
        ("other", 2, "odd number"),
        ("other", 0, "odd number"),
        ("other", True, "odd number"),
        ("other", "3", "odd number"),
        ("piano", 3, "unknown stem"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_spread(stem, bins)


def test_band_weights_map_bands_to_bins_and_refuse_what_does_not_fit():
    weights = BandWeights((0.0, 100.0, 1000.0), {"drums": (-10.0, 10.0)})
    gains = weights.per_bin(16, 1600)["drums"]  # bins every 100 Hz: 0 in the first band, 100..800 in the second
    np.testing.assert_allclose(gains, [0.1] + [10.0] * 8)
    assert BandWeights.from_dict(weights.to_dict()) == weights
    for edges, gains, match in [
        ((0.0,), {}, "two or more"),
        ((0.0, 10.0, 5.0), {}, "increasing"),
        ((0.0, 10.0), {"drums": (1.0, 2.0)}, "2 gains for 1 bands"),
        ((0.0, 10.0), {"piano": (1.0,)}, "unknown stem"),
    ]:
        with pytest.raises(ValueError, match=match):
            BandWeights(edges, gains)
    with pytest.raises(ValueError, match="need edges_hz"):
        BandWeights.from_dict({"edges_hz": [0, 1]})


def test_estimates_cannot_run_ahead_of_the_mixture_and_every_stem_is_needed():
    with pytest.raises(ValueError, match="between all of"):
        Refiner(("vocals", "bass"), 1)
    with pytest.raises(ValueError, match="multiple of 4"):
        Refiner(STEMS, 1, window=1001)
    refiner = Refiner(STEMS, 1)
    refiner.add_mixture(np.zeros((10, 1), np.float32))
    with pytest.raises(ValueError, match="ahead of the mixture"):
        refiner.refine({stem: np.zeros((11, 1), np.float32) for stem in STEMS})
    with pytest.raises(ValueError, match="differ in length"):
        refiner.refine({stem: np.zeros((len(stem), 1), np.float32) for stem in STEMS})


def _mono(estimates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each estimate's mid channel on both channels: what a model run once on (L + R) / 2 hands the refinement."""
    return {
        stem: np.repeat(audio.mean(axis=1, keepdims=True), audio.shape[1], axis=1) for stem, audio in estimates.items()
    }


def test_the_spatial_covariances_come_from_the_estimates_or_the_mixture_and_nothing_else():
    mixture, stems = _signals(1000)
    for spatial in ("both", "", None, "Mixture"):
        with pytest.raises(ValueError, match="spatial covariances are measured on 'estimates' or 'mixture'") as error:
            Refiner(STEMS, 2, spatial=spatial)
        assert "\n" not in str(error.value)
        with pytest.raises(ValueError, match="spatial covariances"):
            refine(mixture, stems, spatial=spatial)
    assert Refiner(STEMS, 2).spatial == "estimates"


def test_covariances_from_the_mixture_put_mono_estimates_back_in_their_channels():
    """Other hard left, vocals hard right, each alone for two covariance blocks and then together, estimated by
    their mid channel on both channels. Covariances of such estimates hold no stereo image, and the filter can only
    split each bin by the powers; measured on the mixture masked by the stems' shares, they learn where each stem
    sits (from the stretches where it sounds alone) and put it back in its own channel where both sound."""
    rng = np.random.default_rng(8)
    block = WINDOW // 4 * BLOCK_FRAMES

    def source(*blocks: tuple[int, int]) -> np.ndarray:
        audio = np.zeros(6 * block, np.float32)
        for start, stop in blocks:
            audio[start * block : stop * block] = 0.2 * rng.standard_normal((stop - start) * block)
        return audio

    left, right, silent = source((0, 2), (4, 6)), source((2, 6)), np.zeros(6 * block, np.float32)
    stems = {
        "drums": np.stack([silent] * 2, 1),
        "bass": np.stack([silent] * 2, 1),
        "other": np.stack([left, silent], 1),
        "vocals": np.stack([silent, right], 1),
    }
    mixture = sum(stems.values())
    both = slice(4 * block, 6 * block)
    for spatial, least_sdr, most_elsewhere in [("mixture", 12, 0.03), ("estimates", None, None)]:
        refined = refine(mixture, _mono(stems), spatial=spatial)
        np.testing.assert_allclose(sum(refined.values()), mixture, rtol=0, atol=1e-5)
        for stem, channel in (("other", 0), ("vocals", 1)):
            energy = np.sum(refined[stem][both] ** 2, axis=0)
            elsewhere = energy[1 - channel] / energy.sum()  # the share of the stem's output in the wrong channel
            score = sdr(stems[stem][both], refined[stem][both])
            if spatial == "mixture":
                assert score > least_sdr and elsewhere < most_elsewhere, f"{stem}: {score:.1f} dB, {elsewhere:.3f}"
            else:  # the power masks alone: each bin split between both stems in both channels
                assert score < 8 and elsewhere > 0.1, f"{stem}: {score:.1f} dB, {elsewhere:.3f}"


@pytest.mark.parametrize("window, block_frames", [(WINDOW, BLOCK_FRAMES), (512, 3)])
def test_covariances_from_the_mixture_refine_in_pieces_as_in_one_pass(window, block_frames):
    block = window // 4 * block_frames
    mixture, stems = _signals(2 * block + 5 * window + 123, seed=9)
    noisy = _mono({stem: audio + 0.3 * np.roll(audio, 500, axis=0) for stem, audio in stems.items()})
    whole = _refine(mixture, noisy, window=window, block_frames=block_frames, spatial="mixture")
    assert not np.allclose(
        whole["vocals"], _refine(mixture, noisy, window=window, block_frames=block_frames)["vocals"], atol=1e-3
    )  # the covariances did change
    for cuts in (
        [1, 2, 3],
        sorted([window - 1, block, block + 1, 2 * block + 5]),
        list(range(97, len(mixture), len(mixture) // 23)),
    ):
        pieces = _refine(mixture, noisy, cuts, window=window, block_frames=block_frames, spatial="mixture")
        for stem in STEMS:
            np.testing.assert_array_equal(pieces[stem], whole[stem])


@pytest.mark.parametrize(
    "length, channels", [(1, 2), (WINDOW + 1, 2), (3 * WINDOW + 17, 2), (2 * WINDOW, 1), (2 * WINDOW, 3)]
)
def test_covariances_from_the_mixture_still_split_it_exactly(length, channels):
    mixture, stems = _signals(length, channels, seed=10)
    refined = _refine(
        mixture, _mono({stem: audio + np.float32(0.1) for stem, audio in stems.items()}), spatial="mixture"
    )
    for audio in refined.values():
        assert audio.shape == mixture.shape and audio.dtype == np.float32 and np.isfinite(audio).all()
    np.testing.assert_allclose(sum(refined.values()), mixture, rtol=0, atol=1e-5)


PER_CHANNEL = {"stereo": "per-channel", "backend": "ort"}


@pytest.fixture(scope="module")
def four_stems(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, STEMS)


def _audio(frames: int, channels: int = 2, seed: int = 3) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def test_a_four_stem_bundle_refines_by_default_and_chunks_exactly(four_stems):
    """Refinement is on for a four-stem bundle; small chunks give the whole-signal result; stems sum to the input."""
    audio = _audio(150_000)  # past two covariance blocks
    # bit-exact chunking is ONNX Runtime's (OpenVINO's kernels may round a window's edges differently)
    whole = Separator.from_bundle(four_stems, chunk=160_000, backend="ort").separate(audio, 44100)
    chunked = Separator.from_bundle(four_stems, chunk=1024, backend="ort")
    assert chunked.refine and "refinement" in chunked.description
    pieces = chunked.separate(audio, 44100)
    for stem in STEMS:
        np.testing.assert_allclose(pieces[stem], whole[stem], rtol=0, atol=1e-5)
    np.testing.assert_allclose(sum(whole.values()), audio, rtol=0, atol=1e-5)
    raw = Separator.from_bundle(four_stems, chunk=40_000, refine=False).separate(audio, 44100)
    assert not np.allclose(raw["vocals"], whole["vocals"], atol=1e-3)  # refinement changed the output


def test_refinement_runs_every_stem_but_returns_those_asked_for(four_stems):
    audio = _audio(9_000, channels=1)
    every = Separator.from_bundle(four_stems).separate(audio, 44100)
    separator = Separator.from_bundle(four_stems, stems=["vocals"])
    assert separator.stems == ("vocals",) and set(separator._engine.stems) == set(STEMS)
    np.testing.assert_array_equal(separator.separate(audio, 44100)["vocals"], every["vocals"])
    unrefined = Separator.from_bundle(four_stems, stems=["vocals"], refine=False)
    assert unrefined._engine.stems == ("vocals",)


def test_refinement_at_another_sample_rate_still_splits_the_mixture(four_stems):
    time = np.arange(12_000) / 22050
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * time), 0.2 * np.sin(2 * np.pi * 3000 * time)], 1)
    stems = Separator.from_bundle(four_stems).separate(audio.astype(np.float32), 22050)
    assert all(stem.shape == audio.shape for stem in stems.values())
    # the split is exact at the model's rate; the round trip through soxr leaves band-limited audio intact
    assert sdr(audio, sum(stems.values())) > 40


def test_a_bundle_s_band_weights_and_spread_reach_the_stream_and_malformed_ones_are_refused(tmp_path_factory, tmp_path):
    """(Per channel, so the stream's output is the one-shot refinement of the raw per-channel estimates.)"""
    bundle = Path(shutil.copytree(tiny_bundle(tmp_path_factory, STEMS), tmp_path / "bundle"))  # the shared one stays
    audio = _audio(60_000)
    plain = Separator.from_bundle(bundle, **PER_CHANNEL).separate(audio, 44100)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    weights = BandWeights((0.0, 2000.0, 22050.0), {"vocals": (0.0, -20.0), "drums": (6.0, 0.0)})
    path.write_text(json.dumps(manifest | {"refinement": {"band_weights": weights.to_dict()}}))
    separator = Separator.from_bundle(bundle, chunk=8192, **PER_CHANNEL)
    weighted = separator.separate(audio, 44100)
    expected = refine(
        audio,
        Separator.from_bundle(bundle, refine=False, backend="ort").separate(audio, 44100),
        weights=weights.per_bin(WINDOW, 44100),
    )
    for stem in STEMS:
        np.testing.assert_allclose(weighted[stem], expected[stem], rtol=0, atol=1e-5)
    assert not np.allclose(weighted["vocals"], plain["vocals"], atol=1e-4)
    path.write_text(json.dumps(manifest | {"refinement": {"band_weights": {"edges_hz": [0.0]}}}))
    with pytest.raises(BundleError, match="band weights are malformed"):
        Separator.from_bundle(bundle)
    path.write_text(json.dumps(manifest | {"refinement": {"spread_bins": {"other": 5, "vocals": 3}}}))
    spread = Separator.from_bundle(bundle, chunk=8192, **PER_CHANNEL).separate(audio, 44100)
    expected = refine(
        audio,
        Separator.from_bundle(bundle, refine=False, backend="ort").separate(audio, 44100),
        spread={"other": 5, "vocals": 3},
    )
    for stem in STEMS:
        np.testing.assert_allclose(spread[stem], expected[stem], rtol=0, atol=1e-5)
    assert not np.allclose(spread["other"], plain["other"], atol=1e-4)
    for entry in ({"other": 4}, [3]):
        path.write_text(json.dumps(manifest | {"refinement": {"spread_bins": entry}}))
        with pytest.raises(BundleError, match="spread is malformed"):
            Separator.from_bundle(bundle)


def test_refinement_needs_all_four_stems(tmp_path_factory):
    with pytest.raises(BundleError, match="refinement splits the mixture"):
        Separator.from_bundle(tiny_bundle(tmp_path_factory), refine=True)
    assert not Separator.from_bundle(tiny_bundle(tmp_path_factory)).refine
