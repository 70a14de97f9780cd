"""`unmix-bench sdr` end to end: a tiny bundle exported from checkpoints, a synthetic MUSDB-layout folder."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from unmix.bench.cli import app
from unmix.bench.fidelity import compare_stem
from unmix.bench.graphs import BundleGraphs
from unmix.bench.models import random_separator
from unmix.bench.musdb import read_song, write_synthetic_songs
from unmix.bench.scores import sdr
from unmix.bench.sdr import (
    IRM,
    SCALED_MIXTURE,
    ExcerptSums,
    FidelityExcerpts,
    SdrSettings,
    backend_of,
    evaluate_sdr,
    model_method,
    refined_method,
)
from unmix.export import export_bundle
from unmix.export.audio import synthetic_audio
from unmix.export.sources import separator_from_run
from unmix.runtime.manifest import STEMS
from unmix.train.checkpoint import write_checkpoint
from unmix.train.config import TINY
from unmix.train.data import CorpusError
from unmix.train.model import VQVAE

# the row name of the bundle's fp32 graphs on the backend "auto" picks here (OpenVINO where installed)
RUNTIME_FP32 = model_method("fp32", backend_of(SdrSettings(data=None), "fp32"))
RATE = 44100
MODEL_STEMS = ("bass", "vocals")  # two stems keep the export quick


def save_vqvae(folder, encoder, separator, role: str, stem: str) -> None:
    """Our checkpoint format: `encoder` as encoders.0 with the separator's codebook and decoder."""
    vqvae = VQVAE(TINY)
    vqvae.encoders[0].load_state_dict(encoder.state_dict())
    vqvae.decoders[0].load_state_dict(separator.stem_decoder.state_dict())
    vqvae.codebook.k.copy_(separator.codebook.k)
    write_checkpoint(folder / "checkpoint", vqvae.state_dict(), TINY, {"role": role, "stem": stem, "step": 1})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Phase-2 (separator) and phase-1 (vqvae) checkpoints of random tiny models, and the bundle exported from them."""
    root = tmp_path_factory.mktemp("sdr")
    separators = {stem: random_separator(TINY, index) for index, stem in enumerate(MODEL_STEMS)}
    for index, (stem, separator) in enumerate(separators.items()):
        save_vqvae(root / "phase2" / stem, separator.mixture_encoder, separator, "separator", stem)
        stem_encoder = random_separator(TINY, 100 + index).mixture_encoder  # SE: another encoder, same codebook and SD
        save_vqvae(root / "phase1" / stem, stem_encoder, separator, "vqvae", stem)
    # as unmix-export does: the separators read back from their checkpoints, which the provenance names
    sources = {stem: separator_from_run(root / "phase2" / stem, stem) for stem in MODEL_STEMS}
    provenance = {"sources": {stem: source for stem, (_, source) in sources.items()}, "note": "random weights"}
    separators = {stem: separator for stem, (separator, _) in sources.items()}
    parity = synthetic_audio(TINY.sample_rate, TINY.hop_length, segments=1, seconds=0.5)
    export_bundle(separators, root / "bundle", provenance=provenance, parity_audio=parity, ort_optimized=False)
    write_synthetic_songs(root / "data", songs=2, seconds=1.5)
    return root


def test_synthetic_songs_are_a_musdb_layout_with_an_exact_sum(trained):
    song = read_song(trained / "data" / "test" / "Synthetic 001")
    assert song.sample_rate == RATE and song.mixture.shape[1] == 2 and set(song.stems) == set(STEMS)
    np.testing.assert_allclose(song.mixture, sum(song.stems.values()), atol=1e-6)
    assert read_song(trained / "data" / "test" / "Synthetic 001", max_seconds=0.5).mixture.shape[0] == RATE // 2


def test_sdr_command_end_to_end(trained, tmp_path):
    out = tmp_path / "results" / "sdr.json"
    args = ["sdr", "--data", str(trained / "data"), "--bundle", str(trained / "bundle"), "--no-progress"]
    args += ["--checkpoint", str(trained / "phase1" / "{stem}"), "--paper-style"]  # the PyTorch model: from provenance
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["schema"], report["schema_version"]) == ("unmix-bench/sdr", 1)
    assert report["data"]["songs"] == ["Synthetic 000", "Synthetic 001"]
    assert "provenance" in report["model"]["pytorch_weights"]
    methods = {row["method"]: row for row in report["methods"]}
    assert set(methods) == {
        RUNTIME_FP32,
        "PyTorch fp32 (exact)",
        "PyTorch fp32 (paper-style chunks)",
        "VQ-VAE ceiling (SE → SD on the true stem)",
        SCALED_MIXTURE,
        IRM,
    }
    for row in methods.values():  # the baselines score the model's stems, so the totals compare
        assert set(row["mean"]) == set(MODEL_STEMS)
        assert math.isfinite(row["total"])
        assert row["total"] == pytest.approx(np.mean(list(row["mean"].values())))
    # the ScaledMixture row is the mixture/4 SDR of each song, averaged
    songs = [read_song(trained / "data" / "test" / name) for name in report["data"]["songs"]]
    expected = np.mean([sdr(song.stems["bass"], song.mixture / 4) for song in songs])
    assert methods[SCALED_MIXTURE]["mean"]["bass"] == pytest.approx(expected)
    assert methods[IRM]["total"] > methods[SCALED_MIXTURE]["total"]
    # the exported fp32 graphs compute what PyTorch computes: same codes, same SDR
    fidelity = report["fidelity"]
    assert fidelity["reference"] == "PyTorch fp32 (exact)"
    assert {row["stem"] for row in fidelity["rows"]} == set(MODEL_STEMS)
    for row in fidelity["rows"]:
        assert row["code_agreement"] >= 0.999 and abs(row["song_sdr_delta_db"]) <= 0.01
    markdown = out.with_suffix(".md").read_text()
    assert "| method | bass | vocals | total |" in markdown and SCALED_MIXTURE in markdown
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_a_four_stem_bundle_is_scored_raw_and_as_unmix_separate_refines_it(trained, tmp_path_factory, tmp_path):
    """The refined row is what `unmix separate` returns by default, with the bundle's band weights and power
    spread; the raw row is the paper's output."""
    import shutil

    from runtime_bundle import tiny_bundle

    from unmix.bench.sdr_report import sdr_markdown
    from unmix.export.refinement_fit import store_refinement
    from unmix.runtime import Separator
    from unmix.runtime.refinement import BandWeights

    bundle = shutil.copytree(tiny_bundle(tmp_path_factory, STEMS), tmp_path / "bundle")
    weights = BandWeights((0.0, 3000.0, 22050.0), {"drums": (-6.0, 6.0), "vocals": (3.0, -20.0)})
    store_refinement(
        bundle,
        {
            "band_weights": weights.to_dict(),
            "spread_bins": {"other": 5},
            "fitted": {"data": "D", "songs": "songs 1 to 2"},
        },
    )
    settings = SdrSettings(data=trained / "data", bundle=str(bundle), songs=1, precisions=("fp32",), baselines=False)
    report = evaluate_sdr(settings, progress=False)
    methods = {row["method"]: row for row in report["methods"]}
    raw = model_method("fp32", backend_of(settings, "fp32"))
    assert set(methods) == {raw, refined_method(raw), refined_method(raw, "per-channel")}
    song = read_song(trained / "data" / "test" / report["data"]["songs"][0])
    for options, method in (
        ({"refine": False}, raw),
        ({"refine": True}, refined_method(raw)),  # what unmix separate gives: the model once, on the mid channel
        ({"refine": True, "stereo": "per-channel"}, refined_method(raw, "per-channel")),
    ):
        estimates = Separator.from_bundle(bundle, precision="fp32", **options).separate(song.mixture, song.sample_rate)
        for stem in STEMS:
            expected = sdr(song.stems[stem], estimates[stem])
            assert methods[method]["songs"][song.name][stem] == pytest.approx(expected, abs=1e-4), (method, stem)
    assert "band weights, fitted on songs 1 to 2 of D, other's power spread over 5 bins" in sdr_markdown(report)
    two_stems = evaluate_sdr(replace(settings, bundle=str(trained / "bundle")), progress=False)
    assert any("refinement: not run" in line for line in two_stems["skipped"])


