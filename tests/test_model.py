"""The level-0 VQ-VAE reproduces Jukebox's shapes, sizes and deployment path."""

import pytest
import torch

from unmix.train import PAPER, TINY, VQVAE, FourStemSeparator, StemSeparator
from unmix.train.bottleneck import nearest_code


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_parameter_counts_match_jukebox():
    model = VQVAE(PAPER)
    assert _count(model.encoder) == 441_856
    assert _count(model.decoder) == 458_177
    assert model.codebook.k.numel() == 131_072
    assert len(model.state_dict()) == 211


def test_paper_key_names_and_shapes():
    state = VQVAE(PAPER).state_dict()
    assert state["encoders.0.level_blocks.0.model.0.0.weight"].shape == (64, 1, 4)
    assert state["encoders.0.level_blocks.0.model.2.1.model.7.model.1.weight"].shape == (64, 64, 3)
    assert state["encoders.0.level_blocks.0.model.3.weight"].shape == (64, 64, 3)
    assert state["decoders.0.level_blocks.0.model.3.1.weight"].shape == (64, 64, 4)  # ConvTranspose [in, out, k]
    assert state["decoders.0.out.weight"].shape == (1, 64, 3)
    assert state["bottleneck.level_blocks.0.k"].shape == (2048, 64)
    assert sum(k.startswith("encoders.0.") for k in state) == 104
    assert sum(k.startswith("decoders.0.") for k in state) == 106


def test_decoder_dilations_are_reversed():
    model = VQVAE(PAPER)
    enc = model.encoder.level_blocks[0].model[0][1].model
    dec = model.decoder.level_blocks[0].model[1][0].model
    assert [b.model[1].dilation[0] for b in enc] == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert [b.model[1].dilation[0] for b in dec] == [2187, 729, 243, 81, 27, 9, 3, 1]
    assert not any(
        isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm, torch.nn.GroupNorm)) for m in model.modules()
    )


@pytest.mark.parametrize("length", [8, 9, 15, 16, 1001, 4096])
def test_output_length_is_hop_floor(length):
    model = VQVAE(TINY).eval()
    with torch.no_grad():
        out, _, _ = model(torch.randn(2, 1, length))
        stem, codes = StemSeparator.from_vqvae(model)(torch.randn(1, 1, length))
    assert out.shape == (2, 1, 8 * (length // 8))
    assert stem.shape == (1, 1, 8 * (length // 8))
    assert codes.shape == (1, length // 8)


def test_separator_is_argmin_then_decoder():
    torch.manual_seed(0)
    vqvae, mixture_encoder = VQVAE(TINY).eval(), VQVAE(TINY).encoder.eval()
    mixture = torch.randn(2, 1, 800)
    vqvae.codebook.init_k(torch.randn(500, TINY.emb_width))
    separator = StemSeparator.from_vqvae(vqvae, mixture_encoder)
    with torch.no_grad():
        stem, codes = separator(mixture)
        z = mixture_encoder(mixture).permute(0, 2, 1)  # (N, T', C)
        brute = torch.cdist(z, vqvae.codebook.k.expand(2, -1, -1)).argmin(-1)
        expected = vqvae.decoder(vqvae.codebook.k[brute].permute(0, 2, 1))
    assert torch.equal(codes, brute)
    torch.testing.assert_close(stem, expected)


def test_four_stem_separator_runs_each_stem():
    torch.manual_seed(1)
    stems = {name: StemSeparator.from_vqvae(VQVAE(TINY).eval()) for name in ("drums", "bass", "other", "vocals")}
    for separator in stems.values():
        separator.codebook.init_k(torch.randn(100, TINY.emb_width))
    mixture = torch.randn(1, 1, 640)
    with torch.no_grad():
        out = FourStemSeparator(stems)(mixture)
        assert list(out) == ["drums", "bass", "other", "vocals"]
        for name, audio in out.items():
            torch.testing.assert_close(audio, stems[name](mixture)[0])


def test_nearest_code_ties_go_to_lowest_index():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    codes, _ = nearest_code(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), codebook)
    assert codes.tolist() == [0, 0]
