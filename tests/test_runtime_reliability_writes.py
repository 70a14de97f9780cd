"""Writing stems: a full disk, outputs that are inputs, clashes in a batch, concurrent runs, stale temporaries, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_bundle import STEMS, tiny_bundle
from runtime_inputs import write
from typer.testing import CliRunner

from unmix.runtime.cli import app
from unmix.runtime.manifest import STEMS as FOUR


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, FOUR)


def separate(bundle, *args):
    return CliRunner().invoke(
        app, ["separate", "--bundle", str(bundle), "--chunk", "2048", "--quiet", *[str(a) for a in args]]
    )


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def everything(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def small_disk(tmp_path):
    """A 344 KiB tmpfs: too small for four FLAC stems of a few seconds of noise."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=344k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_a_full_disk_is_one_line_and_leaves_nothing(four, tmp_path, small_disk, fmt):
    source = write(tmp_path / "song.wav", frames=44100 * 3)
    result = separate(four, source, "-o", small_disk, "--format", fmt, "--refine", "--filename", "{stem}.{ext}")
    assert result.exit_code != 0 and "Traceback" not in result.output
    (line,) = errors(result)
    assert "no space left" in line.lower(), line
    assert everything(small_disk) == set(), sorted(everything(small_disk))


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_a_stem_that_does_not_read_back_is_not_renamed(bundle, tmp_path, monkeypatch, fmt):
    """libsndfile does not report a failed close: the read-back check catches what it left."""
    from unmix.runtime import audio

    def truncate_on_close(self):
        self._file.close()
        with open(self.temp, "r+b") as handle:
            handle.truncate(os.path.getsize(self.temp) // 2)
        return original(self)

    original = audio.AtomicWriter._verify
    monkeypatch.setattr(audio.AtomicWriter, "_verify", truncate_on_close)
    source = write(tmp_path / "song.wav", frames=44100)
    result = separate(bundle, source, "-o", tmp_path / "out", "--format", fmt)
    assert result.exit_code == 1
    (line,) = errors(result)
    assert "writing" in line and "failed" in line, line
    assert not (tmp_path / "out").exists() or everything(tmp_path / "out") == set()


def test_a_track_being_written_by_another_process_is_refused(bundle, tmp_path):
    """Another process holds the lock of one stem: one line naming it, nothing written, its lock left alone."""
    import fcntl

    source = write(tmp_path / "song.wav")
    out = tmp_path / "out"
    (out / "song").mkdir(parents=True)
    lock = out / "song" / f".{STEMS[0]}.wav.unmix-lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(lock)!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True)\n"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = separate(bundle, source, "-o", out)
        assert result.exit_code == 1 and "Traceback" not in result.output
        (line,) = errors(result)
        assert "is being written by another unmix process" in line and f"{STEMS[0]}.wav" in line, line
        assert everything(out) == {"song", f"song/{lock.name}"}
    finally:
        holder.kill()
        holder.wait()
    again = separate(bundle, source, "-o", out)  # the holder is gone: its lock file is taken over and removed
    assert again.exit_code == 0, again.output
    assert everything(out) == {"song"} | {f"song/{stem}.wav" for stem in STEMS}
    with open(lock, "w") as free:  # and nobody holds it any more
        fcntl.flock(free, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_stale_temporaries_of_the_stems_written_are_removed(bundle, tmp_path):
    source = write(tmp_path / "song.wav")
    folder = tmp_path / "out" / "song"
    folder.mkdir(parents=True)
    stale = [folder / f".{stem}.wav.0123abcd.part" for stem in STEMS]
    other = folder / ".notes.wav.0123abcd.part"  # not a stem of this run: not ours to remove
    for path in [*stale, other]:
        path.write_bytes(b"RIFF half a stem")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    result = separate(bundle, source, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert everything(folder) == {other.name} | {f"{stem}.wav" for stem in STEMS}


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_an_output_that_is_an_input_is_refused_before_any_work(bundle, tmp_path, overwrite):
    """`unmix separate song.wav out/drums.wav -o out --filename '{stem}.{ext}'` must not overwrite out/drums.wav."""
    out = tmp_path / "out"
    song = write(tmp_path / "song.wav")
    victim = write(out / f"{STEMS[0]}.wav", frames=3000)
    before = victim.read_bytes()
    result = separate(bundle, song, victim, "-o", out, "--filename", "{stem}.{ext}", *overwrite)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = errors(result)
    assert len(lines) == 2 and all("is an input of this run" in line for line in lines), lines
    assert str(song) in lines[0] and str(victim) in lines[1]
    assert victim.read_bytes() == before
    assert everything(out) == {victim.name}


def test_tracks_that_clash_are_refused_before_any_work(bundle, tmp_path):
    first, second = write(tmp_path / "a" / "song.wav"), write(tmp_path / "b" / "song.flac", format="FLAC")
    result = separate(bundle, first, second, "-o", tmp_path / "out", "--filename", "{stem}.wav", "--format", "wav")
    assert result.exit_code == 1
    (line,) = errors(result)
    assert str(second) in line and str(first) in line and "{trackext}" in line
    assert result.stderr.splitlines().index(line) == 0  # reported before the first track ran
    assert everything(tmp_path / "out") == {f"{stem}.wav" for stem in STEMS}
    assert "1 separated" in result.stdout and "1 failed" in result.stdout


def _restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's Ctrl-C finds it (see test_runtime_cli)


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize(
    "stop, code, word",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl-c", "sigterm"],
)
@pytest.mark.parametrize("library", ["numpy", "openvino_intel_cpu"], ids=["importing", "loading"])
def test_ctrl_c_while_starting_is_one_line_and_130(bundle, tmp_path, library, stop, code, word):
    """Ctrl-C (SIGTERM) during the imports or the model's loading: `interrupted: …` (`terminated: …`), exit 130
    (143), no traceback, nothing written."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see how far the process got")
    source = write(tmp_path / "song.wav")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unmix.runtime.cli",
            "separate",
            str(source),
            "-o",
            str(out),
            "--bundle",
            str(bundle),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_restore_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while not _loaded(process.pid, library) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if process.poll() is not None:
            pytest.skip(f"the run ended before {library} was seen loading")
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"{word}: "), line
    assert not out.exists()


def test_a_second_unmix_process_on_the_same_output_refuses(bundle, tmp_path):
    """Two `unmix separate` runs into one -o: the second refuses with one line while the first writes."""
    source = write(tmp_path / "long.wav", frames=44100 * 60)  # minutes of work at --chunk 256
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
        "--threads",
        "1",
        "-q",
    ]
    first = subprocess.Popen([*command, "--chunk", "256"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.rglob(".*.part"))) < len(STEMS) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        second = subprocess.run([*command, "--chunk", "2048"], capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    (line,) = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert "is being written by another unmix process" in line, line
    assert not any(p.suffix in {".wav"} and not p.name.startswith(".") for p in out.rglob("*"))
    # The first run was SIGKILLed: its temporaries and lock files stay, until the next run of that track.
    assert len(list(out.rglob(".*.part"))) == len(STEMS)
    again = subprocess.run([*command, "--chunk", "2048", "--overwrite"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert everything(out) == {"long"} | {f"long/{stem}.wav" for stem in STEMS}