def write_noise_songs(root, songs: int, seconds: float) -> None:
    rng = np.random.default_rng(5)
    for index in range(songs):
        folder = root / "test" / f"noise {index}"
        folder.mkdir(parents=True)
        stems = {stem: 0.1 * rng.standard_normal((int(seconds * RATE), 2)) for stem in STEMS}
        sf.write(folder / "mixture.wav", sum(stems.values()), RATE, subtype="DOUBLE")
        for stem, audio in stems.items():
            sf.write(folder / f"{stem}.wav", audio, RATE, subtype="DOUBLE")


def test_baselines_only_on_four_equal_independent_stems(tmp_path):
    # ScaledMixture on four independent equal-power stems scores 10·log10(4/3) dB (see test_bench_scores)
    write_noise_songs(tmp_path, songs=2, seconds=2.0)
    report = evaluate_sdr(SdrSettings(data=tmp_path, bundle=None), progress=False)
    methods = {row["method"]: row for row in report["methods"]}
    assert set(methods) == {SCALED_MIXTURE, IRM}
    for stem in STEMS:
        assert methods[SCALED_MIXTURE]["mean"][stem] == pytest.approx(10 * math.log10(4 / 3), abs=0.05)
    # white noise stems overlap in every bin: the oracle mask gains only a little
    assert methods[SCALED_MIXTURE]["total"] < methods[IRM]["total"] < 6.0
    assert any("--checkpoint" in line for line in report["skipped"])
    # a subset of stems: every row scores just those, and the oracle's mask still sees all four
    subset = evaluate_sdr(SdrSettings(data=tmp_path, bundle=None, stems=("vocals", "bass")), progress=False)
    for row in subset["methods"]:
        assert list(row["mean"]) == ["bass", "vocals"]
        assert row["mean"]["bass"] == pytest.approx(methods[row["method"]]["mean"]["bass"])
    with pytest.raises(ValueError, match="--stems: piano not among"):
        evaluate_sdr(SdrSettings(data=tmp_path, bundle=None, stems=("piano",)), progress=False)


