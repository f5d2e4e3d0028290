"""Image runs: digits, shapes and image folders, in pixels or in an autoencoder's latents.

One ``ImageData`` describes a run's images in data space (``[-1, 1]``), their labels and masks,
the held-out split used by the metrics, the condition channels of the flow (``data.channels``:
none, one-hot masks, or inpainting's masked image and mask) and the space the flow lives in
(pixels, or the latents of a trained autoencoder run through a ``LatentCodec``). Its network is
a UNet or a DiT; ``generate`` draws images under every condition with any recipe's sampler,
and ``flowforge.recipes.image_eval`` measures and plots them.
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

from flowforge.data.digits import load_digits_tensor
from flowforge.data.images import folder_has_classes, load_image_folder
from flowforge.data.masks import box_masks, inpainting_condition, paste_known
from flowforge.data.shapes import make_shapes
from flowforge.latent.autoencoder import AutoencoderConfig, ConvAutoencoder
from flowforge.latent.codec import LatentCodec, encode_dataset
from flowforge.losses.symmflow import masks_to_channels
from flowforge.models.dit import DiTConfig, DiTField
from flowforge.models.unet import UNetConfig, UNetField
from flowforge.recipes import image_eval
from flowforge.recipes.base import Recipe, RunData, Sampler, Samples
from flowforge.recipes.config import ConfigError, DataConfig, ModelConfig, RunConfig
from flowforge.recipes.config_io import load_yaml
from flowforge.train.checkpoint import CONFIG_FILE, load_weights
from flowforge.utils.io import atomic_path

__all__ = [
    "CODEC_FILE",
    "ImageData",
    "adapt_to_folder",
    "build_autoencoder",
    "build_images",
    "load_codec",
    "load_images",
    "save_codec",
]

CODEC_FILE = "codec.safetensors"  # the frozen autoencoder and latent statistics of an LFM run
CODEC_CONFIG = "codec.json"  # the settings of the codec's autoencoder
DATA_INFO = "data.json"
_TEST_SHAPES = 2048  # held-out shapes drawn with another seed
_TEST_SHARE = 0.1  # held-out share of a user's image folder


@dataclass
class ImageData(RunData):
    """A run's images and the space its flow lives in.

    Attributes:
        train_x, test_x: (N, C, H, W) images in [-1, 1] (data space), disjoint.
        train_labels, test_labels: (N,) classes in 0..label_classes-1, or None.
        train_masks, test_masks: (N, H, W) segmentation classes (shapes), or None.
        label_classes: classes of the labels (the feature classifier's classes); 0 if none.
        num_classes: classes the flow is conditioned on (0 unless data.conditional).
        mask_classes: segmentation classes (shapes: background + 3), 0 if none.
        shape: (C, H, W) of the flow's state (the latent shape with a codec).
        channels: the condition channels (``data.channels``: none, mask or inpaint).
        codec: the latent codec (latent runs) or None.
        codec_saved: the codec was read from the run directory (``save`` keeps that file).
        train: the training set in the flow's space, with its condition (labels or channels).
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
    channels: str = "none"
    codec: LatentCodec | None = None
    codec_saved: bool = False
    train: TensorDataset | None = field(default=None, repr=False)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the images in data space."""
        return tuple(self.train_x.shape[1:])

    @property
    def cond_channels(self) -> int:
        """Channels concatenated to the flow's state: masks, or inpainting's image + mask."""
        C = self.image_shape[0]
        return {"none": 0, "mask": self.mask_classes, "inpaint": C + 1}[self.channels]

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

    def to_data(self, x: Tensor) -> Tensor:
        """Flow space -> images in [-1, 1]."""
        return self.decode(x)

    def network(self, model: ModelConfig, n_times: int = 1, channels: int | None = None):
        """The UNet or DiT of ``model`` on the flow's state (``channels`` of it, if given),
        taking the condition channels and labels of the run."""
        return _flow_net(model, self, n_times, channels)

    def describe(self) -> str:
        """The training banner's words on the data."""
        space = "latents " + "x".join(map(str, self.shape)) if self.codec else "pixels"
        return f"{len(self.train_x)} images ({space})"

    def save(self, run_dir: Path) -> None:
        """Write data.json (the flow's state shape) and, for a latent run, its codec."""
        with atomic_path(Path(run_dir, DATA_INFO)) as tmp:
            tmp.write_text(json.dumps({"kind": "image", "shape": list(self.shape)}, indent=1))
        kept = self.codec_saved and Path(run_dir, CODEC_FILE).is_file()  # a resumed run's own
        if self.codec is not None and not kept:
            save_codec(self.codec, run_dir)

    @torch.no_grad()
    def generate(
        self,
        sampler: Sampler,
        n: int,
        nfe: int,
        solver: str,
        generator: torch.Generator,
        labels: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> Samples:
        """``n`` images of ``sampler`` at ``nfe`` evaluations, conditioned as trained.

        Conditions come from the held-out split: its masks (mask-to-image) or its images with
        fresh box holes (inpainting, which also samples the same noise with nothing known);
        labels are drawn with the training frequencies unless given.
        """
        x_0 = torch.randn(n, *self.shape, generator=generator, dtype=torch.float32).to(device)
        if self.channels == "mask":
            masks = self.test_masks[:n]
            cond = masks_to_channels(masks, self.mask_classes, torch.float32).to(device)
            x, used = sampler(x_0, solver, nfe, cond)
            return Samples(x=self.decode(x).cpu(), nfe=used, masks=masks)
        if self.channels == "inpaint":
            reference = self.test_x[:n]
            known = box_masks(n, reference.shape[-1], generator=generator)
            cond = inpainting_condition(reference, known).to(device)
            raw, used = sampler(x_0, solver, nfe, cond)
            none = inpainting_condition(reference, torch.zeros_like(known)).to(device)
            free, _ = sampler(x_0, solver, nfe, none)
            raw = self.decode(raw).cpu()
            return Samples(
                x=paste_known(raw, reference, known),
                nfe=used,
                raw=raw,
                known=known,
                reference=reference,
                unconditional=self.decode(free).cpu(),
            )
        if labels is None:
            labels = self.labels(n, generator)
        x, used = sampler(x_0, solver, nfe, None if labels is None else labels.to(device))
        return Samples(x=self.decode(x).cpu(), nfe=used, labels=labels)

    def evaluate(self, recipe: Recipe, model: nn.Module, run_dir, step, progress=True) -> dict:
        """FD, precision/recall, accuracy (and the recipe's own metrics) per solver and NFE."""
        return image_eval.evaluate(recipe, model, self, run_dir, step=step, progress=progress)

    def pictures(self, recipe: Recipe, model: nn.Module, run_dir: Path, step) -> list[Path]:
        """samples.png (one row per class), inpainting.png or mask_pairs.png."""
        return image_eval.pictures(recipe, model, self, run_dir)


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
        folder = load_image_folder(
            config.path,
            size=config.image_size,
            channels=config.image_channels,
            option_names={"size": "data.image_size", "channels": "data.image_channels"},
        )
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
    config = AutoencoderConfig(**json.loads(Path(run_dir, CODEC_CONFIG).read_text()))
    C = config.latent_channels
    codec = LatentCodec(ConvAutoencoder(config).float(), torch.zeros(C), torch.ones(C))
    codec.load_state_dict(load_file(path))
    return codec.eval()


def _fit_codec(autoencoder_run: str, train_x: Tensor, run_dir: Path | None) -> LatentCodec:
    """The run's codec: the one saved in ``run_dir`` (a resumed run), else fitted (saved into
    the run by ``ImageData.save``).

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
    if ae_config.model.arch != "autoencoder":  # only autoencoder runs have this network
        raise ConfigError(
            f"data.autoencoder={autoencoder_run!r} is a {ae_config.method.name!r} run, not an "
            "autoencoder; pass the directory of a run trained with method.name=autoencoder."
        )
    ae = build_autoencoder(ae_config.model, tuple(train_x.shape[1:]))
    load_weights(ae_dir, ae, which="ema")
    return LatentCodec.fit(ae, train_x, generator=torch.Generator().manual_seed(0))


def save_codec(codec: LatentCodec, run_dir: Path) -> None:
    """Write the codec (weights and latent statistics, then its autoencoder's settings)."""
    with atomic_path(Path(run_dir, CODEC_FILE)) as tmp:
        save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(tmp))
    with atomic_path(Path(run_dir, CODEC_CONFIG)) as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(codec.autoencoder.config)))


