"""The frozen dataclasses a run is described by, and the networks `model.arch` can name.

Each field declares everything about its key in one place: its type (choices are a Literal, or
`one_of` a table's rows), its default, its range (`bounded`) and the named `train` flag that
sets it (`flag=`, `flagged`). `config/resolve.py` converts and checks values against these
declarations; the CLI derives `train`'s flags, their types and their choices from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from alexnet_dali.config.fields import bounded, flagged, one_of


@dataclass(frozen=True)
class Architecture:
    """A network `model.arch` names: its conv widths and which of the paper's parts it has."""

    widths: tuple[int, int, int, int, int]  # kernels of conv1 ... conv5, both towers together
    towers: bool  # conv2/4/5 grouped per tower (model.towers applies; model parallelism splits)
    lrn: bool  # LRN after conv1 and conv2 (model.lrn applies)
    dropout_on: Literal["outputs", "inputs"]  # of fc6 and fc7: the paper's, torchvision's order
    summary: str  # what `train --help` says of it


# One row per network (as nanoGPT's `from_pretrained` table): model.arch names a row; the model
# (model/alexnet.py), the model-parallel split, the figures and --help read it.
ARCHITECTURES = {
    "paper": Architecture((96, 256, 384, 384, 256), towers=True, lrn=True, dropout_on="outputs",
                          summary="two towers, 96-256-384-384-256, LRN"),
    "owt": Architecture((64, 192, 384, 256, 256), towers=False, lrn=False, dropout_on="inputs",
                        summary="torchvision's one tower"),
}


@dataclass(frozen=True)
class AugmentConfig:
    """The train/eval augmentation recipe (paper section 4.1); every step can be switched off."""

    crop: int = bounded(224, ge=1)  # side of the square crop of the 256x256 shard image (RULES)
    random_crop: bool = True  # False: center crop at train time too (ablation)
    flip: bool = True  # horizontal flip with p=0.5
    pca_noise: bool = flagged(True)  # eigen-colour noise, alpha ~ N(0, pca_std) per image
    pca_std: float = bounded(0.1, ge=0)
    # shift = P·(α∘√λ) ("sqrt": the authors' code, cuda-convnet2, scales with the pixels) or
    # P·(α∘λ) ("eigenvalue": the paper's text read literally; ~115x stronger on ImageNet's 0-255
    # pixels). docs/PIPELINE.md
    pca_scale: Literal["sqrt", "eigenvalue"] = "sqrt"
    # cuda-convnet2 scales each noised training batch by 1/(1 + pca_std) (not in the paper)
    pca_rescale: bool = False
    mean: Literal["channel", "image", "none"] = "channel"  # what is subtracted from each pixel
    std_normalize: bool = flagged(False)  # divide by the per-channel std too (not the paper)
    # Explicit per-channel values (0-255 scale) instead of pca.json's mean / std; empty: pca.json's.
    # Imported torchvision weights use 255·(0.485, 0.456, 0.406) and 255·(0.229, 0.224, 0.225).
    mean_rgb: tuple[float, ...] = bounded((), ge=0, le=255)  # 3 values or none (RULES)
    std_rgb: tuple[float, ...] = bounded((), gt=0)  # 3 values or none (RULES)


@dataclass(frozen=True)
class LoaderConfig:
    """How the DALI pipeline runs and what it hands the trainer (the per-rank batch is derived
    from `TrainConfig.batch_size`, train/builders.py per_rank_batch)."""

    num_threads: int = bounded(2, ge=1, flag="workers")  # DALI CPU threads per rank
    device: Literal["auto", "cpu", "gpu"] = "auto"  # where decoding and augmentation run
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    prefetch: int = bounded(2, ge=1)  # DALI prefetch queue depth
    hw_decoder_load: float = bounded(0.65, ge=0, le=1)  # share of JPEGs for the A100/H100 decoder
    shuffle_buffer: int = bounded(4096, ge=1)  # random_shuffle initial_fill of the reader
    # Each shard's sha256 checked as it is first read, off the training thread
    # (loader/integrity.py): a damaged sample stops the run ("stop"), is held back and counted
    # ("skip"), or: "off".
    shard_check: Literal["stop", "skip", "off"] = flagged("stop", "skip_bad_samples")


