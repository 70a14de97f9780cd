"""`unmix batch` on a real local Ray instance (2 CPUs): what unmix separate writes, bad files recorded, workers
that die retried, interrupted jobs resumed without redoing anything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import tiny_bundle
from typer.testing import CliRunner

from unmix.runtime.cli import app
from unmix.runtime.manifest import STEMS

ray = pytest.importorskip("ray")

from unmix.runtime.batch import LEDGER_FILE, OutputOptions, SeparatorOptions, list_tracks, run_batch  # noqa: E402

FILENAME = "{track}/{stem}.{ext}"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, STEMS)


@pytest.fixture
def catalog(tmp_path):
    """Five good tracks (one in a subfolder, FLAC), a corrupt one, and a track whose stems would go where
    another's go (the same name in another folder)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "catalog"
    (folder / "more").mkdir(parents=True)
    for index in range(4):
        audio = (0.2 * rng.standard_normal((6000 + 1000 * index, 2))).astype(np.float32)
        sf.write(folder / f"song{index}.wav", audio, 16000, subtype="FLOAT")
    sf.write(folder / "more" / "song4.flac", (0.2 * rng.standard_normal((5000, 1))).astype(np.float32), 22050)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    (folder / "more" / "song0.wav").write_bytes((folder / "song0.wav").read_bytes())
    return folder


def options(bundle) -> SeparatorOptions:
    return SeparatorOptions(bundle=str(bundle), backend="openvino", precision="fp32")


def outputs(folder) -> dict[str, tuple]:
    """Every stem file under `folder`: its format and its samples' exact bits (float WAV headers hold a timestamp)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".jsonl":
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            found[str(path.relative_to(folder))] = (sf.info(path).subtype, rate, audio.shape, audio.tobytes())
    return found


def ledger_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def separated_by_unmix_separate(bundle, catalog, tmp_path) -> dict[str, bytes]:
    """What the `unmix separate` command writes for `catalog` (its own process, as a user runs it)."""
    reference = tmp_path / "reference"
    unmix = str(Path(sys.executable).parent / "unmix")
    args = [unmix, "separate", str(catalog), "-o", str(reference), "--filename", FILENAME, "--bundle", str(bundle)]
    subprocess.run([*args, "--backend", "openvino", "--precision", "fp32", "--threads", "1", "-q"], check=False)
    return outputs(reference)


def test_a_batch_writes_what_separate_writes_and_records_what_it_refuses(local_ray, bundle, catalog, tmp_path):
    out = tmp_path / "out"
    destination = OutputOptions(str(out), FILENAME)
    tracks, refused = list_tracks([str(catalog)], destination, STEMS)
    assert len(tracks) == 5 and len(refused) == 2
    assert any("corrupt.wav" in problem for problem in refused)
    assert any("song0.wav" in problem and "would go where" in problem for problem in refused)
    summary = run_batch(tracks, options(bundle), destination, STEMS, workers=2)
    assert (summary.done, summary.skipped, summary.failed) == (5, 0, 0)
    assert outputs(out) == separated_by_unmix_separate(bundle, catalog, tmp_path)  # byte for byte
    rows = ledger_rows(out / LEDGER_FILE)
    assert sorted(row["track"] for row in rows) == sorted(tracks)
    assert {row["status"] for row in rows} == {"done"} and len({row["worker"] for row in rows}) == 2
    assert all(row["audio_seconds"] > 0 and row["wall_seconds"] > 0 for row in rows)


def test_a_killed_worker_has_its_track_retried_on_another(local_ray, bundle, catalog, tmp_path):
    out = tmp_path / "out"
    destination = OutputOptions(str(out), FILENAME)
    tracks, _ = list_tracks([str(catalog)], destination, STEMS)
    workers: list = []

    def kill_one(row: dict) -> None:
        if len(workers) == 2:  # after the first track: the other worker is busy, or gets the next track
            ray.kill(workers.pop(0))

    summary = run_batch(
        tracks, options(bundle), destination, STEMS, workers=2, on_workers=workers.extend, on_row=kill_one
    )
    # A worker killed between renaming its track's stems into place and returning leaves them whole: the retry
    # finds them and skips the track. Either way every track is separated once, and none failed.
    assert (summary.done + summary.skipped, summary.failed) == (5, 0) and summary.skipped <= 1
    rows = ledger_rows(out / LEDGER_FILE)
    assert max(row["attempts"] for row in rows) == 2
    assert outputs(out) == separated_by_unmix_separate(bundle, catalog, tmp_path)
    assert not list(out.rglob(".*.part"))  # nothing half-written left by the killed worker


def test_a_rerun_after_an_interrupted_job_finishes_the_rest_and_redoes_nothing(local_ray, bundle, catalog, tmp_path):
    out = tmp_path / "out"
    destination = OutputOptions(str(out), FILENAME)
    tracks, _ = list_tracks([str(catalog)], destination, STEMS)
    finished: list[dict] = []

    def interrupt(row: dict) -> None:
        finished.append(row)
        if len(finished) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(tracks, options(bundle), destination, STEMS, workers=2, on_row=interrupt)
    assert not list(out.rglob(".*.part"))
    kept = {path: path.stat().st_mtime_ns for path in out.rglob("*.wav")}
    assert kept and len(kept) < 4 * 5

    summary = run_batch(tracks, options(bundle), destination, STEMS, workers=2)
    # the two recorded, and any a worker finished between the interrupt and its kill, are skipped
    assert summary.skipped >= 2 and summary.skipped + summary.done == 5 and summary.failed == 0
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())  # not written again
    rows = ledger_rows(out / LEDGER_FILE)
    assert len(rows) == 2 + 5 and len({row["run"] for row in rows}) == 2
    assert outputs(out) == separated_by_unmix_separate(bundle, catalog, tmp_path)


def test_unmix_batch_reports_one_summary_and_fails_for_a_bad_file(bundle, catalog, tmp_path):
    """The command as users run it: its own local Ray, a URI among the inputs, exit 1 for the refused files."""
    shutil.copy(catalog / "song1.wav", tmp_path / "remote.wav")
    out = tmp_path / "out"
    args = ["batch", str(catalog), f"file://{tmp_path}/remote.wav", "-o", str(out), "--bundle", str(bundle)]
    result = CliRunner().invoke(app, [*args, "--filename", FILENAME, "--workers", "2", "-q"])
    assert result.exit_code == 1, result.output
    assert "8 tracks: 6 separated, 0 skipped, 2 failed" in result.output
    assert sorted(p.name for p in (out / "remote").iterdir()) == sorted(f"{stem}.wav" for stem in STEMS)
    rows = ledger_rows(out / LEDGER_FILE)  # the refused files are rows too
    assert [row["status"] for row in rows].count("failed") == 2 and any(
        "corrupt.wav" in row["error"] for row in rows if row["error"]
    )
