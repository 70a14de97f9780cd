"""Peer separators timed beside unmix: HT-Demucs and Open-Unmix UMX-L from their own packages (`pip install
'unmix[peers]'`), in their published models' configuration and through each package's own inference path, but with
random weights: no model hub is reachable, and speed does not depend on the weights.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from unmix.runtime.manifest import STEMS

PEERS = {
    "htdemucs": "HT-Demucs (demucs {version}, random weights)",
    "umxl": "Open-Unmix UMX-L (openunmix {version}, random weights)",
}
PACKAGES = {"htdemucs": "demucs", "umxl": "openunmix"}


class PeerUnavailable(RuntimeError):
    """The peer's package is not installed."""


def peer_label(name: str) -> str:
    """The row label, with the installed package's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version(PACKAGES[name])
    except PackageNotFoundError:
        installed = "not installed"
    return PEERS[name].format(version=installed)


def peer_separator(name: str, threads: int) -> Callable[[np.ndarray, int], dict[str, np.ndarray]]:
    """A function (frames, 2) float32 at 44.1 kHz → {stem: (frames, 2)} running peer `name` on the CPU."""
    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise PeerUnavailable(f"{PACKAGES[name]} is not installed: pip install 'unmix[peers]'")
    import torch

    torch.set_num_threads(threads)
    if name == "htdemucs":
        return _htdemucs()
    return _umxl()


def _htdemucs():
    """demucs's HTDemucs with its default hyper-parameters (those of the released `htdemucs`, segment 7.8 s), run by
    `demucs.apply.apply_model` with the CLI's defaults (shifts 1, split, overlap 0.25) and the CLI's normalisation
    of the mixture."""
    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=list(STEMS), segment=7.8).eval()

    def separate(audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        mix = torch.from_numpy(np.ascontiguousarray(audio.T))
        reference = mix.mean(0)
        scale = reference.std().clamp_min(1e-8)  # demucs' CLI divides by it; digital silence would give NaN
        mix = (mix - reference.mean()) / scale
        with torch.no_grad():
            sources = apply_model(model, mix[None], shifts=1, split=True, overlap=0.25, progress=False)[0]
        sources = sources * scale + reference.mean()
        return {stem: sources[index].T.numpy() for index, stem in enumerate(model.sources)}

    return separate


def _umxl():
    """openunmix's `umxl` separator (4 BLSTM models of hidden size 1024, 16 kHz bandwidth) with its defaults: one
    Wiener EM iteration on windows of 300 frames. openunmix imports torchaudio for its file I/O, which this row
    does not use; where no torchaudio build matches the installed torch, an empty module stands in for it."""
    import torch

    if importlib.util.find_spec("torchaudio") is None or not _torchaudio_loads():
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # imported by openunmix's I/O helpers only
    import openunmix

    torch.manual_seed(0)
    separator = openunmix.umxl(pretrained=False, device="cpu").eval()

    def separate(audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        with torch.no_grad():
            estimates = separator(torch.from_numpy(np.ascontiguousarray(audio.T))[None])[0]
        return {stem: estimates[index].T.numpy() for index, stem in enumerate(separator.target_models)}

    return separate


def _torchaudio_loads() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # a build for another torch fails in many ways (OSError, ImportError, RuntimeError)
        sys.modules.pop("torchaudio", None)
        return False
    return True


def separate_track(separate, source: str | Path, folder: str | Path) -> None:
    """Decode `source`, separate it, write one 16-bit WAV per stem into `folder` (as the runtime rows do)."""
    audio, rate = sf.read(str(source), dtype="float32", always_2d=True)
    for stem, estimate in separate(audio, rate).items():
        sf.write(Path(folder) / f"{stem}.wav", estimate, rate, subtype="PCM_16")