def test_bad_data_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["sdr", "--data", str(tmp_path / "missing"), "--bundle", "none"])
    assert result.exit_code == 2 and "no such folder" in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "test" / "song").mkdir(parents=True)
    sf.write(tmp_path / "test" / "song" / "mixture.wav", np.zeros((100, 2)), RATE)
    with pytest.raises(CorpusError, match="missing drums.wav"):
        evaluate_sdr(SdrSettings(data=tmp_path, bundle=None), progress=False)
    result = CliRunner().invoke(app, ["sdr", "--data", str(tmp_path), "--bundle", "none"])
    assert result.exit_code == 2 and "missing drums.wav" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU reports")
def test_unavailable_device_is_reported_not_fatal(trained, tmp_path):
    settings = SdrSettings(
        data=trained / "data", bundle=str(trained / "bundle"), device="cuda", songs=1, precisions=("fp32",)
    )
    report = evaluate_sdr(settings, progress=False)
    assert [row["method"] for row in report["methods"]] == [SCALED_MIXTURE, IRM]
    assert any("unavailable" in line and "CUDAExecutionProvider" in line for line in report["skipped"])


def museval_importable() -> bool:
    try:
        import museval  # noqa: F401  (imports musdb, which needs ffmpeg on the PATH merely to import)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not museval_importable(), reason="museval (extra 'eval') and ffmpeg are optional")
def test_bsseval_through_museval(tmp_path):
    write_noise_songs(tmp_path, songs=1, seconds=2.0)
    report = evaluate_sdr(SdrSettings(data=tmp_path, bundle=None, museval=True), progress=False)
    for row in report["methods"]:
        assert set(row["bsseval_median"]) == set(STEMS) and all(
            math.isfinite(v) for v in row["bsseval_median"].values()
        )