@dataclass(frozen=True)
class ModelConfig:
    """The network: the paper's two-tower AlexNet or torchvision's one-weird-trick variant."""

    arch: str = one_of(ARCHITECTURES, "paper", flag=True)  # a row of ARCHITECTURES
    num_classes: int = bounded(1000, ge=1)
    towers: Literal[1, 2] = 2  # 2: conv2/4/5 see their own tower (groups=2); 1: all see all
    lrn: bool = True
    # LRN denominator k + (α/n)·Σa² ("code": what cuda-convnet and Caffe compute with α = 1e-4,
    # n = 5) or k + α·Σa² ("text": the paper's formula read literally). docs/PAPER.md
    lrn_formula: Literal["code", "text"] = "code"
    overlap_pool: bool = True  # 3/2 max pooling; False: 2/2
    dropout: float = bounded(0.5, ge=0, lt=1)  # on fc6 and fc7 only; 0 switches it off
    activation: Literal["relu", "tanh"] = "relu"
    # "code": the authors' code (the 2012 cuda-convnet layer file of the paper's net, and
    # cuda-convnet2): N(0, 0.01), but N(0, 0.03) on conv3-5; "paper": N(0, 0.01) everywhere, as
    # the text prints it; both set biases 1 on conv2/4/5 fc6/7 and 0 elsewhere. "caffe": Caffe's
    # bvlc_alexnet (N(0, 0.005) on fc6/fc7, biases 0.1 where the paper has 1). "he": Kaiming
    # normal, zero biases. docs/TRAINING.md ("Why the paper's recipe stalls")
    init: Literal["code", "paper", "caffe", "he"] = flagged("code")
    # the biases the paper sets to 1 (conv2/4/5, fc6/7) with init "code" or "paper"; 0.1 is
    # Caffe's value, one of the short-run switches (configs/short-run.toml, docs/TRAINING.md)
    bias_one: float = bounded(1.0, ge=0)
    # units of fc6 and fc7 (the paper's 4096; fewer: a smaller net for small data, and the tests'
    # kilobyte-sized checkpoints). Even: model parallelism puts half on each device.
    fc_width: int = bounded(4096, ge=2)


@dataclass(frozen=True)
class OptimConfig:
    """SGD and the learning-rate schedule (paper section 5)."""

    lr: float = bounded(0.01, gt=0, flag=True)
    # "linear": the lr is for a batch of 128 (the paper's) and scales with batch_size (lr x
    # batch_size / 128; Goyal et al. 2017), a short-run switch; "none": lr as given
    lr_scaling: Literal["none", "linear"] = "none"
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(5e-4, ge=0)
    update: Literal["pytorch", "paper"] = flagged("pytorch")
    bias_decay: bool = False  # False: weight decay on weights only (1-D params undecayed)
    bias_lr_mult: float = bounded(1.0, gt=0)  # biases' lr / weights' lr (cuda-convnet2, Caffe: 2)
    schedule: Literal["plateau", "step", "constant"] = flagged("plateau")
    plateau_patience: int = bounded(1, ge=1)  # epochs without val-error improvement, then /10
    max_drops: int = bounded(3, ge=0)  # the paper divides the lr by 10 three times in all
    step_epochs: tuple[int, ...] = bounded((30, 60, 80), ge=0)  # 0-based epochs that drop it
    warmup_epochs: int = bounded(0, ge=0)
    # short runs (docs/TRAINING.md): the lr rises linearly over the first warmup_steps steps;
    # the plateau rule counts no epoch whose val error is at chance (train/runlog.at_chance)
    warmup_steps: int = bounded(0, ge=0)
    hold_at_chance: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimiser, loop and checkpoint settings."""

    data: str = ""
    run_dir: str = flagged("runs/alexnet")
    epochs: int = bounded(90, ge=1, flag=True)
    batch_size: int = bounded(128, ge=1, flag=True)  # global: divided evenly across ranks
    seed: int = bounded(0, ge=0, flag=True)
    device: Literal["auto", "cpu", "cuda"] = flagged("auto")
    precision: Literal["auto", "fp32", "bf16"] = flagged("auto")  # auto: bf16 on GPU, fp32 on CPU
    channels_last: bool | None = None  # None: on for GPU, off for CPU
    compile: bool = flagged(False)
    model_parallel: bool = flagged(False)
    keep_checkpoints: int = bounded(3, ge=1, flag=True)
    log_every: int = bounded(10, ge=1, flag=True)  # steps between metric lines
    max_steps_per_epoch: int = bounded(0, ge=0, flag=True)  # 0: the whole epoch (smoke tests)
    deterministic: bool = flagged(False)
    checkpoint_every: int = bounded(0, ge=0, flag=True)  # steps between mid-epoch checkpoints
    threads: int = bounded(0, ge=0, flag=True)  # torch intra-op threads per rank; 0: torch's
    tensorboard: bool = True  # RUN/tensorboard event files when tensorboard is installed
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