def adapt_to_folder(config: RunConfig) -> tuple[RunConfig, str | None]:
    """A preset's class-conditional settings, turned off for a flat folder of images (no
    classes to condition on or to score), with a note saying so; other configs unchanged."""
    d = config.data
    if d.path is None or not Path(d.path).is_dir() or folder_has_classes(d.path):
        return config, None
    if not d.conditional and "accuracy" not in config.eval.metrics:
        return config, None
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(d, conditional=False),
        eval=dataclasses.replace(
            config.eval, metrics=[m for m in config.eval.metrics if m != "accuracy"]
        ),
        sample=dataclasses.replace(config.sample, guidance=1.0),
    )
    note = (
        f"data.path={d.path!r} is a flat folder (no class subfolders), so this run trains "
        "unconditionally: data.conditional=false, sample.guidance=1, eval.metrics without "
        "accuracy (put the images in one subfolder per class to train on classes)."
    )
    return config, note


def build_images(
    config: RunConfig, run_dir: Path | None = None, codec: LatentCodec | None = None
) -> ImageData:
    """The images of ``config`` and the training set of its flow.

    For a latent run the codec is read from ``run_dir`` when it holds one, else fitted on the
    training images (``save`` writes it into the run), unless ``codec`` is given (a trained
    run's own codec, see ``load_codec``). Nothing is written here.
    """
    d = config.data
    train_x, test_x, train_y, test_y, train_m, test_m = _load_images(d)
    label_classes = 0 if train_y is None else int(max(train_y.max(), test_y.max())) + 1
    if d.conditional and train_y is None:
        raise ConfigError(
            f"data.conditional=true but {d.path!r} is a flat folder without classes; put the "
            "images in one subfolder per class or set data.conditional=false."
        )
    mask_classes = 0 if train_m is None else 4
    codec_saved = codec is not None or (
        d.autoencoder is not None and run_dir is not None and Path(run_dir, CODEC_FILE).is_file()
    )
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
    elif d.channels == "mask":
        cond = [masks_to_channels(train_m, mask_classes, torch.float32)]
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
        channels=d.channels,
        codec=codec,
        codec_saved=codec_saved,
        train=TensorDataset(state, *cond),
    )


def load_images(run_dir: Path, config: RunConfig) -> ImageData:
    """The images of a trained run (latent runs: with their saved codec, not the AE run)."""
    codec = load_codec(run_dir) if config.data.autoencoder is not None else None
    return build_images(config, None, codec=codec)


def build_autoencoder(model: ModelConfig, image_shape: tuple[int, ...]) -> ConvAutoencoder:
    """The convolutional autoencoder of ``model`` for images of ``image_shape`` (float32)."""
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


def _flow_net(
    m: ModelConfig, data: ImageData, n_times: int = 1, channels: int | None = None
) -> nn.Module:
    C, H, W = data.shape
    C = C if channels is None else channels
    extra = data.cond_channels
    if m.arch == "autoencoder":
        raise ConfigError(
            "model.arch='autoencoder' is not a flow network; train it with "
            "method.name=autoencoder, or set model.arch=unet or dit."
        )
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
