"""Closing a Separator: a context manager, idempotent, one-line errors after; separate_file's keywords."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import tiny_bundle
from runtime_inputs import write

from unmix.runtime import Cancelled, Separator, SeparatorClosed, UnmixError

BACKENDS = ["ort"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def noise(frames: int = 3000) -> np.ndarray:
    return (0.3 * np.random.default_rng(0).standard_normal((frames, 2))).astype(np.float32)


def load(bundle, backend: str = "ort") -> Separator:
    return Separator.from_bundle(bundle, backend=backend, chunk=2048, threads=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_context_manager_closes_the_separator_and_its_engine(bundle, backend):
    with load(bundle, backend) as separator:
        assert not separator.closed
        stems = separator.separate(noise(), 44100)
    assert separator.closed and set(stems) == set(separator.stems)
    engine = separator._engine
    if backend == "ort":
        assert engine.sessions == {}
    else:
        assert engine._whole is None and engine._nearest is None and engine._staged == {}


def test_the_context_manager_closes_on_an_error_and_lets_it_through(bundle):
    with pytest.raises(Cancelled):
        with load(bundle) as separator:
            separator.separate(noise(), 44100, cancel=lambda: True)
    assert separator.closed


def test_use_after_close_is_one_line(bundle, tmp_path):
    separator = load(bundle)
    stream = separator.stream(44100, 2)  # opened before the close: refused after it too
    separator.close()
    source = write(tmp_path / "a.wav")
    for call in (
        lambda: separator.separate(noise(), 44100),
        lambda: separator.separate(np.zeros((0, 7), np.int16), 44100),  # closed comes first, before the input
        lambda: separator.stream(44100, 2),
        lambda: separator.separate_file(source, tmp_path / "out"),
        lambda: stream.feed(noise()),
        lambda: stream.finish(),
    ):
        with pytest.raises(SeparatorClosed) as raised:
            call()
        assert isinstance(raised.value, UnmixError)
        assert "\n" not in str(raised.value) and "closed" in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_close_is_idempotent(bundle):
    separator = load(bundle)
    separator.close()
    separator.close()
    with separator:  # entering a closed one is allowed; leaving closes again, which does nothing
        pass
    separator._engine.close()  # the engine's own close too
    assert separator.closed
    with pytest.raises(SeparatorClosed):
        separator.separate(noise(), 44100)


def test_separate_file_takes_its_options_by_keyword(bundle, tmp_path):
    source = write(tmp_path / "song.wav", frames=6000, channels=2, rate=44100)
    calls = []
    event = threading.Event()
    with load(bundle) as separator:
        result = separator.separate_file(
            source,
            tmp_path / "out",
            filename="{stem}-{track}.{ext}",
            format="flac",
            overwrite=False,
            progress=lambda done, total: calls.append((done, total)),
            cancel=event,
        )
        assert sorted(p.name for p in result.outputs.values()) == [f"{s}-song.flac" for s in sorted(separator.stems)]
        assert all(sf.info(p).format == "FLAC" for p in result.outputs.values())
        assert calls and calls[-1] == (6000, 6000)
        assert separator.separate_file(source, tmp_path / "out", filename="{stem}-{track}.{ext}", format="flac").skipped
        event.set()  # an event cancels, as a function does
        with pytest.raises(Cancelled):
            separator.separate_file(
                source, tmp_path / "out", filename="{stem}-{track}.{ext}", format="flac", overwrite=True, cancel=event
            )
        with pytest.raises(TypeError):
            separator.separate_file(source, tmp_path / "out", subtype="PCM_16")  # unknown options are refused
        with pytest.raises(TypeError):
            separator.separate_file(source, tmp_path / "out", "{stem}.{ext}")  # options only by keyword