def test_missing_museval_is_a_note_not_a_failure(tmp_path, monkeypatch):
    def unavailable(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'museval'")

    monkeypatch.setattr("unmix.bench.sdr.bsseval_sdr", unavailable)
    write_noise_songs(tmp_path, songs=1, seconds=0.5)
    report = evaluate_sdr(SdrSettings(data=tmp_path, bundle=None, museval=True), progress=False)
    assert [row["method"] for row in report["methods"]] == [SCALED_MIXTURE, IRM]
    assert any(line.startswith("BSSEval v4 not computed") and "museval" in line for line in report["skipped"])


def test_compare_tables_several_reports_beside_one_set_of_baselines(trained, tmp_path):
    data, runs = trained / "data", trained / "phase2"
    paths = {}
    for label, stems, baselines in (("both", "bass,vocals", True), ("bass only", "bass", False)):
        paths[label] = tmp_path / f"{label}.json"
        args = ["sdr", "--data", str(data), "--bundle", "none", "--separator", str(runs / "{stem}"), "--stems", stems]
        args += [] if baselines else ["--no-baselines"]
        result = CliRunner().invoke(app, [*args, "--no-progress", "--json", str(paths[label])])
        assert result.exit_code == 0, result.output
    table = tmp_path / "table.md"
    specs = [f"{label}={path}" for label, path in paths.items()]
    result = CliRunner().invoke(app, ["compare", *specs, "--out", str(table), "--title", "two runs"])
    assert result.exit_code == 0, result.output
    lines = table.read_text().splitlines()
    assert lines[0] == "# two runs" and lines[2] == "| method | bass | vocals | total |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[4:] if line.startswith("| ")}
    assert set(rows) == {"both: PyTorch fp32 (exact)", "bass only: PyTorch fp32 (exact)", SCALED_MIXTURE, IRM}
    assert rows["bass only: PyTorch fp32 (exact)"].split(" | ")[2] == "—"  # it scored no vocals
    # the same model on the same songs scores the same bass, whichever stems were asked for
    both = json.loads(paths["both"].read_text())["methods"]
    bass_only = json.loads(paths["bass only"].read_text())["methods"]
    assert bass_only[0]["mean"]["bass"] == pytest.approx(both[0]["mean"]["bass"])
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "missing.json"), "--out", str(table)])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_provenance_pytorch_row_can_be_left_out(trained):
    settings = SdrSettings(data=trained / "data", bundle=str(trained / "bundle"), songs=1, provenance_pytorch=False)
    report = evaluate_sdr(settings, progress=False)
    assert [row["method"] for row in report["methods"]] == [RUNTIME_FP32, SCALED_MIXTURE, IRM]
    assert report["model"]["pytorch_weights"] is None


def test_fidelity_state_stays_flat_and_gives_the_joined_excerpts_figures():
    """Per-song sums, not the audio: nothing of a song is kept after it ends, and the figures are those of
    `compare_stem` on every song's excerpts joined (as they were computed when all excerpts were kept)."""
    rng = np.random.default_rng(0)
    excerpts = FidelityExcerpts("reference")
    joined: dict[str, list] = {"reference": [], "candidate": []}
    for song in range(5):
        for method, noise in (("reference", 0.0), ("candidate", 0.01)):
            base = np.random.default_rng(song).standard_normal((2, 1000)).astype(np.float32)
            audio = base + noise * rng.standard_normal(base.shape).astype(np.float32)
            codes = np.random.default_rng(song).integers(0, 8, (2, 125))
            codes = np.where(rng.random(codes.shape) < noise * 20, (codes + 1) % 8, codes)
            excerpts.add(method, "bass", audio, codes)
            joined[method].append((audio.reshape(-1), codes.reshape(-1)))
        excerpts.end_song()
        assert excerpts.song == {} and list(excerpts.sums) == ["candidate"]  # the reference is never compared
        state = vars(excerpts.sums["candidate"]["bass"])
        assert all(isinstance(value, (int, float)) for value in state.values()), state
    audio, codes = ({m: np.concatenate([pair[i] for pair in joined[m]]) for m in joined} for i in (0, 1))
    expected = compare_stem(audio["reference"], audio["candidate"], None, codes["reference"], codes["candidate"])
    figures = excerpts.compare("candidate")["bass"]
    assert figures["code_agreement"] == expected["code_agreement"] < 1.0
    assert figures["max_abs"] == expected["max_abs"] > 0.0
    assert figures["snr_db"] == pytest.approx(expected["snr_db"], rel=1e-12)
    assert excerpts.compare("missing") == {}
    assert ExcerptSums().figures() == {"max_abs": 0.0, "snr_db": float("inf"), "code_agreement": None}


def test_bundle_graphs_keep_no_memory_between_runs(trained):
    """On the CPU the sessions run without ORT's arena and memory pattern (each would keep a whole excerpt's
    working memory per stem and precision), and give what a session with ORT's defaults gives."""
    graphs = BundleGraphs(trained / "bundle", "fp32", list(MODEL_STEMS))
    batch = np.random.default_rng(1).standard_normal((2, 4099)).astype(np.float32)
    outputs = graphs(batch)
    manifest = graphs.manifest
    padded = np.pad(batch, ((0, 0), (0, -batch.shape[1] % manifest.hop_length)))[:, None, :]
    for stem, session in graphs.sessions.items():
        options = session.get_session_options()
        assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
        path = str(trained / "bundle" / manifest.models["fp32"][stem])
        default = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        audio, codes = default.run([manifest.output_name, manifest.codes_name], {manifest.input_name: padded})
        np.testing.assert_array_equal(outputs[stem][0], audio[:, 0, : batch.shape[1]])
        np.testing.assert_array_equal(outputs[stem][1], codes[:, : batch.shape[1] // manifest.hop_length])
