"""unmix-export from our own training runs: a 4-stem bundle with int8, fp16 and a fused graph; loud failures."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from synth_corpus import make_corpus
from test_export_bundle import tiny_separator
from typer.testing import CliRunner

from unmix.export.cli import ExportOptions, app
from unmix.export.sources import find_checkpoint
from unmix.runtime.manifest import STEMS, read_manifest
from unmix.train.checkpoint import write_checkpoint
from unmix.train.config import TINY
from unmix.train.model import VQVAE

QUICK = [
    "--parity-segments",
    "1",
    "--parity-seconds",
    "0.5",
    "--calibration-chunks",
    "4",
    "--calibration-seconds",
    "0.25",
]


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def write_run(folder, stem: str, seed: int, role: str = "separator", step: int = 7):
    """A training run folder as unmix-train writes it: RUN/checkpoint/{model.safetensors,config.json}."""
    separator = tiny_separator(seed)
    vqvae = VQVAE(TINY)
    vqvae.encoders[0], vqvae.decoders[0] = separator.mixture_encoder, separator.stem_decoder
    vqvae.bottleneck.level_blocks[0] = separator.codebook
    write_checkpoint(folder / "checkpoint", vqvae.state_dict(), TINY, {"role": role, "stem": stem, "step": step})
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), songs=2, seconds=1.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed, stem in enumerate(STEMS, start=50):
        write_run(root / f"phase2-{stem}", stem, seed)
    return root


@pytest.fixture(scope="module")
def four_stem_bundle(runs, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "bundle"
    stages = out.parent / "stages.jsonl"  # as train/recipes/default_model.sh logs its stages
    stages.write_text('{"stage": "generic", "seconds": 12}\n{"stage": "phase2-bass", "seconds": 3}\n')
    result = run(
        "--stems",
        "all",
        "--checkpoint",
        runs / "phase2-{stem}",
        "-o",
        out,
        "--audio",
        corpus,
        "--int8",
        "--calibration",
        corpus,
        "--fp16",
        "--fused",
        "--no-ort-optimized",
        "--force",
        *QUICK,
        "--attach",
        f"training_stages={stages}",
    )
    assert result.exit_code == 0, result.output
    return out


def test_four_stem_bundle_lists_every_precision(four_stem_bundle, runs, corpus):
    manifest = read_manifest(four_stem_bundle, verify=True)
    assert manifest.stems == list(STEMS)
    assert manifest.models["fp32"] == {stem: f"{stem}.onnx" for stem in STEMS}
    assert manifest.models["int8"] == {stem: f"int8/{stem}.onnx" for stem in STEMS}
    assert manifest.models["fp16"] == {stem: f"fp16/{stem}.onnx" for stem in STEMS}
    assert manifest.fused == {"fp32": "fused.onnx", "fp16": "fp16/fused.onnx"}
    source = manifest.provenance["sources"]["other"]["checkpoint"]
    assert source["path"] == str(runs / "phase2-other" / "checkpoint") and source["step"] == 7
    assert manifest.provenance["export"]["int8_calibration"]["chunks"] == 4
    assert [stage["stage"] for stage in manifest.provenance["training_stages"]] == ["generic", "phase2-bass"]
    options = manifest.provenance["export_options"]
    assert options["stems"] == "all" and options["int8"] is True and options["calibration"] == str(corpus)
    int8 = onnx.load(str(four_stem_bundle / "int8" / "bass.onnx"))
    meta = {p.key: p.value for p in int8.metadata_props}
    assert meta["unmix.precision"] == "int8" and meta["unmix.stem"] == "bass"
    # The quantiser's long derived names are compacted; the interface keeps its names.
    assert max(len(tensor.name) for tensor in int8.graph.initializer) <= 4
    assert [value.name for value in int8.graph.output] == ["stem", "codes"]


def test_parity_report_states_int8_agreement_and_sdr(four_stem_bundle, corpus):
    report = json.loads((four_stem_bundle / "parity.json").read_text())
    assert not report["audio"]["synthetic"] and str(corpus) in report["audio"]["description"]
    assert report["audio"]["channels_as_batch"] == [2]
    for stem in STEMS:
        assert report["results"]["fp32"][stem]["real_disagreements"] == 0
        for precision in ("int8", "fp16"):
            row = report["results"][precision][stem]
            assert 0.0 <= row["code_agreement"] <= 1.0 and np.isfinite(row["sdr_delta_db"])
    table = (four_stem_bundle / "parity.md").read_text()
    assert "| int8 | vocals |" in table and "- fp32: pass" in table


def test_fused_graph_equals_the_per_stem_graphs(four_stem_bundle):
    mixture = np.random.default_rng(1).standard_normal((2, 1, 8 * 200)).astype(np.float32)
    fused = ort.InferenceSession(str(four_stem_bundle / "fused.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in fused.get_outputs()] == list(STEMS)
    outputs = dict(zip(STEMS, fused.run(None, {"mixture": mixture}), strict=False))
    for stem in STEMS:
        single = ort.InferenceSession(str(four_stem_bundle / f"{stem}.onnx"), providers=["CPUExecutionProvider"])
        assert np.abs(outputs[stem] - single.run(["stem"], {"mixture": mixture})[0]).max() < 1e-5


def test_reduced_precisions_keep_the_vq_island_in_fp32(four_stem_bundle):
    int8 = onnx.load(str(four_stem_bundle / "int8" / "drums.onnx"))
    producers = {out: node for node in int8.graph.node for out in node.output}
    vq_nodes = [node for node in int8.graph.node if "/vq/" in node.name]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in int8.graph.node}
    assert vq_nodes and all(
        producers[name].op_type != "DequantizeLinear" for node in vq_nodes for name in node.input if name in producers
    )
    fp16 = onnx.load(str(four_stem_bundle / "fp16" / "drums.onnx"))
    types = {init.name: init.data_type for init in fp16.graph.initializer}
    assert types["vq.codebook_t"] == types["vq.code_norms"] == onnx.TensorProto.FLOAT
    conv_weights = [node.input[1] for node in fp16.graph.node if node.op_type in ("Conv", "ConvTranspose")]
    assert conv_weights and all(types[name] == onnx.TensorProto.FLOAT16 for name in conv_weights)


def test_int8_that_loses_too_much_is_refused_unless_forced(runs, corpus, tmp_path):
    """A gate no model can pass (it may lose at most −100 dB, i.e. must gain 100) shows the refusal path."""
    args = [
        "--stem",
        "bass",
        "--checkpoint",
        runs / "phase2-bass",
        "--int8",
        "--calibration",
        corpus,
        "--max-sdr-loss",
        "-100",
        "--no-ort-optimized",
        *QUICK,
    ]
    refused = run(*args, "-o", tmp_path / "refused")
    assert refused.exit_code == 2 and "refusing to write" in refused.output
    assert list(tmp_path.iterdir()) == []
    forced = run(*args, "--force", "-o", tmp_path / "forced")
    assert forced.exit_code == 0, forced.output
    assert "(written anyway: forced)" in (tmp_path / "forced" / "parity.md").read_text()
    assert read_manifest(tmp_path / "forced").provenance["export"]["passed_gate"] == ["fp32"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stems", "all", "--checkpoint", "bass=x"], "pairs name"),
        (["--stem", "bass", "--stems", "all", "--checkpoint", "x"], "exactly one of --stem"),
        (["--stem", "guitar", "--checkpoint", "x"], "stems must be"),
        (["--stems", "", "--checkpoint", "x"], "stems must be"),  # once an AttributeError
        (["--stem", "bass", "--checkpoint", "x", "--int8"], "--calibration"),
        (["--stem", "bass", "--encoder", "x", "--checkpoint", "y"], "--encoder goes with --vqvae"),
        (["--stem", "bass", "--config", "tiny", "--checkpoint", "y"], "--config goes with --vqvae"),
        (["--stem", "bass", "--checkpoint", "no/such/run"], "no such checkpoint or run folder"),
        (["--stem", "bass", "--checkpoint", "x", "--bundle", "y"], "exactly one source"),
        (["--stem", "bass", "--bundle", "no/such/bundle"], "no/such/bundle"),
        (["--stem", "bass", "--checkpoint", "x", "--attach", "stages"], "--attach 'stages': give NAME=FILE"),
        (["--stem", "bass", "--checkpoint", "x", "--attach", "stages=no/such.json"], "cannot read no/such.json"),
    ],
)
def test_bad_arguments_fail_in_one_line(tmp_path, args, message):
    result = run(*args, "-o", tmp_path / "bundle")
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "bundle").exists()


def test_a_bundle_is_a_source_its_derived_bundle_keeps_fp32_and_record(four_stem_bundle, corpus, tmp_path):
    """--bundle rebuilds the separators from the fp32 graphs: the new fp32 graphs compute the same, the int8 graphs
    are calibrated anew (NNCF, the default), and the training record and refinement carry over."""
    source = Path(shutil.copytree(four_stem_bundle, tmp_path / "source"))
    refit = run("-o", source, "--refinement-data", corpus, "--refinement-songs", "0:2", "--refinement-seconds", 1)
    assert refit.exit_code == 0, refit.output
    before = read_manifest(source)
    args = ["--stems", "all", "--bundle", source, "--audio", corpus, "--int8", "--calibration", corpus]
    result = run(*args, "-o", tmp_path / "derived", "--no-ort-optimized", "--force", *QUICK)
    assert result.exit_code == 0, result.output
    derived = read_manifest(tmp_path / "derived", verify=True)
    assert derived.models["int8"] == before.models["int8"] and "fp16" not in derived.models
    assert derived.provenance["export"]["int8_calibration"]["method"] == "nncf"
    assert derived.provenance["training_stages"] == before.provenance["training_stages"]
    assert derived.refinement == before.refinement and derived.refinement["band_weights"]
    bass = derived.provenance["sources"]["bass"]
    assert bass["bundle"]["sha256"] == before.files["bass.onnx"]
    assert bass["checkpoint"] == before.provenance["sources"]["bass"]["checkpoint"]
    mixture = np.random.default_rng(3).standard_normal((1, 1, 8 * 300)).astype(np.float32)
    for stem in STEMS:
        old, new = (
            ort.InferenceSession(str(folder / f"{stem}.onnx"), providers=["CPUExecutionProvider"]).run(
                None, {"mixture": mixture}
            )
            for folder in (source, tmp_path / "derived")
        )
        assert np.array_equal(old[1], new[1]) and np.abs(old[0] - new[0]).max() < 1e-6
    int8 = onnx.load(str(tmp_path / "derived" / "int8" / "vocals.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in int8.graph.node}
    same = run(*args, "-o", source, "--overwrite")
    assert same.exit_code == 2 and "same folder" in same.output


def test_phase1_checkpoint_is_not_a_separator(tmp_path):
    write_run(tmp_path / "phase1", "bass", 60, role="vqvae")
    result = run("--stem", "bass", "--checkpoint", tmp_path / "phase1", "-o", tmp_path / "bundle")
    assert result.exit_code == 2 and "--vqvae" in result.output


def test_stem_mismatch_is_refused(runs, tmp_path):
    result = run("--stem", "bass", "--checkpoint", runs / "phase2-other", "-o", tmp_path / "bundle")
    assert result.exit_code == 2 and "trained for other, not bass" in result.output


def test_run_folder_with_several_checkpoints_uses_the_latest(tmp_path):
    write_run(tmp_path / "a", "bass", 70, step=100)
    write_run(tmp_path / "b", "bass", 71, step=2000)
    (tmp_path / "run").mkdir()
    (tmp_path / "a" / "checkpoint").rename(tmp_path / "run" / "step-100")
    (tmp_path / "b" / "checkpoint").rename(tmp_path / "run" / "step-2000")
    assert find_checkpoint(tmp_path / "run") == tmp_path / "run" / "step-2000"
    assert find_checkpoint(tmp_path / "run" / "step-100") == tmp_path / "run" / "step-100"


# A value other than the default for every ExportOptions field; the options are named after the fields but these.
GIVEN = {
    "out": Path("b"),
    "stem": "bass",
    "stems": "all",
    "checkpoint": ("c1", "c2"),
    "vqvae": ("v",),
    "encoder": ("e",),
    "bundle": Path("src"),
    "config": "tiny",
    "trust_pickle": True,
    "audio": Path("a"),
    "parity_segments": 2,
    "parity_seconds": 1.5,
    "int8": True,
    "calibration": Path("cal"),
    "calibration_chunks_count": 3,
    "calibration_seconds": 0.5,
    "calibration_method": "entropy",
    "fp16": True,
    "fused": True,
    "ort_optimized": False,
    "trt": True,
    "max_sdr_loss": 0.5,
    "force": True,
    "overwrite": True,
    "note": "n",
    "attach": ("x=y",),
    "refinement_data": Path("r"),
    "refinement_songs": "1:2",
    "refinement_seconds": 3.0,
    "refinement_bands": 4,
    "refinement_spread": "other=3",
}
FLAGS = {"out": "-o", "calibration_chunks_count": "--calibration-chunks", "ort_optimized": "--no-ort-optimized"}


def test_every_option_reaches_its_export_options_field(monkeypatch):
    received = []
    monkeypatch.setattr("unmix.export.cli.run", lambda options: received.append(options))  # None: nothing written
    defaults = ExportOptions(out=Path("default"))
    assert {field.name for field in dataclasses.fields(ExportOptions)} == set(GIVEN)
    assert all(getattr(defaults, name) != value for name, value in GIVEN.items() if name != "out")
    arguments = []
    for name, value in GIVEN.items():
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        values = value if isinstance(value, tuple) else () if isinstance(value, bool) else (value,)
        arguments += [part for item in values for part in (flag, item)] or [flag]
    result = run(*arguments)
    assert result.exit_code == 0 and result.output == "", result.output
    assert received == [ExportOptions(**GIVEN)]
    given = received[0].given()  # what the manifest records: options that say something, JSON-ready
    assert given["checkpoint"] == ["c1", "c2"] and given["out"] == "b" and "ort_optimized" not in given
    assert set(ExportOptions(out=Path("o"), stems="all", int8=True).given()) == {
        "out",
        "stems",
        "int8",
        "parity_segments",
        "parity_seconds",
        "calibration_chunks_count",
        "calibration_seconds",
        "calibration_method",
        "ort_optimized",
        "max_sdr_loss",
        "refinement_songs",
        "refinement_seconds",
        "refinement_bands",
        "refinement_spread",
    }
