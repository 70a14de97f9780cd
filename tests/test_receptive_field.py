"""The receptive fields computed from the config are the ones the network really has."""

import dataclasses

import pytest
import torch

from unmix.train import PAPER, TINY, VQVAE


def _influence_span(output: torch.Tensor, inputs: torch.Tensor) -> tuple[int, int]:
    """First and last input positions whose change moves `output` (via the exact gradient)."""
    (grad,) = torch.autograd.grad(output, inputs)
    nonzero = grad.abs().sum(dim=(0, 1)).nonzero().flatten()
    return int(nonzero[0]), int(nonzero[-1])


def test_paper_fields():
    assert PAPER.encoder_receptive_field() == 91_878
    assert PAPER.decoder_receptive_field() == 11_485
    assert PAPER.hop_length == 8


@pytest.mark.parametrize("config", [TINY, dataclasses.replace(TINY, depth=5, dilation_growth_rate=2)])
def test_encoder_field_is_exact(config):
    torch.manual_seed(0)
    encoder = VQVAE(config).encoder.double()
    length = 8 * (config.encoder_receptive_field() // 8 + 64)
    audio = torch.randn(1, 1, length, dtype=torch.float64, requires_grad=True)
    frame = length // 16  # a frame in the middle, far from both edges
    first, last = _influence_span(encoder(audio)[0, :, frame].sum(), audio)
    assert last - first + 1 == config.encoder_receptive_field()
    # Perturbing just outside the field changes nothing; just inside, it changes the frame.
    with torch.no_grad():
        base = encoder(audio)[0, :, frame]
        for position, changes in ((first - 1, False), (last + 1, False), (first, True), (last, True)):
            moved = audio.clone()
            moved[0, 0, position] += 1.0
            assert (not torch.equal(encoder(moved)[0, :, frame], base)) == changes


def test_paper_encoder_field_is_exact():
    encoder = VQVAE(PAPER).encoder
    length = 8 * 12_000  # enough room for the 91,878-sample field around the middle frame
    audio = torch.randn(1, 1, length, requires_grad=True)
    first, last = _influence_span(encoder(audio)[0, :, 6_000].sum(), audio)
    assert last - first + 1 == 91_878


@pytest.mark.parametrize("config", [TINY, dataclasses.replace(TINY, depth=5, dilation_growth_rate=2)])
def test_decoder_field_is_exact(config):
    torch.manual_seed(0)
    decoder = VQVAE(config).decoder.double()
    frames = config.decoder_receptive_field() * 3
    latent = torch.randn(1, config.emb_width, frames, dtype=torch.float64, requires_grad=True)
    first, last = _influence_span(decoder(latent)[0, 0, frames * 4], latent)
    # One output sample sees this many latent frames, up to the phase of the sample within its frame.
    assert last - first + 1 in (config.decoder_receptive_field(), config.decoder_receptive_field() - 1)
