"""The paper's two training phases as library calls: `train_phase1` trains a VQ-VAE (SE → codebook → SD) on
one source, `train_phase2` a mixture encoder ME that matches the frozen SE and gives the deployable separator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import WEIGHTS_FILE, Checkpoint, CheckpointError, build_encoder, build_vqvae, read_checkpoint
from .config import VQVAEConfig, resolve_config
from .data import SOURCES, STEMS, default_validation_count, find_songs, split_songs
from .distributed import Cluster, connect
from .losses import encoder_loss, vqvae_loss
from .metrics import scaled_mixture
from .model import VQVAE, Encoder, StemSeparator
from .options import OptionsError, TrainOptions, WeightSource
from .runs import RunFolder, resolve_checkpoint
from .sampling import ALL, ChunkSampler, expand_sources
from .stats import DataStats, measure_stats
from .trainer import Setup, Task, Trainer
from .validation import Predict, mean_sdr

PHASE1_STEMS = (*SOURCES, ALL)


def checkpoint_sha256(checkpoint: Checkpoint) -> str:
    """sha256 of a checkpoint's weights file (ours: model.safetensors; Jukebox's: the pickle)."""
    path = checkpoint.path / WEIGHTS_FILE if checkpoint.path.is_dir() else checkpoint.path
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_weights(source: WeightSource, trust_pickle: bool) -> Checkpoint:
    """The checkpoint `source` names (a run folder stands for its latest checkpoint), in the format it announces."""
    assert source.path is not None  # callers never pass `scratch`, the only source without a path
    checkpoint = read_checkpoint(resolve_checkpoint(source.path), trust_pickle=trust_pickle)
    if (checkpoint.format == "unmix") != (source.kind == "unmix"):
        raise CheckpointError(f"{source.path}: a {checkpoint.format} checkpoint, not what {source.kind}: expects")
    return checkpoint


def _provenance(prefix: str, source: WeightSource, checkpoint: Checkpoint | None) -> dict:
    record: dict[str, object] = {prefix: str(source)}
    if checkpoint is not None:
        record |= {f"{prefix}_sha256": checkpoint_sha256(checkpoint), f"{prefix}_step": checkpoint.step}
    return record


def _prepare(
    options: TrainOptions,
    cluster: Cluster,
    run: RunFolder,
    resumed: dict | None,
    config: VQVAEConfig,
    sources: Sequence[str],
) -> Setup:
    """Find and split the songs, build the sampler and measure (or, resuming, reload) the statistics."""
    if options.chunk % config.hop_length:
        raise OptionsError(f"--chunk {options.chunk} is not a multiple of the model's hop ({config.hop_length})")
    augment = options.augmentation
    songs = find_songs(options.data, expand_sources(sources, options.remix, augment), config.sample_rate)
    count = default_validation_count(len(songs)) if options.val_songs is None else options.val_songs
    training, validation = split_songs(songs, count)
    sampler = ChunkSampler(
        training,
        options.chunk,
        sources,
        options.seed,
        shift=options.shift,
        blend=options.blend,
        remix=options.remix,
        augment=augment,
    )
    if resumed is not None:
        stats = DataStats.from_dict(resumed["data_stats"])
    else:
        stats = measure_stats(sampler.stats_chunks(options.stats_chunks))
    unseen = []
    if options.val_data is not None:  # scored beside the usual split, never trained on
        unseen = find_songs(options.val_data, expand_sources(sources, 0.0), config.sample_rate, split="test")
    return Setup(options, cluster, run, resumed, config, sampler, validation, stats, unseen)


class VQVAETask(Task):
    """Phase 1: the VQ-VAE reconstructs its source; SE, SD and (by EMA) the codebook learn."""

    role = "vqvae"

    def __init__(self, setup: Setup, stem: str, vqvae: VQVAE, provenance: dict):
        super().__init__(setup, stem, vqvae, provenance)
        self.vqvae = vqvae

    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch[:, 0]
        with self.setup.autocast():
            reconstruction, commit, codebook_metrics = model(x)
        loss, parts = vqvae_loss(x, reconstruction.float(), commit, self.setup.stats)
        return loss, parts | codebook_metrics

    def validate(self) -> dict[str, float | None]:
        """Reconstruction SDR (SE → codebook → SD) of each source on the held-out songs."""
        sources = SOURCES if self.stem == ALL else (self.stem,)
        sets = {"val_sdr": False} | ({"val_unseen_sdr": True} if self.setup.unseen_songs else {})
        self.vqvae.eval()
        try:
            scores = {
                (name, source): _score(self.setup, lambda x: self.vqvae(x)[0], source, source, unseen=unseen)
                for name, unseen in sets.items()
                for source in sources
            }
        finally:
            self.vqvae.train()
        record: dict[str, float | None] = {}
        for name in sets:
            known = [score for (kind, _), score in scores.items() if kind == name and score is not None]
            record[name] = sum(known) / len(known) if known else None
        if len(sources) > 1:
            record |= {f"val_sdr_{source}": scores["val_sdr", source] for source in sources}
        return record

    def deploy_state(self) -> dict[str, Tensor]:
        return self.vqvae.state_dict()


class EncoderTask(Task):
    """Phase 2: ME learns to map the mixture onto the frozen SE's embedding of the stem."""

    role = "separator"

    def __init__(self, setup: Setup, stem: str, separator: VQVAE, stem_encoder: Encoder, provenance: dict):
        super().__init__(setup, stem, separator.encoder, provenance)
        self.separator, self.stem_encoder = separator, stem_encoder
        self.baseline: float | None = None
        self.unseen_baseline: float | None = None

    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mixture, stem = batch[:, 0], batch[:, 1]
        with torch.no_grad(), self.setup.autocast():
            target = self.stem_encoder(stem)
        with self.setup.autocast():
            prediction = model(mixture)
        return encoder_loss(prediction.float(), target.float())

    def validate(self) -> dict[str, float | None]:
        """Separation SDR of ME → codebook → SD on held-out mixtures, beside the mixture/4 baseline's."""
        separate = StemSeparator.from_vqvae(self.separator)
        if self.baseline is None:
            self.baseline = _score(self.setup, scaled_mixture, "mixture", self.stem)
        record = {
            "val_sdr": _score(self.setup, lambda x: separate(x)[0], "mixture", self.stem),
            "val_sdr_scaled_mixture": self.baseline,
        }
        if self.setup.unseen_songs:
            if self.unseen_baseline is None:
                self.unseen_baseline = _score(self.setup, scaled_mixture, "mixture", self.stem, unseen=True)
            record["val_unseen_sdr"] = _score(self.setup, lambda x: separate(x)[0], "mixture", self.stem, unseen=True)
            record["val_unseen_sdr_scaled_mixture"] = self.unseen_baseline
        return record

    def deploy_state(self) -> dict[str, Tensor]:
        """The whole deployable model: `encoders.0` is ME; decoder and codebook are phase 1's."""
        return self.separator.state_dict()


