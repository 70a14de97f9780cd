"""The host side of a streaming step graph (`unmix.export.streaming`): which frames each cached layer returns.

A streaming graph carries, for every convolution, the input history its next outputs need. Its outputs stop
being exact only past the signal's end: there the stateless graph's layers read zero padding, while a stream
fed zeros would compute something. So each call gets `limits`, per layer the number of its output frames that
lie inside the signal, and zeroes the rest. `StreamLayout` follows every layer's position from the state
lengths and the call sizes (the same arithmetic as the graph's convolutions) to compute them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNLIMITED = (1 << 31) - 1  # a limit no call reaches while the end is unknown (int32: OpenVINO computes int64 as int32)


@dataclass(frozen=True)
class CachedLayer:
    """One cached layer of a streaming graph (`unmix.export.streaming.StreamingStemGraph.state_specs`).

    name: its state input; channels: the state's; padding: the stateless layer's left padding (the state's
    initial zeros); span: (kernel − 1)·dilation + 1; stride; upsample: each output frame becomes two (interleave).
    """

    name: str
    channels: int
    padding: int
    span: int
    stride: int
    upsample: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> CachedLayer:
        return cls(
            str(data["name"]),
            int(data["channels"]),
            int(data["padding"]),
            int(data["span"]),
            int(data["stride"]),
            bool(data.get("upsample", False)),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "channels": self.channels,
            "padding": self.padding,
            "span": self.span,
            "stride": self.stride,
            "upsample": self.upsample,
        }


class StreamLayout:
    """Where each layer of one stream stands: the absolute position of its state's first frame, and its length."""

    def __init__(self, layers: list[CachedLayer]):
        self.layers = layers
        self._starts = [-layer.padding for layer in layers]  # at the layer's input rate
        self._held = [layer.padding for layer in layers]

    def initial_states(self, items: int) -> list[np.ndarray]:
        """The states of a new stream: each layer's left padding in zeros, (items, channels, padding)."""
        return [np.zeros((items, layer.channels, layer.padding), np.float32) for layer in self.layers]

    def minimum_call(self) -> int:
        """Samples the first call needs so that every layer returns at least one frame (upper bound)."""
        needed = 1
        for layer in reversed(self.layers):  # frames of the layer's input needed for one output frame
            frames = needed if not layer.upsample else -(-needed // 2)
            needed = max(1, (frames - 1) * layer.stride + layer.span - layer.padding)
        return needed

    def advance(self, samples: int, end: int | None = None) -> tuple[np.ndarray, int]:
        """Account for a call with `samples` new input samples; `end` is the signal's length (padded to the hop)
        once known. Returns the call's `limits` (int64, one per layer) and how many samples it returns."""
        count_in = samples
        valid = end
        limits = np.empty(len(self.layers), np.int64)
        for index, layer in enumerate(self.layers):
            full = self._held[index] + count_in
            count = (full - layer.span) // layer.stride + 1 if full >= layer.span else 0
            first = (self._starts[index] + layer.padding) // layer.stride  # position of this call's first output
            if valid is None:
                limits[index] = UNLIMITED
            else:
                valid = (valid + 2 * layer.padding - layer.span) // layer.stride + 1  # the stateless layer's length
                limits[index] = min(max(0, valid - first), UNLIMITED)
                valid = 2 * valid if layer.upsample else valid
            consumed = count * layer.stride
            self._starts[index] += consumed
            self._held[index] = full - consumed
            count_in = 2 * count if layer.upsample else count
        return limits, count_in
