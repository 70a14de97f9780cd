"""Stream and separate misuse: every bad argument is one line with an `unmix.runtime` exception, as in separate()."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import tiny_bundle

from unmix.runtime import AudioError, Separator, StreamFinished, UnmixError


@pytest.fixture(scope="module")
def separator(tmp_path_factory):
    return Separator.from_bundle(tiny_bundle(tmp_path_factory), chunk=512, threads=1)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert text and "\n" not in text
    return text


@pytest.mark.parametrize(
    "block",
    [
        np.zeros((100, 2), np.int16),
        np.zeros((100, 2), np.int32),
        np.zeros((100, 2), np.complex64),
        np.zeros((100, 2), bool),
    ],
    ids=["int16", "int32", "complex", "bool"],
)
def test_feed_refuses_what_separate_refuses(separator, block):
    with pytest.raises(AudioError, match="floating point") as fed:
        separator.stream(44100, 2).feed(block)
    one_line(fed)
    with pytest.raises(AudioError, match="floating point"):
        separator.separate(block, 44100)


@pytest.mark.parametrize(
    "rate",
    [
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        -float("inf"),
        "44100",
        44100.5,
        0,
        -44100,
        1,
        999,
        1_000_001,
        10**12,
        np.float64("nan"),
    ],
)
def test_bad_sample_rates_are_one_line_audio_errors(separator, rate):
    with pytest.raises(AudioError, match="sample rate") as stream:
        separator.stream(rate, 2)
    one_line(stream)
    with pytest.raises(AudioError, match="sample rate"):
        separator.separate(np.zeros((100, 2), np.float32), rate)


@pytest.mark.parametrize("rate", [1000, 8000, 44100.0, np.int64(48000), 1_000_000])
def test_usable_sample_rates_are_accepted(separator, rate):
    assert separator.stream(rate, 1).sample_rate == int(rate)


@pytest.mark.parametrize("channels", [0, -1, True, None, 2.5, "2", 65])
def test_bad_channel_counts_are_one_line_audio_errors(separator, channels):
    with pytest.raises(AudioError, match="channels") as error:
        separator.stream(44100, channels)
    one_line(error)


def test_feed_and_finish_after_finish_raise_stream_finished(separator):
    stream = separator.stream(44100, 2)
    stream.feed(np.zeros((1000, 2), np.float32))
    stream.finish()
    for call in (lambda: stream.feed(np.zeros((10, 2), np.float32)), stream.finish):
        with pytest.raises(StreamFinished, match="finished") as error:
            call()
        assert isinstance(error.value, UnmixError)
        one_line(error)


@pytest.mark.parametrize("rate", [1, 500, 2_000_000])
def test_a_file_at_an_absurd_rate_is_refused_before_anything_is_written(tmp_path_factory, separator, tmp_path, rate):
    import soundfile as sf
    from typer.testing import CliRunner

    from unmix.runtime.cli import app

    source = tmp_path / "odd.wav"
    sf.write(str(source), np.zeros((2000, 1), np.float32), rate)
    with pytest.raises(AudioError, match="sample rate") as error:
        separator.separate_file(source, tmp_path / "api")
    assert str(source) in one_line(error)
    assert not (tmp_path / "api").exists()
    result = CliRunner().invoke(
        app,
        [
            "separate",
            "--bundle",
            str(tiny_bundle(tmp_path_factory)),
            "--quiet",
            str(source),
            "-o",
            str(tmp_path / "cli"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(source) in line and "sample rate" in line
    assert not (tmp_path / "cli").exists()


def test_a_fifo_is_named_as_what_it_is_not_as_missing(tmp_path):
    from unmix.runtime.files import find_inputs

    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    [error] = find_inputs([str(fifo)])
    assert isinstance(error, AudioError) and "not a regular file" in str(error)


def test_too_many_channels_in_a_file_name_the_file_and_no_array_hint(separator, tmp_path):
    path = tmp_path / "wide.wav"
    sf.write(path, np.zeros((800, 70), np.float32), 44100)
    with pytest.raises(AudioError, match=r"wide\.wav: 70 channels; unmix separates 1 to 64") as caught:
        separator.separate_file(path, tmp_path / "out")
    assert "(channels, frames)" not in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options,message",
    [
        ({"chunk": 100}, "multiple of the hop"),
        ({"chunk": 0}, "multiple of the hop"),
        ({"chunk": 1.5}, "whole number"),
        ({"chunk": True}, "whole number"),
        ({"chunk": "512"}, "whole number"),
        ({"batch_samples": 0}, "positive"),
        ({"batch_samples": 2.0}, "whole number"),
        ({"stereo": "sides"}, "unknown stereo mode"),
        ({"stereo": "mid", "refine": False}, "needs the refinement"),
    ],
)
def test_bad_separator_options_are_one_line_usage_errors(tmp_path_factory, options, message):
    from unmix.runtime import UnmixError, UsageError

    with pytest.raises(UsageError, match=message) as caught:
        Separator.from_bundle(tiny_bundle(tmp_path_factory), threads=1, **options)
    assert isinstance(caught.value, UnmixError) and isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)
