"""`unmix separate` and `unmix doctor`: inputs, options, the bad-input matrix, Ctrl-C, exit codes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import STEMS, tiny_bundle
from runtime_inputs import BAD_INPUTS, FOLDER_WITHOUT_AUDIO, noise, write
from typer.testing import CliRunner

from unmix.runtime import separator as separator_module
from unmix.runtime.cli import app


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def unmix(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def separate(bundle, *args):
    return unmix("separate", "--bundle", bundle, "--chunk", 2048, "--quiet", *args)  # later options win


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_files_folders_and_globs(bundle, tmp_path):
    write(tmp_path / "album" / "one.wav")
    write(tmp_path / "album" / "disc2" / "two.flac", channels=1, rate=22050)
    (tmp_path / "album" / "cover.txt").write_text("not audio")
    write(tmp_path / "loose" / "three.ogg", rate=48000)
    write(tmp_path / "single.mp3", rate=44100)
    result = separate(
        bundle, tmp_path / "album", f"{tmp_path}/loose/*.ogg", tmp_path / "single.mp3", "-o", tmp_path / "out"
    )
    assert result.exit_code == 0, result.output
    expected = {
        f"{track}/{stem}.{ext}"
        for track, ext in [("one", "wav"), ("two", "flac"), ("three", "ogg"), ("single", "mp3")]
        for stem in STEMS
    }
    assert {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")} == expected
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("4 separated") and "RTF" in summary and "0 failed" in summary
    assert sf.info(str(tmp_path / "out" / "two" / "bass.flac")).samplerate == 22050


@pytest.mark.parametrize("case", sorted(BAD_INPUTS) + ["folder-without-audio"])
def test_bad_input_fails_alone_and_the_batch_goes_on(bundle, tmp_path, case):
    make, words = FOLDER_WITHOUT_AUDIO if case == "folder-without-audio" else BAD_INPUTS[case]
    bad = make(tmp_path / "in" / "empty") if case == "folder-without-audio" else make(_folder(tmp_path / "in"))
    good = write(tmp_path / "in" / "good.wav")
    result = separate(bundle, bad, good, "-o", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = errors(result)
    assert str(bad) in line and re.search(words, line), line
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(["good"] + [f"{s}.wav" for s in STEMS])
    assert "1 separated" in result.stdout and "1 failed" in result.stdout


def _folder(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("channels,rate,silent", [(1, 8000, False), (8, 192_000, False), (2, 44100, True)])
def test_unusual_but_valid_input(bundle, tmp_path, channels, rate, silent):
    source = tmp_path / "x.wav"
    audio = np.zeros((rate // 4, channels), np.float32) if silent else noise(rate // 4, channels)
    sf.write(str(source), audio, rate, subtype="PCM_24")
    result = separate(bundle, source, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    for stem in STEMS:
        written, written_rate = sf.read(str(tmp_path / "out" / "x" / f"{stem}.wav"), always_2d=True)
        assert written.shape == audio.shape and written_rate == rate
        assert not silent or not written.any()


def test_only_the_chosen_stems_format_and_filename(bundle, tmp_path):
    source = write(tmp_path / "song.wav", subtype="PCM_24")
    result = separate(
        bundle,
        source,
        "-o",
        tmp_path / "out",
        "--stems",
        "vocals",
        "--format",
        "flac",
        "--filename",
        "{track}-{stem}.{ext}",
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["song-vocals.flac"]
    assert sf.info(str(tmp_path / "out" / "song-vocals.flac")).subtype == "PCM_24"


def test_skip_existing_then_overwrite(bundle, tmp_path):
    source = write(tmp_path / "song.wav")
    assert separate(bundle, source, "-o", tmp_path / "out").exit_code == 0
    again = separate(bundle, source, "-o", tmp_path / "out")
    assert again.exit_code == 0 and "skipped" in again.stdout and "0 separated; 1 skipped" in again.stdout
    redo = separate(bundle, source, "-o", tmp_path / "out", "--overwrite")
    assert redo.exit_code == 0 and redo.stdout.strip().splitlines()[-1].startswith("1 separated")


def test_outputs_inside_the_input_folder_are_not_inputs(bundle, tmp_path):
    write(tmp_path / "music" / "song.wav")
    assert separate(bundle, tmp_path / "music", "-o", tmp_path / "music" / "separated").exit_code == 0
    again = separate(bundle, tmp_path / "music", "-o", tmp_path / "music" / "separated", "--overwrite")
    assert again.stdout.strip().splitlines()[-1].startswith("1 separated")


def test_two_tracks_with_one_name_do_not_overwrite_each_other(bundle, tmp_path):
    first, second = write(tmp_path / "a" / "song.wav"), write(tmp_path / "b" / "song.wav")
    result = separate(bundle, first, second, "-o", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = errors(result)
    assert str(second) in line and "{trackext}" in line


def test_unwritable_output(bundle, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = separate(bundle, write(tmp_path / "a.wav"), "-o", tmp_path / "blocker" / "out")
    assert result.exit_code == 1
    (line,) = errors(result)
    assert "cannot create" in line


@pytest.mark.parametrize(
    "args,words",
    [
        (["--stems", "drums"], "no stem 'drums'"),
        (["--precision", "fp16"], "no fp16 models"),
        (["--device", "cuda:1", "--backend", "trt"], "TensorRT|cuda"),
        (["--device", "gpu"], "unknown device"),
        (["--chunk", "1001"], "multiple of the hop"),
        (["--filename", "{track}.{ext}"], "must contain {stem}"),
        (["--format", "aac"], "unknown --format"),
        (["--refine"], "refinement splits the mixture"),  # the tiny bundle has two stems
    ],
)
def test_setup_errors_exit_2_with_one_line(bundle, tmp_path, args, words):
    result = separate(bundle, write(tmp_path / "a.wav"), "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert re.search(words, line), line
    assert not (tmp_path / "out").exists()


def test_refinement_is_the_default_for_four_stems_and_can_be_switched_off(tmp_path_factory, tmp_path):
    four = tiny_bundle(tmp_path_factory, ("drums", "bass", "other", "vocals"))
    track = write(tmp_path / "a.wav")
    outputs = {}
    for flag in ("--refine", "--no-refine"):
        result = unmix("separate", "--bundle", four, "--stems", "vocals", flag, "-o", tmp_path / flag, track)
        assert result.exit_code == 0, result.output
        assert ("Wiener refinement" in result.stderr) == (flag == "--refine")
        outputs[flag] = sf.read(tmp_path / flag / "a" / "vocals.wav")[0]
    assert not np.allclose(outputs["--refine"], outputs["--no-refine"], atol=1e-3)


def test_no_default_bundle_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(separator_module, "DEFAULT_BUNDLE", tmp_path / "nothing")
    result = unmix("separate", write(tmp_path / "a.wav"))
    assert result.exit_code == 2 and "no default model is installed" in result.stderr


def test_default_bundle_with_no_flags(bundle, tmp_path, monkeypatch):
    """`unmix separate song.wav`: the shipped bundle, ./separated/song/<stem>.wav."""
    monkeypatch.setattr(separator_module, "DEFAULT_BUNDLE", shutil.copytree(bundle, tmp_path / "default"))
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "song.wav")
    result = unmix("separate", "song.wav")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "separated" / "song").iterdir()) == [f"{s}.wav" for s in sorted(STEMS)]


def test_doctor():
    result = unmix("doctor")
    assert result.exit_code == 0
    for words in (
        "onnxruntime",
        "CPUExecutionProvider",
        "libsndfile",
        "cores",
        "features",
        "nvidia gpus",
        "tensorrt",
        "default model",
    ):
        assert words in result.stdout
    (openvino,) = [
        line
        for line in result.stdout.splitlines()
        if line.split()[:1] == ["openvino"] and line.split()[1:2] != ["cache"]
    ]
    assert ("not installed" in openvino) != ("openvino cache" in result.stdout)  # where it runs, where it caches


def _restore_sigint() -> None:
    # A background job of a non-interactive shell (how some CI runners start pytest) inherits SIGINT ignored,
    # and Python keeps it so; a terminal's Ctrl-C reaches a process whose SIGINT is at its default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_leaves_nothing(bundle, tmp_path, stop, code):
    """Ctrl-C or `kill` while a track is being separated: one line, exit 128 + signal, no stems, no temporaries."""
    source = write(tmp_path / "long.wav", frames=44100 * 60)  # minutes of work at --chunk 256: never done first
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "unmix.runtime.cli",
        "separate",
        str(source),
        "-o",
        str(out),
        "--bundle",
        str(bundle),
        "--chunk",
        "256",
        "--threads",
        "1",
        "-q",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_restore_sigint
    )
    try:
        _wait_for_temporaries(out, process)  # every stem's writer is open: the track is under way
        process.send_signal(stop)
        try:
            _, stderr = process.communicate(timeout=30)  # the signal is seen when the engine call in flight ends
        except subprocess.TimeoutExpired:
            pytest.fail(f"signal {stop} did not stop the run")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("terminated: " if stop == signal.SIGTERM else "interrupted: "), line
    assert not out.exists(), sorted(out.rglob("*"))  # the temporaries and the folders made for them are gone


def _wait_for_temporaries(out, process, timeout: float = 60) -> None:
    """Return once each stem's hidden temporary holds its header; fail if the run ends or never gets there."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            sizes = [part.stat().st_size for part in out.rglob(".*.part")]
        except FileNotFoundError:  # removed between the listing and the stat: the run is failing; see below
            sizes = []
        if len(sizes) == len(STEMS) and all(sizes):
            return
        time.sleep(0.02)
    assert process.poll() is None, f"the run ended before it could be interrupted: {process.communicate()}"
    pytest.fail(f"no temporaries in {out} after {timeout} s")


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "unmix"]
    assert script.value == "unmix.runtime.cli:app"
    assert os.access(os.path.join(os.path.dirname(sys.executable), "unmix"), os.X_OK)
