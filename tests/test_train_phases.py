"""Both phases on a synthetic corpus: phase 1 learns to reconstruct the stem, phase 2 to separate it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import soundfile as sf
import torch
from synth_corpus import make_corpus, make_song, write_song
from train_helpers import phase1_options, phase2_options

from unmix.train import StemSeparator, build_vqvae, read_checkpoint, scaled_mixture, sdr, train_phase1, train_phase2
from unmix.train.data import SOURCES, default_validation_count, find_songs, split_songs
from unmix.train.runs import read_metrics

STEM = "other"


def _validation(run) -> list[dict]:
    return [record for record in read_metrics(run) if record["kind"] == "val"]


def _mono(path) -> np.ndarray:
    audio, _ = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1)  # as the paper scores: L/R mean


def test_two_phases_learn_to_separate_a_stem(tmp_path):
    data = make_corpus(tmp_path / "data", songs=5, seconds=3.0)
    unseen = tmp_path / "unseen"  # --val-data: a second validation set, the test split of another corpus
    for index in range(2):
        write_song(unseen, f"Unseen{index}", make_song(np.random.default_rng(100 + index), 3.0), 44100, "musdb", "test")

    vqvae = train_phase1(phase1_options(data, tmp_path / "phase1", stem=STEM, steps=60, val_every=30, val_data=unseen))
    scores = [record["val_sdr"] for record in _validation(tmp_path / "phase1")]
    assert len(scores) == 3 and scores[-1] > scores[0] + 5, scores  # reconstruction SDR rises
    unseen_scores = [record["val_unseen_sdr"] for record in _validation(tmp_path / "phase1")]
    assert unseen_scores[-1] > unseen_scores[0] + 5 and unseen_scores != scores, unseen_scores
    info = json.loads((vqvae / "config.json").read_text())
    assert (info["role"], info["stem"], info["step"]) == ("vqvae", STEM, 60)
    assert info["provenance"] == {"init": "scratch"} and set(info["data_stats"]) == {"l2", "l1", "spec"}

    separator_dir = train_phase2(
        phase2_options(
            data, tmp_path / "phase2", tmp_path / "phase1", stem=STEM, steps=120, val_every=60, val_data=unseen
        )
    )
    # ME starts as a copy of SE, which on mixtures does worse than mixture/4; phase 2 is what fixes that.
    first, *_, last = _validation(tmp_path / "phase2")
    assert first["val_sdr"] < first["val_sdr_scaled_mixture"] < last["val_sdr"] - 1.0, (first, last)
    assert last["val_unseen_sdr"] > first["val_unseen_sdr"] and last["val_unseen_sdr_scaled_mixture"] is not None
    info = json.loads((separator_dir / "config.json").read_text())
    assert (info["role"], info["stem"], info["step"]) == ("separator", STEM, 120)
    weights = (vqvae / "model.safetensors").read_bytes()
    assert info["provenance"]["vqvae_sha256"] == hashlib.sha256(weights).hexdigest()

    # The saved separator is the deployable model: ME with phase 1's codebook and decoder.
    phase1, phase2 = read_checkpoint(vqvae), read_checkpoint(separator_dir)
    for key, value in phase1.state.items():
        assert torch.equal(phase2.state[key], value) == (not key.startswith("encoders.0.")), key
    separator = StemSeparator.from_vqvae(build_vqvae(phase2).eval())

    # On the held-out song, whole, it beats the mixture/4 baseline.
    songs = find_songs(data, SOURCES, 44100)
    (held_out,) = split_songs(songs, default_validation_count(len(songs)))[1]
    mixture, stem = _mono(held_out.files["mixture"].path), _mono(held_out.files[STEM].path)
    with torch.no_grad():
        estimate = separator(torch.from_numpy(mixture).view(1, 1, -1))[0].view(-1).numpy()
    stem = stem[: len(estimate)]
    separated, baseline = sdr(stem, estimate), sdr(stem, scaled_mixture(mixture[: len(estimate)]))
    assert separated > baseline + 1.0, (separated, baseline)
