"""Malformed or escaping bundle manifests are refused at load with one line, never a traceback."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from runtime_bundle import tiny_bundle
from runtime_inputs import write
from typer.testing import CliRunner

from unmix.runtime import BundleError, Separator
from unmix.runtime.cli import app
from unmix.runtime.manifest import MANIFEST_FILE, Manifest, read_manifest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def good(bundle) -> dict:
    return json.loads((bundle / MANIFEST_FILE).read_text())


def _set(path: str, value):
    """An edit of the manifest dict setting dotted `path` to `value` (DELETE removes the key)."""

    def edit(data):
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        if value is DELETE:
            del data[last]
        else:
            data[last] = value

    return edit


DELETE = object()


def _first_model(data):
    precision = next(iter(data["models"]))
    return precision, next(iter(data["models"][precision]))


def _model_path(value):
    def edit(data):
        precision, stem = _first_model(data)
        data["models"][precision][stem] = value

    return edit


def _missing_model(data):
    precision, stem = _first_model(data)
    del data["models"][precision][stem]


def _escaping_listed_model(data):
    precision, stem = _first_model(data)
    data["models"][precision][stem] = "../outside.onnx"
    data["files"]["../outside.onnx"] = "0" * 64


def _unlisted_model(data):
    precision, stem = _first_model(data)
    del data["files"][data["models"][precision][stem]]


WHOLE = {"list": [], "null": None, "string": "bundle", "number": 3}
EDITS = {
    "stems-empty": (_set("stems", []), "stems"),
    "stems-string": (_set("stems", "bass"), "stems"),
    "stem-unknown": (_set("stems", ["bass", "kazoo"]), "kazoo"),
    "stem-twice": (_set("stems", ["bass", "bass"]), "stems"),
    "model-missing": (_missing_model, "no graph for"),
    "files-list": (_set("files", []), "files"),
    "sample-rate-string": (_set("sample_rate", "44100"), "sample_rate"),
    "sample-rate-zero": (_set("sample_rate", 0), "sample_rate"),
    "sample-rate-bool": (_set("sample_rate", True), "sample_rate"),
    "sample-rate-tiny": (_set("sample_rate", 1), "sample_rate"),
    "sample-rate-nan": (_set("sample_rate", float("nan")), "sample_rate"),
    "hop-zero": (_set("hop_length", 0), "hop_length"),
    "hop-negative": (_set("hop_length", -8), "hop_length"),
    "hop-float": (_set("hop_length", 8.0), "hop_length"),
    "context-huge": (_set("context_samples", 10**12), "context_samples"),
    "context-negative": (_set("context_samples", -1), "context_samples"),
    "refinement-list": (_set("refinement", []), "refinement"),
    "models-list": (_set("models", []), "models"),
    "models-empty": (_set("models", {}), "models"),
    "fused-string": (_set("fused", "fused.onnx"), "fused"),
    "unknown-key": (_set("colour", "blue"), "colour"),
    "missing-key": (_set("hop_length", DELETE), "hop_length"),
    "sha-not-hex": (lambda d: d["files"].update({k: "xyz" for k in d["files"]}), "sha256"),
    "model-absolute": (_model_path("/etc/passwd"), "/etc/passwd"),
    "model-dotdot": (_model_path("../../x.onnx"), r"\.\./\.\./x\.onnx"),
    "model-dotdot-listed": (_escaping_listed_model, r"\.\./outside\.onnx"),
    "model-unlisted": (_unlisted_model, "not listed in files"),
    "model-not-string": (_model_path(7), "7"),
    "fused-absolute": (_set("fused", {"fp32": "/tmp/fused.onnx"}), "/tmp/fused.onnx"),
    "ort-unlisted": (_set("ort_optimized", {"fp32": {"bass": "bass.ort.onnx"}}), "not listed"),
    "ort-unknown-stem": (_set("ort_optimized", {"fp32": {"kazoo": "bass.onnx"}}), "kazoo"),
}


def _write(folder, data) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(data))


def _copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "bundle")


def _edited(good, edit):
    data = copy.deepcopy(good)
    edit(data)
    return data


@pytest.mark.parametrize("case", sorted(WHOLE))
def test_a_manifest_that_is_no_object_is_refused(bundle, tmp_path, case):
    folder = _copy(bundle, tmp_path)
    _write(folder, WHOLE[case])
    with pytest.raises(BundleError, match="expected a JSON object") as error:
        read_manifest(folder)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("case", sorted(EDITS))
def test_malformed_manifests_are_refused_at_load_with_one_line(bundle, good, tmp_path, case):
    edit, words = EDITS[case]
    folder = _copy(bundle, tmp_path)
    _write(folder, _edited(good, edit))
    for verify in (True, False):
        with pytest.raises(BundleError, match=words) as error:
            read_manifest(folder, verify=verify)
        assert "\n" not in str(error.value)
    with pytest.raises(BundleError, match=words):
        Separator.from_bundle(folder, backend="ort")


@pytest.mark.parametrize("case", ["hop-zero", "model-dotdot", "stems-empty"])
def test_the_cli_refuses_a_malformed_bundle_with_one_line_and_exit_2(bundle, good, tmp_path, case):
    edit, words = EDITS[case]
    folder = _copy(bundle, tmp_path)
    _write(folder, _edited(good, edit))
    track = write(tmp_path / "a.wav")
    result = CliRunner().invoke(
        app, ["separate", "--bundle", str(folder), "-q", str(track), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output and words.replace("\\", "") in line.replace("\\", "")
    assert not (tmp_path / "out").exists()


def test_a_graph_symlinked_outside_the_bundle_is_refused(bundle, good, tmp_path):
    folder = _copy(bundle, tmp_path)
    precision, stem = _first_model(good)
    name = good["models"][precision][stem]
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(folder / name, outside)
    (folder / name).unlink()
    (folder / name).symlink_to(outside)  # same bytes, so the sha256 alone would pass
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(folder)


def test_the_good_manifests_still_load(bundle, good):
    assert read_manifest(bundle).stems == good["stems"]
    default = read_manifest(_default_bundle(), verify=False)
    assert default.hop_length == 8 and Manifest.from_dict(json.loads(default.to_json())) == default


def _default_bundle():
    from unmix.runtime.separator import DEFAULT_BUNDLE

    return DEFAULT_BUNDLE


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"sample_rate": ' + "9" * 5000 + "}", "\xff\xfe"])
def test_hostile_json_is_one_line(bundle, tmp_path, text):
    folder = _copy(bundle, tmp_path)
    (folder / MANIFEST_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(BundleError) as error:
        read_manifest(folder)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("case", ["stems-empty", "hop-zero", "model-dotdot", "refinement-list", "model-unlisted"])
def test_from_dict_checks_as_read_manifest_does(good, case):
    edit, words = EDITS[case]
    with pytest.raises(BundleError, match=words):
        Manifest.from_dict(_edited(good, edit))
    for value in WHOLE.values():
        with pytest.raises(BundleError, match="expected a JSON object"):
            Manifest.from_dict(value)
