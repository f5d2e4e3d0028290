"""``flowforge sample``: draw samples from a trained run into a .npy array or a .png plot."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from flowforge.cli import plots
from flowforge.cli.build import (
    build_data,
    generate,
)
from flowforge.cli.config import (
    ConfigError,
    check_nfe,
    is_image_run,
    validate,
)
from flowforge.cli.config_io import (
    from_dict,
    to_dict,
)
from flowforge.cli.eval_command import load_run
from flowforge.cli.fewstep import run_field
from flowforge.cli.images import ImageData, draw
from flowforge.solvers.ode import NFE_PER_STEP
from flowforge.utils.io import atomic_path

__all__ = [
    "sample_command",
]


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
) -> Path:
    """Draw samples from a run into ``out`` (.npy array in data units, or .png scatter)."""
    run_dir = Path(run)
    out = run_dir / "sample.npy" if out is None else Path(out)
    if out.suffix not in (".npy", ".png"):
        raise ValueError(f"--out={str(out)!r} must end in .npy (array) or .png (scatter plot).")
    if not out.parent.is_dir():  # a typo must not silently create directories
        what = "is not a directory" if out.parent.exists() else "does not exist"
        raise FileNotFoundError(
            f"cannot write --out={str(out)!r}: its directory {out.parent} {what}; create it "
            "first or choose another path."
        )
    config, info, model = load_run(run_dir, which)
    s = config.sample
    overrides = {"n": n, "solver": solver, "nfe": nfe, "guidance": guidance, "seed": seed}
    sample_dict = to_dict(s) | {k: v for k, v in overrides.items() if v is not None}
    if solver is not None and solver != "dopri5" and nfe is None:
        # Keep the run's budget when it divides; otherwise one step's worth is not a good
        # default, so ask.
        if sample_dict["nfe"] % NFE_PER_STEP.get(solver, 1):
            raise ConfigError(
                f"--solver={solver} cannot spend the run's sample.nfe={s.nfe}; pass --nfe with "
                f"a multiple of {NFE_PER_STEP.get(solver, 1)}."
            )
    config.sample = from_dict(sample_dict, type(s), "sample.")
    validate(config)
    s = config.sample
    check_nfe("--nfe", s.solver, s.nfe)
    if is_image_run(config):
        return _sample_images(run_dir, config, info, model, label, out)
    if label is not None and not 0 <= label < max(info.num_classes, 1):
        raise ValueError(
            f"--label={label} is not a class of this run; "
            + (
                f"use 0..{info.num_classes - 1}."
                if info.num_classes
                else "the run is unconditional, drop --label."
            )
        )
    g = torch.Generator().manual_seed(s.seed)
    x_0 = torch.randn(s.n, info.dim, generator=g, dtype=torch.float32)
    labels = info.labels(s.n, g)
    if label is not None:
        labels = torch.full((s.n,), label, dtype=torch.long)
    field = run_field(model, config, info.num_classes, run_dir, s.solver)
    t0 = time.perf_counter()
    x, used = generate(
        field, x_0, s.solver, s.nfe, cond=labels, time_shift=s.time_shift, atol=s.atol, rtol=s.rtol
    )
    x = info.to_data(x).float().numpy()
    seconds = time.perf_counter() - t0
    try:
        if out.suffix == ".npy":
            with atomic_path(out) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, x)
        else:
            source = build_data(config.data)
            data = source.reference(s.n, torch.Generator().manual_seed(s.seed + 1)).numpy()
            title = f"{run_dir.name}: {s.solver}, NFE {used}" + (
                f", guidance {s.guidance:g}" if info.num_classes else ""
            )
            plots.plot_samples(
                out, x, data, title=title, labels=None if labels is None else labels.numpy()
            )
    except OSError as e:
        raise PermissionError(
            f"cannot write --out={str(out)!r} ({e.strerror or e}); choose a writable path."
        ) from None
    print(
        f"wrote {s.n} samples ({s.solver}, NFE {used}, {seconds:.2f} s) of shape "
        f"{tuple(x.shape)} to {out}"
    )
    return out


def _sample_images(
    run_dir: Path, config, data: ImageData, model, label: int | None, out: Path
) -> Path:
    """``sample_command`` for image runs: an (n, C, H, W) array in [-1, 1] or a picture."""
    s = config.sample
    K = data.num_classes
    if label is not None and not 0 <= label < max(K, 1):
        raise ValueError(
            f"--label={label} is not a class of this run; "
            + (f"use 0..{K - 1}." if K else "the run is not class-conditional, drop --label.")
        )
    if config.method.objective == "autoencoder":
        raise ValueError(
            f"{run_dir} is an autoencoder run, which does not sample; train a latent run on it "
            f"(data.autoencoder={str(run_dir)!r}) and sample that."
        )
    paired = config.data.channels != "none" or config.method.objective == "symmflow"
    if paired and s.n > len(data.test_x):
        raise ValueError(
            f"--n={s.n}: this run completes or renders held-out conditions, of which there are "
            f"{len(data.test_x)}; pass --n <= {len(data.test_x)}."
        )
    g = torch.Generator().manual_seed(s.seed)
    labels = None if label is None else torch.full((s.n,), label, dtype=torch.long)
    t0 = time.perf_counter()
    drawn = draw(model, config, data, s, s.n, s.nfe, s.solver, g, labels=labels)
    seconds = time.perf_counter() - t0
    images = drawn.images
    try:
        if out.suffix == ".npy":
            with atomic_path(out) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, images.numpy())
        else:
            per = 10
            rows = [images[i : i + per] for i in range(0, min(len(images), 10 * per), per)]
            plots.plot_image_rows(
                out, rows, [""] * len(rows), title=f"{run_dir.name}: {s.solver}, NFE {drawn.nfe}"
            )
    except OSError as e:
        raise PermissionError(
            f"cannot write --out={str(out)!r} ({e.strerror or e}); choose a writable path."
        ) from None
    print(
        f"wrote {s.n} images ({s.solver}, NFE {drawn.nfe}, {seconds:.2f} s) of shape "
        f"{tuple(images.shape)} to {out}"
    )
    return out
