"""``flowforge sample``: draw samples from a trained run into a .npy array, a .png picture or
one PNG per image in a folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from flowforge.cli.eval_command import run_overrides
from flowforge.recipes import plots
from flowforge.recipes.base import describe_sampling
from flowforge.recipes.config import ConfigError, data_kind
from flowforge.recipes.run import check_label, load, read_run_config
from flowforge.solvers.ode import NFE_PER_STEP
from flowforge.utils.io import atomic_path

__all__ = ["sample_command"]


def _check_out(out: Path, folder: bool) -> None:
    if not folder and out.suffix not in (".npy", ".png", ".smi"):
        raise ValueError(
            f"--out={str(out)!r} must end in .npy (array), .png (picture), .smi (SMILES, "
            "molecule runs) or / (a folder, one PNG per image)."
        )
    parent = out if folder else out.parent
    if folder and parent.is_dir():
        return
    if not folder and not parent.is_dir():  # a typo must not silently create directories
        what = "is not a directory" if parent.exists() else "does not exist"
        raise FileNotFoundError(
            f"cannot write --out={str(out)!r}: its directory {parent} {what}; create it "
            "first or choose another path."
        )
    if folder and not parent.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write --out={str(out)!r}: {parent.parent} does not exist; create it first."
        )


def sample_command(
    run: str | os.PathLike,
    *,
    n: int | None = None,
    solver: str | None = None,
    nfe: int | None = None,
    guidance: float | None = None,
    label: int | None = None,
    seed: int | None = None,
    which: str = "ema",
    out: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Draw samples from a run into ``out``: a .npy array (vectors in data units, images in
    [0, 1]), a .png picture (a scatter beside the data, or a grid of images), or a folder
    (``out`` ending in /, or an existing folder) with one PNG per image."""
    run_dir = Path(run)
    read_run_config(run_dir)  # a missing run is named before anything about --out
    folder = out is not None and (str(out).endswith(("/", os.sep)) or Path(out).is_dir())
    out = run_dir / "sample.npy" if out is None else Path(out)
    _check_out(out, folder)
    loaded = load(run_dir)
    run_overrides(loaded, overrides or [], "sample")
    config = loaded.config
    if solver is not None and solver != "dopri5" and nfe is None:
        # Keep the run's budget when it divides; otherwise one step's worth is not a good
        # default, so ask.
        if config.sample.nfe % NFE_PER_STEP.get(solver, 1):
            raise ConfigError(
                f"--solver={solver} cannot spend the run's sample.nfe={config.sample.nfe}; pass "
                f"--nfe with a multiple of {NFE_PER_STEP.get(solver, 1)}."
            )
    if label is not None:
        check_label("--label", label, loaded.data.num_classes)
    kind = data_kind(config)
    image = kind in ("images", "videos")  # pixels (videos: frames)
    if folder and kind != "images":
        what = "vectors: write a .npy array or a .png scatter" if kind != "videos" else (
            "videos: write a .npy array or a .png of filmstrips"
        )  # fmt: skip
        raise ValueError(
            f"--out={str(out)!r} is a folder, which holds one PNG per image; this run samples "
            f"{what}."
        )
    s = loaded.sample_config(n=n, nfe=nfe, solver=solver, guidance=guidance, seed=seed)
    t0 = time.perf_counter()
    drawn = loaded.generate(
        n, nfe=nfe, solver=solver, label=label, guidance=guidance, seed=seed, which=which
    )
    seconds = time.perf_counter() - t0
    x = drawn.x
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(
            f"{bad} of the {x.numel()} sampled values are nan or inf, so nothing was written to "
            f"{out}: the run's weights diverge with {s.solver} at NFE {drawn.nfe}"
            + (f" and guidance {s.guidance:g}" if loaded.data.num_classes else "")
            + "; try another solver or NFE (or --which model), or retrain the run."
        )
    try:
        if folder:
            _write_pngs(out, x)
        elif out.suffix == ".smi":
            lines = loaded.data.to_text(x) if hasattr(loaded.data, "to_text") else None
            if lines is None:
                raise ValueError(
                    f"--out={str(out)!r}: .smi holds molecules and this run samples none; write "
                    "a .npy instead."
                )
            with atomic_path(out) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in lines))
        elif out.suffix == ".npy":
            array = ((x.clamp(-1, 1) + 1) / 2 if image else x).numpy()
            with atomic_path(out) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, array)
        elif image:
            per = 10
            rows = [x[i : i + per] for i in range(0, min(len(x), 10 * per), per)]
            if kind == "videos":  # one filmstrip per video
                rows = list(x[:16])
            what = describe_sampling(s, drawn.nfe, loaded.data.num_classes, _labels(label))
            figure = plots.plot_image_rows(rows, [""] * len(rows), title=f"{run_dir.name}: {what}")
            plots.save_figure(figure, out)
        else:
            reference = loaded.data.fresh(s.n, torch.Generator().manual_seed(s.seed + 1))
            what = describe_sampling(s, drawn.nfe, loaded.data.num_classes, _labels(label))
            labels = None if drawn.labels is None else drawn.labels.numpy()
            figure = plots.plot_samples(
                x.numpy(), reference.numpy(), title=f"{run_dir.name}: {what}", labels=labels,
                columns=loaded.data.columns,
            )  # fmt: skip
            plots.save_figure(figure, out)
    except OSError as e:
        raise PermissionError(
            f"cannot write --out={str(out)!r} ({e.strerror or e}); choose a writable path."
        ) from None
    what = {"images": "images", "videos": "videos"}.get(kind, "samples")
    print(
        f"wrote {len(x)} {what} ({s.solver}, NFE {drawn.nfe}, {seconds:.2f} s) of shape "
        f"{tuple(x.shape)} to {out}"
    )
    return out


def _labels(label: int | None) -> str | None:
    return None if label is None else f"label {label}"


def _write_pngs(folder: Path, x: torch.Tensor) -> None:
    """One PNG per image of ``x`` (n, C, H, W) in [-1, 1]: sample_0000.png, ..."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (n, C, H, W)
    for i, image in enumerate(pixels):
        array = image.permute(1, 2, 0).numpy()  # (H, W, C)
        mode = "L" if array.shape[2] == 1 else "RGB"
        if array.shape[2] not in (1, 3):
            raise ValueError(f"cannot write {array.shape[2]}-channel images as PNG.")
        with atomic_path(folder / f"sample_{i:04d}.png") as tmp:
            Image.fromarray(array[..., 0] if mode == "L" else array, mode).save(tmp, "PNG")
