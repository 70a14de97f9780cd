"""File to files: formats, bit depth, rates and channels kept; bad input refused with nothing written."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import STEMS, tiny_bundle
from runtime_inputs import BAD_INPUTS, write

from unmix.runtime import AudioError, Cancelled, OutputError, Separator
from unmix.runtime.audio import AtomicWriter


@pytest.fixture(scope="module")
def separator(tmp_path_factory):
    return Separator.from_bundle(tiny_bundle(tmp_path_factory), chunk=2048, batch_samples=2 * (2048 + 2 * 408))


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize(
    "name,options",
    [
        ("a.wav", {"subtype": "PCM_16"}),
        ("a.wav", {"subtype": "PCM_24"}),
        ("a.wav", {"subtype": "PCM_32"}),
        ("a.wav", {"subtype": "FLOAT"}),
        ("a.flac", {"subtype": "PCM_24"}),
        ("a.ogg", {"subtype": "VORBIS"}),
        ("a.mp3", {}),
    ],
)
def test_formats_and_bit_depth_are_kept(separator, tmp_path, name, options):
    source = write(tmp_path / name, frames=6000, channels=2, rate=48000, **options)
    result = separator.separate_file(source, tmp_path / "out")
    info = sf.info(str(source))
    assert sorted(result.outputs) == sorted(STEMS)
    for stem, path in result.outputs.items():
        assert path == tmp_path / "out" / "a" / f"{stem}{source.suffix}"
        out = sf.info(str(path))
        assert (out.format, out.subtype, out.samplerate, out.channels) == (
            info.format,
            info.subtype,
            info.samplerate,
            info.channels,
        )
        if info.format in ("WAV", "FLAC"):  # lossless: the frame count is exact
            assert out.frames == info.frames
    assert files_under(tmp_path / "out") == ["a"] + [f"a/{stem}{source.suffix}" for stem in sorted(STEMS)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_file_output_equals_the_array_api(separator, tmp_path):
    source = write(tmp_path / "song.wav", frames=9000, channels=2, rate=32000, subtype="FLOAT")
    result = separator.separate_file(source, tmp_path / "out")
    audio, rate = sf.read(str(source), dtype="float32")
    expected = separator.separate(audio, rate)
    for stem, path in result.outputs.items():
        np.testing.assert_array_equal(sf.read(str(path), dtype="float32")[0], expected[stem])
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # an ordinary file, not the temporary's 0600


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
@pytest.mark.parametrize("rate", [8000, 44100, 192000])
def test_channels_and_rates(separator, tmp_path, channels, rate):
    source = write(tmp_path / "x.flac", frames=rate // 8, channels=channels, rate=rate)
    result = separator.separate_file(source, tmp_path / "out")
    for path in result.outputs.values():
        info = sf.info(str(path))
        assert (info.channels, info.samplerate, info.frames) == (channels, rate, rate // 8)


def test_format_conversion_picks_a_faithful_subtype(separator, tmp_path):
    source = write(tmp_path / "f.wav", subtype="FLOAT")
    result = separator.separate_file(source, tmp_path / "out", format="flac")
    assert {sf.info(str(p)).subtype for p in result.outputs.values()} == {"PCM_24"}  # FLAC holds no floats
    assert all(p.suffix == ".flac" for p in result.outputs.values())


@pytest.mark.parametrize("subtype,clipped", [("PCM_16", True), ("PCM_24", True), ("FLOAT", False)])
def test_pcm_output_is_clipped_not_wrapped(tmp_path, subtype, clipped):
    block = np.array([[1.7], [-2.5], [0.5], [1.0]], np.float32)
    writer = AtomicWriter(tmp_path / "x.wav", 44100, 1, "WAV", subtype)
    writer.write(block)
    writer.commit()
    written = sf.read(str(tmp_path / "x.wav"), dtype="float32", always_2d=True)[0]
    expected = np.clip(block, -1, 1) if clipped else block
    np.testing.assert_allclose(written, expected, atol=1e-4)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_error_and_nothing_written(separator, tmp_path, case):
    make, words = BAD_INPUTS[case]
    source = make(tmp_path)
    with pytest.raises((AudioError, OutputError), match=words) as error:
        separator.separate_file(source, tmp_path / "out")
    assert "\n" not in str(error.value) and str(source) in str(error.value)
    assert files_under(tmp_path / "out") == []


def test_a_folder_is_not_a_file(separator, tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        separator.separate_file(tmp_path, tmp_path / "out")


def test_a_format_that_cannot_hold_the_audio(separator, tmp_path):
    source = write(tmp_path / "six.wav", channels=6)
    with pytest.raises(OutputError, match="MP3 holds at most 2 channels"):
        separator.separate_file(source, tmp_path / "out", format="mp3")
    source = write(tmp_path / "hi.wav", rate=96000)
    with pytest.raises(OutputError, match="sample rates of 8000"):
        separator.separate_file(source, tmp_path / "out", format="mp3")
    assert files_under(tmp_path / "out") == []


def test_output_folder_below_a_file(separator, tmp_path):
    source = write(tmp_path / "a.wav")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(OutputError, match="cannot create"):
        separator.separate_file(source, tmp_path / "blocker" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_unwritable_output_folder(separator, tmp_path):
    source = write(tmp_path / "a.wav")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="cannot"):
        separator.separate_file(source, locked)
    assert files_under(locked) == []


def test_cancel_mid_file_leaves_nothing(separator, tmp_path):
    source = write(tmp_path / "a.wav", frames=200_000)
    calls = []
    with pytest.raises(Cancelled):
        separator.separate_file(
            source, tmp_path / "out", progress=lambda d, t: calls.append(d), cancel=lambda: len(calls) >= 3
        )
    assert len(calls) == 3 and files_under(tmp_path / "out") == []


def test_skip_existing_and_overwrite(separator, tmp_path):
    source = write(tmp_path / "a.wav")
    first = separator.separate_file(source, tmp_path / "out")
    assert not first.skipped and first.rtf > 0
    stamp = {p: p.stat().st_mtime_ns for p in first.outputs.values()}
    assert separator.separate_file(source, tmp_path / "out").skipped
    first.outputs["bass"].unlink()  # a missing stem means the track is redone
    assert not separator.separate_file(source, tmp_path / "out").skipped
    assert not separator.separate_file(source, tmp_path / "out", overwrite=True).skipped
    assert all(p.stat().st_mtime_ns != stamp[p] for p in first.outputs.values())


@pytest.mark.parametrize(
    "template,words",
    [("{track}.{ext}", "must contain {stem}"), ("{track}/{stem}.{codec}", "unknown field"), ("{track/{stem}", "bad")],
)
def test_bad_filename_templates(separator, tmp_path, template, words):
    with pytest.raises(OutputError, match=words):
        separator.separate_file(write(tmp_path / "a.wav"), tmp_path / "out", filename=template)


def test_filename_template(separator, tmp_path):
    source = write(tmp_path / "song.flac")
    result = separator.separate_file(source, tmp_path / "out", filename="{stem}/{track}-{trackext}.{ext}", format="wav")
    assert result.outputs == {stem: tmp_path / "out" / stem / "song-flac.wav" for stem in STEMS}
    assert all(p.is_file() for p in result.outputs.values())


def test_outputs_never_overwrite_the_input(separator, tmp_path):
    source = write(tmp_path / "bass.wav")
    with pytest.raises(OutputError, match="overwrite the input"):
        separator.separate_file(source, tmp_path, filename="{stem}.{ext}")
    assert source.is_file() and sf.info(str(source)).frames == 4000


def test_long_input_is_written_incrementally(separator, tmp_path):
    """Stems are on disk (as temporary files) before the input is fully read: nothing waits for the end."""
    source = write(tmp_path / "long.wav", frames=400_000)
    sizes = []

    def progress(done, total):
        sizes.append(sum(p.stat().st_size for p in (tmp_path / "out").rglob(".*.part")))

    separator.separate_file(source, tmp_path / "out", progress=progress)
    assert 0 < sizes[len(sizes) // 2] < sizes[-2]
    assert not list((tmp_path / "out").rglob(".*.part"))