def _score(setup: Setup, predict: Predict, input_source: str, target_source: str, unseen: bool = False) -> float | None:
    options = setup.options
    return mean_sdr(
        setup.unseen_songs if unseen else setup.validation_songs,
        predict,
        input_source,
        target_source,
        options.chunk,
        options.val_chunks,
        options.batch,
        setup.device,
    )


def _phase1_config(name: str | None, checkpoint: Checkpoint | None) -> VQVAEConfig:
    """--config, or the init checkpoint's model shape (which --config, if given, must equal)."""
    try:
        chosen = resolve_config(name) if name else None
    except ValueError as error:
        raise OptionsError(str(error)) from None
    if checkpoint is None:
        return chosen or resolve_config("paper")
    if chosen is not None and chosen != checkpoint.config:
        raise OptionsError(f"--config {name} differs from the model of {checkpoint.path}")
    return checkpoint.config


def build_phase1(options: TrainOptions, cluster: Cluster) -> VQVAETask:
    """Everything phase 1 needs, checked before anything is written."""
    if options.stem not in PHASE1_STEMS:
        raise OptionsError(f"--stem {options.stem!r}: phase 1 takes one of {', '.join(PHASE1_STEMS)}")
    if options.vqvae is not None:
        raise OptionsError("--vqvae belongs to phase 2")
    run = RunFolder(options.out)
    resumed = run.check(options, VQVAETask.role, cluster.world_size)
    init = WeightSource.parse(options.init or "scratch")
    checkpoint = None
    if resumed is not None:  # the weights come from the training state
        config, provenance = VQVAEConfig.from_dict(resumed["model"]), resumed["provenance"]
    else:
        checkpoint = None if init.kind == "scratch" else _read_weights(init, options.trust_pickle)
        config, provenance = _phase1_config(options.config, checkpoint), _provenance("init", init, checkpoint)
    setup = _prepare(options, cluster, run, resumed, config, (options.stem,))
    torch.manual_seed(options.seed)
    vqvae = (build_vqvae(checkpoint) if checkpoint is not None else VQVAE(config)).to(setup.device)
    # Only a loaded codebook is restored: a scratch run's codebook starts from the first batch's encoder outputs
    # (init_k). The paper's scratch runs called restore_k on the all-zero codebook as well, so init_k never ran.
    if checkpoint is not None:
        # Jukebox's restore_k: the loaded codebook counts as already trained on one step of tokens.
        vqvae.codebook.restore_k((options.chunk // config.hop_length) * options.batch * cluster.world_size)
    return VQVAETask(setup, options.stem, vqvae, provenance)


def _check_stem_vqvae(checkpoint: Checkpoint, stem: str) -> None:
    role, trained_on = checkpoint.meta.get("role"), checkpoint.meta.get("stem")
    if checkpoint.format == "unmix" and role != VQVAETask.role:
        raise OptionsError(f"{checkpoint.path}: a {role} checkpoint, not a phase-1 VQ-VAE")
    if trained_on in STEMS and trained_on != stem:
        raise OptionsError(f"{checkpoint.path}: a VQ-VAE of {trained_on}, not of {stem}")


def _mixture_encoder(init: WeightSource, stem_encoder: Encoder, options: TrainOptions) -> tuple[Encoder, dict]:
    """ME's starting weights: scratch, another checkpoint's encoder, or (by default) a copy of SE."""
    if init.kind == "scratch":
        torch.manual_seed(options.seed)
        return Encoder(stem_encoder.config), _provenance("init", init, None)
    checkpoint = _read_weights(init, options.trust_pickle)
    if checkpoint.config != stem_encoder.config:
        raise OptionsError(f"{init.path}: its encoder's shape differs from the VQ-VAE's")
    return build_encoder(checkpoint), _provenance("init", init, checkpoint)


def build_phase2(options: TrainOptions, cluster: Cluster) -> EncoderTask:
    """Everything phase 2 needs, checked before anything is written."""
    if options.stem not in STEMS:
        raise OptionsError(f"--stem {options.stem!r}: phase 2 takes one of {', '.join(STEMS)}")
    if not options.vqvae:
        raise OptionsError("phase 2 needs --vqvae: the phase-1 VQ-VAE of this stem")
    if options.config is not None:
        raise OptionsError("--config belongs to phase 1; phase 2 takes the model's shape from --vqvae")
    run = RunFolder(options.out)
    resumed = run.check(options, EncoderTask.role, cluster.world_size)
    source = WeightSource.parse(options.vqvae)
    if source.kind == "scratch":
        raise OptionsError("--vqvae must name a checkpoint (unmix:PATH or jukebox:PATH)")
    vqvae_checkpoint = _read_weights(source, options.trust_pickle)
    _check_stem_vqvae(vqvae_checkpoint, options.stem)
    provenance = _provenance("vqvae", source, vqvae_checkpoint)
    if resumed is not None and resumed["provenance"]["vqvae_sha256"] != provenance["vqvae_sha256"]:
        raise OptionsError(f"{source.path} changed since the run started; its weights differ from the recorded sha256")
    setup = _prepare(options, cluster, run, resumed, vqvae_checkpoint.config, ("mixture", options.stem))
    separator, stem_encoder = build_vqvae(vqvae_checkpoint), build_encoder(vqvae_checkpoint)
    if resumed is not None:
        provenance = resumed["provenance"]
    elif options.init is not None:
        separator.encoders[0], init_record = _mixture_encoder(WeightSource.parse(options.init), stem_encoder, options)
        provenance |= init_record
    else:
        provenance |= {"init": "vqvae-encoder"}
    separator.eval().to(setup.device)
    separator.decoders.requires_grad_(False)
    stem_encoder.eval().requires_grad_(False).to(setup.device)
    return EncoderTask(setup, options.stem, separator, stem_encoder, provenance)


def train_phase1(options: TrainOptions) -> Path:
    """Train (or resume) a phase-1 VQ-VAE; returns its checkpoint folder (role "vqvae").

    The VQ-VAE learns one isolated stem; `stem="mixture"` the mixtures, and `stem="all"` the mixtures and every
    stem, which gives a generic level-0 VQ-VAE to stand in for Jukebox's. Several GPUs run one process each (DDP),
    so every rank's codebook EMA update counts; the paper's DataParallel replicas discarded theirs (see
    bottleneck.py and distributed.py).
    """
    with connect(options.device) as cluster:
        return Trainer(build_phase1(options, cluster)).run()


def train_phase2(options: TrainOptions) -> Path:
    """Train (or resume) a phase-2 mixture encoder; returns the separator checkpoint folder (role "separator").

    ME learns to match the frozen SE(stem) before quantisation; the saved separator is ME → SD's codebook → SD.
    """
    with connect(options.device) as cluster:
        return Trainer(build_phase2(options, cluster)).run()
