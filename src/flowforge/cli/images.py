"""Image runs: data, networks, objectives and sampling for digits, shapes and image folders.

One ``ImageData`` describes a run's images in data space (``[-1, 1]``), their labels and masks,
the held-out split used by the metrics, and the space the flow lives in (pixels, or the latents
of a trained autoencoder run through a ``LatentCodec``). ``draw`` produces images for every kind
of run with the same solvers as vector runs; ``flowforge.cli.image_eval`` measures and plots them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from flowforge.cli.build import build_field, build_objective, generate
from flowforge.cli.config import ConfigError, DataConfig, ModelConfig, RunConfig, SampleConfig
from flowforge.cli.config_io import load_yaml
from flowforge.cli.distill_config import TWO_TIME_OBJECTIVES
from flowforge.cli.fewstep import FewStepSampler, TeacherBuilder, run_teacher
from flowforge.data.digits import load_digits_tensor
from flowforge.data.images import load_image_folder
from flowforge.data.masks import box_masks, inpainting_condition, paste_known
from flowforge.data.shapes import make_shapes
from flowforge.distill.blockwise import BlockwiseField
from flowforge.distill.flowturbo import ConcatRefiner
from flowforge.latent.autoencoder import AutoencoderConfig, AutoencoderLoss, ConvAutoencoder
from flowforge.latent.codec import LatentCodec, encode_dataset
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.losses.inpainting import InpaintingLoss
from flowforge.losses.symmflow import SymmFlowLoss, masks_to_channels
from flowforge.models.dit import DiTConfig, DiTField
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.solvers.symmflow import symmflow_generate, symmflow_segment
from flowforge.train.checkpoint import CONFIG_FILE, load_weights
from flowforge.utils.io import atomic_path

__all__ = [
    "ImageData",
    "build_image_data",
    "build_image_model",
    "build_image_objective",
    "draw",
    "Drawn",
    "CODEC_FILE",
    "image_teacher",
    "load_image_run",
    "load_image_teacher",
]

CODEC_FILE = "codec.safetensors"  # the frozen autoencoder and latent statistics of an LFM run
_TEST_SHAPES = 2048  # held-out shapes drawn with another seed
_TEST_SHARE = 0.1  # held-out share of a user's image folder


@dataclass
class ImageData:
    """A run's images and the space its flow lives in.

    Attributes:
        train_x, test_x: (N, C, H, W) images in [-1, 1] (data space), disjoint.
        train_labels, test_labels: (N,) classes in 0..label_classes-1, or None.
        train_masks, test_masks: (N, H, W) segmentation classes (shapes), or None.
        label_classes: classes of the labels (the feature classifier's classes); 0 if none.
        num_classes: classes the flow is conditioned on (0 unless data.conditional).
        mask_classes: segmentation classes (shapes: background + 3), 0 if none.
        shape: (C, H, W) of the flow's state (latent shape with a codec; image and mask
            channels for SymmFlow).
        codec: the latent codec (latent runs) or None.
        train: the training set in the flow's space, with its condition (labels or channels).
        teacher: the frozen teacher of a flowturbo run (its sampler calls it), else None.
    """

    train_x: Tensor
    test_x: Tensor
    train_labels: Tensor | None
    test_labels: Tensor | None
    train_masks: Tensor | None
    test_masks: Tensor | None
    label_classes: int
    num_classes: int
    mask_classes: int
    shape: tuple[int, ...]
    codec: LatentCodec | None = None
    train: TensorDataset | None = field(default=None, repr=False)
    teacher: nn.Module | None = field(default=None, repr=False)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the images in data space."""
        return tuple(self.train_x.shape[1:])

    @property
    def class_probs(self) -> Tensor:
        """(K,) label frequencies of the training images (uniform draws for K = 0: empty)."""
        if self.train_labels is None or self.num_classes == 0:
            return torch.zeros(0)
        counts = torch.bincount(self.train_labels, minlength=self.num_classes).double()
        return counts / counts.sum()

    def labels(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """(n,) labels drawn with the training frequencies, or None if unconditional."""
        if self.num_classes == 0:
            return None
        return torch.multinomial(self.class_probs, n, replacement=True, generator=generator)

    def decode(self, z: Tensor) -> Tensor:
        """Flow space -> images in [-1, 1] (decoded by the codec for latent runs)."""
        x = z if self.codec is None else self.codec.decode(z.to(self.train_x.dtype))
        return x.clamp(-1, 1)


def _split_folder(x: Tensor, labels: Tensor | None) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    n_test = max(1, round(_TEST_SHARE * len(x)))
    if len(x) - n_test < 2:
        raise ValueError(
            f"the image folder holds {len(x)} images; flowforge keeps {n_test} for the metrics "
            "and needs at least 2 more to train on; add images."
        )
    test, train = perm[:n_test], perm[n_test:]
    return (
        x[train],
        x[test],
        None if labels is None else labels[train],
        None if labels is None else labels[test],
    )


def _load_images(config: DataConfig) -> tuple[Tensor, ...]:
    """(train_x, test_x, train_labels, test_labels, train_masks, test_masks)."""
    if config.path is not None:
        folder = load_image_folder(config.path, size=config.image_size)
        return (*_split_folder(folder.images, folder.labels), None, None)
    if config.name == "digits":
        size = config.image_size or 8
        train_x, train_y = load_digits_tensor(size, "train")
        test_x, test_y = load_digits_tensor(size, "test")
        return train_x, test_x, train_y, test_y, None, None
    if config.name == "shapes":
        size = config.image_size or 32
        train_x, train_m, train_y = make_shapes(
            config.n_train, size, generator=torch.Generator().manual_seed(0)
        )
        test_x, test_m, test_y = make_shapes(
            _TEST_SHAPES, size, generator=torch.Generator().manual_seed(1)
        )
        return train_x, test_x, train_y - 1, test_y - 1, train_m, test_m  # labels 1..3 -> 0..2
    raise ConfigError(f"data.name={config.name!r} is not an image dataset.")


def load_codec(run_dir: Path) -> LatentCodec:
    """The codec saved in an LFM run directory (no code is executed: safetensors)."""
    path = Path(run_dir, CODEC_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; retrain the latent run.")
    config = AutoencoderConfig(**json.loads(Path(run_dir, "codec.json").read_text()))
    C = config.latent_channels
    codec = LatentCodec(ConvAutoencoder(config).float(), torch.zeros(C), torch.ones(C))
    codec.load_state_dict(load_file(path))
    return codec.eval()


def _fit_codec(autoencoder_run: str, train_x: Tensor, run_dir: Path | None) -> LatentCodec:
    """The run's codec: the one saved in ``run_dir`` (a resumed run), else fitted and saved.

    Fitting draws posterior samples from a generator seeded 0, so every rank of a DDP job and
    every restart gets the same latent statistics.
    """
    if run_dir is not None and Path(run_dir, CODEC_FILE).is_file():
        return load_codec(run_dir)
    ae_dir = Path(autoencoder_run)
    if not (ae_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"data.autoencoder={autoencoder_run!r} is not a trained run directory; train one "
            "first, e.g. `flowforge train digits_ae`."
        )
    ae_config = load_yaml(ae_dir / CONFIG_FILE)
    if ae_config.method.objective != "autoencoder":
        raise ConfigError(
            f"data.autoencoder={autoencoder_run!r} is a {ae_config.method.objective!r} run, not "
            "an autoencoder; pass the directory of a run trained with objective=autoencoder."
        )
    ae = _build_autoencoder(ae_config.model, tuple(train_x.shape[1:]))
    load_weights(ae_dir, ae, which="ema")
    codec = LatentCodec.fit(ae, train_x, generator=torch.Generator().manual_seed(0))
    if run_dir is not None:
        with atomic_path(Path(run_dir, CODEC_FILE)) as tmp:
            save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(tmp))
        with atomic_path(Path(run_dir, "codec.json")) as tmp:
            tmp.write_text(json.dumps(_ae_fields(ae.config)))
    return codec


def _ae_fields(config: AutoencoderConfig) -> dict:
    return dataclasses.asdict(config)


def build_image_data(
    config: RunConfig, run_dir: Path | None = None, codec: LatentCodec | None = None
) -> ImageData:
    """The images of ``config`` and the training set of its flow.

    For a latent run the codec is fitted on the training images (and saved into ``run_dir``)
    unless ``codec`` is given (a trained run's own codec, see ``load_codec``).
    """
    d, objective = config.data, config.method.objective
    train_x, test_x, train_y, test_y, train_m, test_m = _load_images(d)
    label_classes = 0 if train_y is None else int(max(train_y.max(), test_y.max())) + 1
    if d.conditional and train_y is None:
        raise ConfigError(
            f"data.conditional=true but {d.path!r} is a flat folder without classes; put the "
            "images in one subfolder per class or set data.conditional=false."
        )
    mask_classes = 0 if train_m is None else 4
    if d.autoencoder is not None and codec is None:
        codec = _fit_codec(d.autoencoder, train_x, run_dir)
    if codec is not None:
        z = encode_dataset(codec, train_x, generator=torch.Generator().manual_seed(0))
        shape, state = tuple(z.shape[1:]), z.float()
    else:
        shape, state = tuple(train_x.shape[1:]), train_x
    cond: list[Tensor] = []
    if d.conditional:
        cond = [train_y]
    elif d.channels == "mask" or objective == "symmflow":
        cond = [masks_to_channels(train_m, mask_classes, torch.float32)]
    if objective == "symmflow":
        shape = (shape[0] + mask_classes, *shape[1:])
    return ImageData(
        train_x=train_x,
        test_x=test_x,
        train_labels=train_y,
        test_labels=test_y,
        train_masks=train_m,
        test_masks=test_m,
        label_classes=label_classes,
        num_classes=label_classes if d.conditional else 0,
        mask_classes=mask_classes,
        shape=shape,
        codec=codec,
        train=TensorDataset(state, *cond),
    )


def cond_channels(config: RunConfig, data: ImageData) -> int:
    """Channels concatenated to the state of the flow's network."""
    C = data.image_shape[0]
    return {"none": 0, "mask": data.mask_classes, "inpaint": C + 1}[config.data.channels]


def _build_autoencoder(model: ModelConfig, image_shape: tuple[int, ...]) -> ConvAutoencoder:
    C, H, _ = image_shape
    return ConvAutoencoder(
        AutoencoderConfig(
            in_channels=C,
            image_size=H,
            latent_channels=model.latent_channels,
            width=model.base_channels,
            downsample=model.downsample,
            kl_weight=model.kl_weight,
        )
    ).float()


def build_image_model(config: RunConfig, data: ImageData) -> nn.Module:
    """The UNet, DiT or autoencoder of ``config.model`` for ``data``, in float32."""
    m = config.model
    if m.arch == "autoencoder":
        return _build_autoencoder(m, data.image_shape).float()
    obj = config.method.objective
    if obj == "flowturbo":
        return _build_image_refiner(config, data)
    if obj == "blockwise":  # M networks of the model's architecture, one per time segment
        return BlockwiseField(
            lambda: _build_flow_net(config, data), config.distill.segments
        ).float()
    return _build_flow_net(config, data, n_times=2 if obj in TWO_TIME_OBJECTIVES else 1)


def _build_image_refiner(config: RunConfig, data: ImageData) -> nn.Module:
    """FlowTurbo's refiner on images: a small UNet on the state and velocity channels."""
    C, d = data.shape[0], config.distill
    unet = UNetConfig(
        in_channels=2 * C,
        out_channels=C,
        base_channels=d.refiner_hidden,
        channel_mults=(1,) * d.refiner_depth,
        mid_attention=False,
        num_classes=data.num_classes,
        time_scale=config.model.time_scale,
    )
    return ConcatRefiner(UNetField(unet)).float()


def _build_flow_net(config: RunConfig, data: ImageData, n_times: int = 1) -> nn.Module:
    m = config.model
    C, H, W = data.shape
    extra = cond_channels(config, data)
    if m.arch == "unet":
        if H % 2 ** (len(m.channel_mults) - 1):
            raise ConfigError(
                f"model.channel_mults={m.channel_mults} halves the {H}x{W} state "
                f"{len(m.channel_mults) - 1} times, which needs a side divisible by "
                f"{2 ** (len(m.channel_mults) - 1)}; use fewer levels."
            )
        unet = UNetConfig(
            in_channels=C,
            cond_channels=extra,
            base_channels=m.base_channels,
            channel_mults=tuple(m.channel_mults),
            mid_attention=m.attention,
            num_classes=data.num_classes,
            dropout=m.dropout,
            n_times=n_times,
            time_scale=m.time_scale,
        )
        return UNetField(unet).float()
    dit = DiTConfig(
        in_channels=C,
        cond_channels=extra,
        input_size=H,
        patch_size=m.patch_size,
        hidden=m.hidden,
        depth=m.depth,
        heads=m.heads,
        num_classes=data.num_classes,
        n_times=n_times,
        time_scale=m.time_scale,
    )
    return DiTField(dit).float()


def build_image_objective(config: RunConfig, data: ImageData):
    """The training objective of an image run."""
    method = config.method
    if method.objective == "autoencoder":
        return AutoencoderLoss()
    if method.objective == "symmflow":
        return SymmFlowLoss(
            x_channels=data.shape[0] - data.mask_classes,
            image_weight=method.image_weight,
            dequant_beta=method.dequant_beta,
        )
    loss = build_objective(method, data.num_classes)
    if config.data.channels == "inpaint":
        assert isinstance(loss, FlowMatchingLoss)
        return InpaintingLoss(loss, p_full=method.inpaint_p_full)
    return loss


@dataclass
class Drawn:
    """Images drawn by ``draw`` (all in data space, [-1, 1], on the CPU).

    Attributes:
        images: (n, C, H, W) the samples (inpainting: with the known pixels pasted back).
        nfe: network evaluations spent per sample.
        labels: (n,) the labels they were conditioned on, or None.
        masks: (n, H, W) the masks they were generated from (mask-to-image, SymmFlow), or None.
        raw: inpainting: the samples before pasting; else None.
        known: inpainting: (n, 1, H, W) known-pixel masks; else None.
        reference: inpainting: the images being completed; else None.
        unconditional: inpainting: samples with nothing known, same noise; else None.
    """

    images: Tensor
    nfe: int
    labels: Tensor | None = None
    masks: Tensor | None = None
    raw: Tensor | None = None
    known: Tensor | None = None
    reference: Tensor | None = None
    unconditional: Tensor | None = None


@torch.no_grad()
def draw(
    model: nn.Module,
    config: RunConfig,
    data: ImageData,
    sample: SampleConfig,
    n: int,
    nfe: int,
    solver: str,
    generator: torch.Generator,
    labels: Tensor | None = None,
) -> Drawn:
    """Generate ``n`` images with ``solver`` at ``nfe`` evaluations, conditioned as trained.

    Conditions come from the held-out split: its masks (mask-to-image, SymmFlow) or its images
    with fresh box holes (inpainting); labels are drawn with the training frequencies unless
    given.
    """
    device = next(model.parameters()).device
    C = data.shape[0]
    kwargs = dict(time_shift=sample.time_shift, atol=sample.atol, rtol=sample.rtol)
    if config.method.objective == "symmflow":
        masks = data.test_masks[:n]
        y = masks_to_channels(masks, data.mask_classes, torch.float32).to(device)
        steps = _steps(solver, nfe)
        x = symmflow_generate(
            model,
            y,
            C - data.mask_classes,
            n_steps=steps,
            method=solver,
            generator=generator,
        )
        return Drawn(images=data.decode(x.float()).cpu(), nfe=nfe, masks=masks)
    x_0 = torch.randn(n, *data.shape, generator=generator, dtype=torch.float32).to(device)
    channels = config.data.channels
    if channels == "mask":
        masks = data.test_masks[:n]
        cond = masks_to_channels(masks, data.mask_classes, torch.float32).to(device)
        x, used = generate(model, x_0, solver, nfe, cond=cond, **kwargs)
        return Drawn(images=data.decode(x).cpu(), nfe=used, masks=masks)
    if channels == "inpaint":
        reference = data.test_x[:n]
        known = box_masks(n, reference.shape[-1], generator=generator)
        cond = inpainting_condition(reference, known).to(device)
        raw, used = generate(model, x_0, solver, nfe, cond=cond, **kwargs)
        none = inpainting_condition(reference, torch.zeros_like(known)).to(device)
        free, _ = generate(model, x_0, solver, nfe, cond=none, **kwargs)
        raw = data.decode(raw).cpu()
        return Drawn(
            images=paste_known(raw, reference, known),
            nfe=used,
            raw=raw,
            known=known,
            reference=reference,
            unconditional=data.decode(free).cpu(),
        )
    if labels is None:
        labels = data.labels(n, generator)
    if solver == "fewstep":  # the few-step method's own sampler
        field = FewStepSampler(config.method.objective, model, data.teacher, config)
    else:
        field = build_field(model, sample, data.num_classes)
    cond = None if labels is None else labels.to(device)
    x, used = generate(field, x_0, solver, nfe, cond=cond, **kwargs)
    return Drawn(images=data.decode(x).cpu(), nfe=used, labels=labels)


def _steps(solver: str, nfe: int) -> int:
    from flowforge.cli.config import check_nfe

    if solver == "dopri5":
        raise ConfigError("SymmFlow runs sample with fixed-step solvers; set sample.solver=euler.")
    return check_nfe("nfe", solver, nfe)


@torch.no_grad()
def segment(
    model: nn.Module, data: ImageData, images: Tensor, solver: str, nfe: int, generator
) -> Tensor:
    """SymmFlow segmentation of ``images`` (data space): (n, H, W) mask classes."""
    device = next(model.parameters()).device
    y = symmflow_segment(
        model,
        images.to(device),
        data.mask_classes,
        n_steps=_steps(solver, nfe),
        method=solver,
        generator=generator,
    )
    return y.argmax(1).cpu()


def load_image_run(run_dir: Path, config: RunConfig, which: str) -> tuple[ImageData, nn.Module]:
    """The images and trained network of an image run (latent runs: with their saved codec)."""
    codec = load_codec(run_dir) if config.data.autoencoder is not None else None
    data = build_image_data(config, None, codec=codec)
    model = build_image_model(config, data)
    load_weights(run_dir, model, which=which)
    data.teacher = load_image_teacher(config, data, run_dir)
    return data, model.eval()


def load_image_teacher(config: RunConfig, data: ImageData, run_dir: Path | None):
    """The frozen teacher a run samples with (flowturbo), else None; from the run's copy."""
    if config.method.objective != "flowturbo":
        return None
    return run_teacher(config, run_dir, image_teacher(data))


def image_teacher(data: ImageData) -> TeacherBuilder:
    """Builds an image run's teacher network (UNet/DiT) from the teacher's config."""
    return lambda teacher_config: build_image_model(teacher_config, data)
