"""A streamed FLAC (STREAMINFO total_samples 0, as an encoder writing to a pipe leaves it) is read end to end.

libsndfile reports such a file's length as SF_COUNT_MAX and cannot seek it to its end, which soundfile does after
every read: issue #19. The runtime reads it straight through, its length unknown until the end, and still refuses
a truncated one with one line.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import STEMS, tiny_bundle
from runtime_inputs import noise
from typer.testing import CliRunner

from unmix.runtime import AudioError, Separator
from unmix.runtime.audio import open_audio, read_blocks
from unmix.runtime.cli import app

MAX_DECLARED = 2**36 - 1  # the most samples a FLAC STREAMINFO can declare


def streamed(source, target):
    """`target`: the FLAC `source` as an encoder writing to a pipe leaves it, with no length, frame sizes or MD5."""
    data = bytearray(source.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0 and int.from_bytes(data[5:8], "big") == 34  # STREAMINFO
    info = 8  # STREAMINFO: block sizes 2+2, frame sizes 3+3, rate 20 bits, channels 3, bits 5, samples 36, MD5 16
    data[info + 4 : info + 10] = bytes(6)  # min and max frame size: unknown
    data[info + 13] &= 0xF0  # the top 4 of total_samples' 36 bits
    data[info + 14 : info + 18] = bytes(4)  # the other 32
    data[info + 18 : info + 34] = bytes(16)  # MD5: unknown
    target.write_bytes(bytes(data))
    return target


def flac_pair(folder, frames=9000, channels=2, rate=48000, subtype="PCM_24"):
    """A normal FLAC and its streamed twin, with the same audio."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = folder / "normal.flac"
    sf.write(str(normal), noise(frames, channels), rate, subtype=subtype)
    return normal, streamed(normal, folder / "streamed.flac")


def decode(path, block_frames):
    handle, info = open_audio(path)
    with handle:
        return np.concatenate(list(read_blocks(handle, info, block_frames))), info


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def separator(bundle):
    return Separator.from_bundle(bundle, chunk=2048, batch_samples=2 * (2048 + 2 * 408))


def test_soundfile_reports_no_real_length(tmp_path):
    normal, piped = flac_pair(tmp_path)
    assert sf.info(str(normal)).frames == 9000
    assert sf.info(str(piped)).frames > MAX_DECLARED  # libsndfile's SF_COUNT_MAX: more than any FLAC declares


@pytest.mark.parametrize("channels,subtype", [(1, "PCM_16"), (2, "PCM_24"), (3, "PCM_16")])
@pytest.mark.parametrize("block_frames", [1000, 4096, 1 << 16])
def test_reader_returns_the_same_samples(tmp_path, channels, subtype, block_frames):
    normal, piped = flac_pair(tmp_path, frames=9001, channels=channels, subtype=subtype)
    expected = sf.read(str(normal), dtype="float32", always_2d=True)[0]
    audio, info = decode(piped, block_frames)
    np.testing.assert_array_equal(audio, expected)
    assert (info.frames, info.seconds, info.channels) == (9001, 9001 / 48000, channels)  # learnt at the end


@pytest.mark.skipif(shutil.which("flac") is None, reason="needs the flac encoder")
def test_flac_encoding_from_a_pipe(tmp_path):
    audio = (noise(20_000, 2) * 32767).astype("<i2")
    command = [
        "flac",
        "--silent",
        "--force-raw-format",
        "--endian=little",
        "--sign=signed",
        "--channels=2",
        "--bps=16",
        "--sample-rate=44100",
        "-",
    ]
    encoded = subprocess.run(command, input=audio.tobytes(), capture_output=True, check=True).stdout
    (tmp_path / "piped.flac").write_bytes(encoded)
    assert sf.info(str(tmp_path / "piped.flac")).frames > MAX_DECLARED
    decoded, info = decode(tmp_path / "piped.flac", 4096)
    np.testing.assert_array_equal(decoded, audio.astype(np.float32) / 32768)
    assert info.frames == 20_000


def test_separating_it_equals_separating_the_normal_file(separator, tmp_path):
    normal, piped = flac_pair(tmp_path / "in")
    expected = separator.separate_file(normal, tmp_path / "a")
    result = separator.separate_file(piped, tmp_path / "b")
    assert result.seconds == 9000 / 48000
    for stem in STEMS:
        reference = sf.read(str(expected.outputs[stem]), dtype="float32")[0]
        np.testing.assert_array_equal(sf.read(str(result.outputs[stem]), dtype="float32")[0], reference)


def test_cli_separates_it(bundle, tmp_path):
    _, piped = flac_pair(tmp_path / "in")
    result = CliRunner().invoke(
        app, ["separate", "--bundle", str(bundle), "--chunk", "2048", str(piped), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert "1 separated: 0:00.2 of audio" in result.stdout
    assert "s of audio |" in result.stderr  # no total to show a bar against: a counter of seconds done
    for stem in STEMS:
        info = sf.info(str(tmp_path / "out" / "streamed" / f"{stem}.flac"))
        assert (info.frames, info.samplerate, info.channels, info.subtype) == (9000, 48000, 2, "PCM_24")


def test_cli_refuses_a_truncated_one_with_one_line(bundle, tmp_path):
    _, piped = flac_pair(tmp_path / "in", frames=44100)
    data = piped.read_bytes()
    piped.write_bytes(data[: len(data) // 2])
    result = CliRunner().invoke(
        app,
        ["separate", "--bundle", str(bundle), "--chunk", "2048", "--quiet", str(piped), "-o", str(tmp_path / "out")],
    )
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(piped) in line and "truncated or corrupt file" in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -1])
def test_api_refuses_a_truncated_one(separator, tmp_path, cut):
    _, piped = flac_pair(tmp_path / "in", frames=44100)
    data = piped.read_bytes()
    piped.write_bytes(data[: len(data) - 1 if cut == -1 else int(len(data) * cut)])
    with pytest.raises(AudioError, match="truncated or corrupt file") as error:
        separator.separate_file(piped, tmp_path / "out")
    assert "\n" not in str(error.value) and str(piped) in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_an_empty_one_is_zero_length(separator, tmp_path):
    _, piped = flac_pair(tmp_path / "in", frames=100)
    data, end = piped.read_bytes(), 4
    while not data[end] & 0x80:  # metadata blocks up to the last: what `flac - < /dev/null` writes
        end += 4 + int.from_bytes(data[end + 1 : end + 4], "big")
    piped.write_bytes(data[: end + 4 + int.from_bytes(data[end + 1 : end + 4], "big")])
    with pytest.raises(AudioError, match="zero-length audio") as error:
        separator.separate_file(piped, tmp_path / "out")
    assert "\n" not in str(error.value) and str(piped) in str(error.value)
