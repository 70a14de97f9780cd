"""export_bundle on tiny random separators: the bundle's files, graphs, manifest and the tie rule."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_models import tiny_separator

from unmix.export import ExportError, export_bundle, parity
from unmix.export.audio import ParityAudio, synthetic_audio
from unmix.runtime.manifest import read_manifest
from unmix.train import metrics
from unmix.train.config import TINY

QUICK_AUDIO = synthetic_audio(TINY.sample_rate, TINY.hop_length, segments=1, seconds=0.25)


@pytest.fixture(scope="module")
def two_stem_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    separators = {"bass": tiny_separator(1), "other": tiny_separator(2)}
    export_bundle(separators, out, provenance={"source": "test"}, parity_audio=QUICK_AUDIO)
    return out, separators


def test_bundle_files_and_manifest(two_stem_bundle):
    out, _ = two_stem_bundle
    manifest = read_manifest(out, verify=True)
    assert manifest.stems == ["bass", "other"]
    assert manifest.models == {"fp32": {"bass": "bass.onnx", "other": "other.onnx"}}
    assert (manifest.sample_rate, manifest.hop_length) == (TINY.sample_rate, TINY.hop_length)
    assert manifest.context_samples == TINY.context_samples()
    assert manifest.encoder_receptive_field == TINY.encoder_receptive_field()
    assert manifest.decoder_receptive_field == TINY.decoder_receptive_field()
    assert manifest.provenance["source"] == "test" and "onnxruntime" in manifest.provenance["tools"]
    assert set(manifest.files) == {
        "bass.onnx",
        "other.onnx",
        "bass.ort-extended.onnx",
        "other.ort-extended.onnx",
        "parity.json",
        "parity.md",
    }
    assert manifest.ort_optimized == {"fp32": {"bass": "bass.ort-extended.onnx", "other": "other.ort-extended.onnx"}}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_graph_interface_and_metadata(two_stem_bundle):
    out, _ = two_stem_bundle
    model = onnx.load(str(out / "other.onnx"))
    assert model.opset_import[0].version == 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["unmix.stem"] == "other" and json.loads(meta["unmix.hop_length"]) == TINY.hop_length
    assert json.loads(meta["unmix.context_samples"]) == TINY.context_samples()
    ops = {node.op_type for node in model.graph.node}
    assert {"ArgMin", "Gather", "MatMul"} <= ops and not ops & {"ReduceMin", "Cast", "Reshape"}
    session = ort.InferenceSession(str(out / "other.onnx"), providers=["CPUExecutionProvider"])
    (mixture,) = session.get_inputs()
    assert mixture.name == "mixture" and mixture.type == "tensor(float)"
    assert mixture.shape[1] == 1 and isinstance(mixture.shape[0], str) and isinstance(mixture.shape[2], str)
    assert [(o.name, o.type) for o in session.get_outputs()] == [("stem", "tensor(float)"), ("codes", "tensor(int64)")]


@pytest.mark.parametrize("batch,length", [(1, 8 * 40), (2, 8 * 333)])
def test_outputs_equal_pytorch(two_stem_bundle, batch, length):
    out, separators = two_stem_bundle
    mixture = torch.randn(batch, 1, length, generator=torch.Generator().manual_seed(length)) * 0.3
    session = ort.InferenceSession(str(out / "bass.onnx"), providers=["CPUExecutionProvider"])
    stem, codes = session.run(None, {"mixture": mixture.numpy()})
    with torch.no_grad():
        expected_stem, expected_codes = separators["bass"](mixture)
    np.testing.assert_array_equal(codes, expected_codes.numpy())
    assert np.abs(stem - expected_stem.numpy()).max() < 1e-4


def test_exact_ties_pick_the_first_code(tmp_path):
    """Duplicate codebook rows give exactly equal distances: ONNX must pick the first, as torch.min."""
    separator = tiny_separator(3)
    k = separator.codebook.k
    with torch.no_grad():
        k[1::2] = k[0::2]  # every odd code duplicates the even code before it
        # a distinct second half for the decoder would hide nothing: the Gathered vectors are equal anyway,
        # so the codes output is what pins the rule
    export_bundle({"other": separator}, tmp_path / "ties", parity_audio=QUICK_AUDIO, ort_optimized=False)
    session = ort.InferenceSession(str(tmp_path / "ties" / "other.onnx"), providers=["CPUExecutionProvider"])
    mixture = torch.randn(2, 1, 8 * 200, generator=torch.Generator().manual_seed(0))
    _, codes = session.run(None, {"mixture": mixture.numpy()})
    with torch.no_grad():
        _, expected = separator(mixture)
    assert (codes % 2 == 0).all(), "a tie went to the later duplicate"
    np.testing.assert_array_equal(codes, expected.numpy())


def test_existing_folder_is_refused_and_failures_leave_nothing(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    with pytest.raises(ExportError, match="exists"):
        export_bundle({"other": tiny_separator(4)}, out, parity_audio=QUICK_AUDIO)
    with pytest.raises(ExportError, match="stem name"):
        export_bundle({"Other Stem": tiny_separator(4)}, tmp_path / "bad")
    broken = tiny_separator(5)
    with torch.no_grad():
        broken.codebook.k.fill_(float("nan"))
    with pytest.raises(ExportError):
        export_bundle({"other": broken}, tmp_path / "nan", parity_audio=QUICK_AUDIO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_ort_optimized_copy_is_portable_and_equal(two_stem_bundle):
    """The EXTENDED-level copy fuses nodes but holds no layout-specific (NCHWc) ops, and computes the same."""
    out, _ = two_stem_bundle
    optimized = onnx.load(str(out / "bass.ort-extended.onnx"))
    domains = {node.domain for node in optimized.graph.node}
    assert "com.microsoft.nchwc" not in domains
    assert len(optimized.graph.node) < len(onnx.load(str(out / "bass.onnx")).graph.node), "nothing was optimised"
    mixture = np.random.default_rng(0).standard_normal((2, 1, 8 * 300)).astype(np.float32)
    runs = [
        ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"]).run(None, {"mixture": mixture})
        for name in ("bass.onnx", "bass.ort-extended.onnx")
    ]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.abs(runs[0][0] - runs[1][0]).max() < 1e-5


def test_parity_report(two_stem_bundle):
    out, _ = two_stem_bundle
    report = json.loads((out / "parity.json").read_text())
    assert report["audio"]["synthetic"] and report["audio"]["stems_known"] == ["bass", "drums", "other", "vocals"]
    for stem in ("bass", "other"):
        row = report["results"]["fp32"][stem]
        assert row["real_disagreements"] == 0 and row["code_agreement"] >= 1 - row["tie_frames"] / row["frames"]
        assert row["max_abs_error_ties_resolved"] < 1e-4
        assert abs(row["sdr_delta_db"]) < 0.01 and row["polygraphy_simple_compare"] == "pass"
    assert report["gates"]["failures"] == {"fp32": []}
    graphs = {run["graph"] for run in report["ort_runs"]}
    assert graphs == {"bass.onnx", "other.onnx", "bass.ort-extended.onnx", "other.ort-extended.onnx"}
    assert {(run["batch"], run["samples"]) for run in report["ort_runs"]} == {
        (b, n) for b in (1, 3) for n in (128, 1000, 4096)
    }
    assert "synthetic signal, not real music" in (out / "parity.md").read_text()


def test_parity_scores_with_the_shape_checked_sdr(two_stem_bundle):
    """The paper's SDR is train's, one function: a true stem shaped unlike the graph's output is an error, not a
    number computed by broadcasting (a mono truth against stereo outputs used to score silently)."""
    out, separators = two_stem_bundle
    assert parity.sdr is metrics.sdr
    mono_truth = ParityAudio(
        "mono truth", QUICK_AUDIO.mixtures, {"bass": [m.mean(axis=0) for m in QUICK_AUDIO.mixtures]}
    )
    assert QUICK_AUDIO.mixtures[0].ndim == 2 and QUICK_AUDIO.mixtures[0].shape[0] == 2
    with pytest.raises(ValueError, match="differ in shape"):
        parity.measure_parity({"bass": separators["bass"]}, {"fp32": {"bass": out / "bass.onnx"}}, mono_truth)
