"""unmix-bench batch: the tracks it times and the table it writes."""

from __future__ import annotations

from unmix.bench.batch import BatchRow, corpus_tracks, markdown
from unmix.bench.musdb import write_synthetic_songs


def test_the_tracks_are_the_songs_mixtures_named_after_their_songs(tmp_path):
    root = write_synthetic_songs(tmp_path / "data", songs=3, seconds=0.5)
    tracks = corpus_tracks(root, "test", 2, tmp_path / "tracks")
    assert [track.name for track in tracks] == [f"{song.name}.wav" for song in sorted((root / "test").iterdir())[:2]]
    assert all(track.resolve().name == "mixture.wav" and track.stat().st_size > 0 for track in tracks)


def test_the_table_compares_each_batch_row_with_unmix_separate():
    rows = [BatchRow("unmix separate", "unmix separate x", 60.0, 240.0, 4.0)]
    rows.append(BatchRow("unmix batch, 1 worker × 2 threads", "unmix batch x", 80.0, 240.0, 3.0, 0.75))
    text = markdown(rows, tracks=8, machine="m", command="unmix-bench batch", date="d")
    assert "| unmix separate | 60.0 s | 4.00 | – |" in text
    assert "| unmix batch, 1 worker × 2 threads | 80.0 s | 3.00 | 0.75× |" in text
