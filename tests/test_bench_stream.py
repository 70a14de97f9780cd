"""`unmix-bench stream`: real `unmix separate` and `unmix stream` processes on one track, side by side."""

from __future__ import annotations

import pytest
from runtime_bundle import tiny_bundle

pytest.importorskip("openvino")

from unmix.bench.streaming import markdown, measure, synthetic_track  # noqa: E402


def test_the_stream_rows_report_a_lag_within_their_promise(tmp_path_factory, tmp_path):
    bundle = tiny_bundle(tmp_path_factory, ("drums", "bass", "other", "vocals"))  # all four: refinement too
    track = synthetic_track(
        tmp_path / "track.wav", seconds=2.0, sample_rate=44100
    )  # the model's rate: no resampler delay
    rows = measure(track, bundle=str(bundle), block=0.1, extra=["--backend", "openvino"])
    assert [row.refine for row in rows] == [False, False, False, True, True, True]
    streams = [row for row in rows if row.latency_promised_s is not None]
    assert len(streams) == 2
    for row in rows:
        assert row.wall_s > 0 and row.peak_rss_mib > 50  # a real process that loaded the runtime
    for row in streams:
        assert 0 < row.lag_s <= row.latency_promised_s and row.compute_ratio > 0
    table = markdown(rows, track="t", seconds=2.0, machine="m", command="c", date="d")
    assert table.count("| unmix stream") == 2 and table.count("--stages |") == 2
