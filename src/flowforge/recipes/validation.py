"""The checks every run shares, then the recipe's own (``Recipe.validate``).

Value ranges and cross-field rules of the shared sections, what the run's recipe trains on
(vectors or images, labels, condition channels, latents), and its samplers: the solver names it
accepts, the NFE each spends and whether it guides. Every error names the key, the value and a
valid alternative.

Example:
    >>> from flowforge.recipes.config import RunConfig
    >>> validate(RunConfig()) is not None
    True
"""

from __future__ import annotations

from flowforge.recipes.config import (
    IMAGE_METRICS,
    ODE_SOLVERS,
    SHARED_IMAGE_METRICS,
    VECTOR_METRICS,
    VIDEO_METRICS,
    ConfigError,
    RunConfig,
    data_kind,
    is_image_run,
)
from flowforge.recipes.energies import check_target_settings
from flowforge.recipes.gfn_envs import check_env_settings

__all__ = ["validate"]

_DATA_USES = {
    "vectors": "vector data (a 2-D toy, or data.path=FILE.csv)",
    "images": "an image dataset (data.name=digits or shapes, or data.path=FOLDER)",
    "videos": "videos (data.name=moving_shapes)",
    "energies": "a Boltzmann target (data.name=gmm40, manywell32, dw4, lj13 or aldp)",
    "environments": "a GFlowNet environment (data.name=hypergrid, sets or bits)",
}


def validate(config: RunConfig) -> RunConfig:
    """Check value ranges and cross-field rules; return the config unchanged.

    The rules every run shares are here; the data rules of images and vectors and the sampling
    rules are checked against what the run's recipe supports, then the recipe checks its own
    section (``Recipe.validate``).

    Raises:
        ConfigError: naming the key, the value and a valid alternative.
    """
    from flowforge.recipes.table import recipe_for  # the table imports every recipe

    c = config
    positive = {
        "model.hidden": c.model.hidden,
        "model.depth": c.model.depth,
        "sample.n": c.sample.n,
        "eval.n_samples": c.eval.n_samples,
        "eval.floor_repeats": c.eval.floor_repeats,
        "sample.time_shift": c.sample.time_shift,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}={value!r} must be positive.")
    if c.eval.n_samples < 2:
        raise ConfigError(
            f"eval.n_samples={c.eval.n_samples!r} must be >= 2: every metric compares two sets "
            "of samples (a few hundred give stable figures)."
        )
    if c.threads is not None and c.threads < 1:
        raise ConfigError(f"threads={c.threads!r} must be >= 1 (or null for torch's default).")
    if not c.name or "/" in c.name or c.name in (".", ".."):
        raise ConfigError(f"name={c.name!r} must be a plain folder name such as 'toy2d_fm'.")
    if c.sample.guidance < 0:
        raise ConfigError(f"sample.guidance={c.sample.guidance!r} must be >= 0 (1: no guidance).")
    if c.sample.guidance != 1.0 and not c.data.conditional:
        raise ConfigError(
            f"sample.guidance={c.sample.guidance!r} needs a class-conditional run (trained with "
            "data.conditional=true); leave sample.guidance=1 for this one."
        )
    if not c.eval.nfes or any(n < 1 for n in c.eval.nfes):
        raise ConfigError(f"eval.nfes={c.eval.nfes!r} must be a non-empty list of NFEs >= 1.")
    if c.data.label_column is not None and c.data.path is None:
        raise ConfigError(
            f"data.label_column={c.data.label_column!r} applies to array files only; set "
            "data.path or drop data.label_column."
        )
    array = c.data.path is not None and not is_image_run(c)
    if array and c.data.conditional and c.data.label_column is None:
        raise ConfigError(
            "data.conditional=true with an array file needs data.label_column (the column of "
            "integer labels)."
        )
    recipe = recipe_for(c)
    _validate_data(c, recipe)
    recipe.validate()
    if is_image_run(c):
        _validate_image_conditions(c, recipe)
    if recipe.samples:
        _validate_sampling(c, recipe)
    return c


def _validate_data(c: RunConfig, recipe) -> None:
    """What the recipe trains on, the network family, and image settings on vectors."""
    d, m, name = c.data, c.model, recipe.name
    image = is_image_run(c)
    kind = data_kind(c)
    if kind not in recipe.data_kinds:
        use = " or ".join(_DATA_USES[k] for k in recipe.data_kinds)
        raise ConfigError(
            f"method.name={name!r} trains on {' or '.join(recipe.data_kinds)}, but the data "
            f"(data.name={d.name!r}, data.path={d.path!r}) are {kind}; use {use}."
        )
    if recipe.own_network:  # the method section sizes the network; model.arch is not read
        pass
    elif image and m.arch == "mlp":
        raise ConfigError(
            f"data.name={d.name!r} holds images but model.arch='mlp'; set model.arch=unet "
            "(or dit, or autoencoder with method.name=autoencoder)."
        )
    elif not image and m.arch != "mlp":
        raise ConfigError(
            f"model.arch={m.arch!r} is for images but the data are vectors; use model.arch=mlp "
            "or an image dataset (data.name=digits or shapes, or data.path=FOLDER)."
        )
    elif (m.arch == "autoencoder") != recipe.autoencoder_arch:
        raise ConfigError(
            f"method.name={name!r} and model.arch={m.arch!r} do not go together; an "
            "autoencoder is trained with method.name=autoencoder and model.arch=autoencoder."
        )
    if kind == "videos":
        _validate_videos(c)
        return
    if kind == "energies":
        check_target_settings(c)
        return
    if kind == "environments":
        check_env_settings(c)
        return
    if not image:
        bad = [n for n in c.eval.metrics if n in IMAGE_METRICS]
        if bad or d.channels != "none" or d.autoencoder is not None:
            raise ConfigError(
                "image settings on vector data: "
                + ", ".join(
                    [f"eval.metrics {bad}"] * bool(bad)
                    + [f"data.channels={d.channels!r}"] * (d.channels != "none")
                    + [f"data.autoencoder={d.autoencoder!r}"] * (d.autoencoder is not None)
                )
                + "; drop them or train on images."
            )
        return
    bad = [n for n in c.eval.metrics if n in VECTOR_METRICS]
    if bad and recipe.samples:  # a run that does not sample reports its own metrics
        raise ConfigError(
            f"eval.metrics contains {bad}, which are for vectors; image runs use "
            f"{list(IMAGE_METRICS)}."
        )
    if d.name == "digits" and d.path is None and d.image_size not in (None, 8, 16):
        raise ConfigError(f"data.image_size={d.image_size!r}: digits come in 8 or 16 pixels.")
    if d.image_size is not None and d.image_size < 8:
        raise ConfigError(f"data.image_size={d.image_size!r} must be >= 8.")
    if d.image_channels not in (None, 1, 3):
        raise ConfigError(
            f"data.image_channels={d.image_channels!r} must be 1 (grayscale), 3 (RGB) or null."
        )
    if d.image_channels is not None and d.path is None:
        raise ConfigError(
            f"data.image_channels={d.image_channels!r} converts a folder's images; the "
            f"{d.name} images have their own channels, so drop it or set data.path=FOLDER."
        )


def _validate_videos(c: RunConfig) -> None:
    """Video runs: their metrics, sizes and the image-only settings they do not take."""
    d = c.data
    bad = [n for n in c.eval.metrics if n not in VIDEO_METRICS]
    if bad:
        raise ConfigError(
            f"eval.metrics contains {bad}; video runs measure {list(VIDEO_METRICS)} (fd of "
            "single frames, motion of the shapes)."
        )
    if d.frames < 2:
        raise ConfigError(f"data.frames={d.frames!r} must be >= 2.")
    if d.image_size is not None and d.image_size < 8:
        raise ConfigError(f"data.image_size={d.image_size!r} must be >= 8.")
    if d.channels != "none" or d.autoencoder is not None:
        raise ConfigError(
            "data.channels and data.autoencoder apply to images; video runs train on the "
            "frames' pixels with labels or none: drop them."
        )


def _validate_image_conditions(c: RunConfig, recipe) -> None:
    """Condition channels, latents and the metrics that need them, against the recipe."""
    from flowforge.recipes.table import RECIPES

    d, name = c.data, recipe.name
    if d.channels == "mask" and (d.name != "shapes" or d.path is not None):
        raise ConfigError(
            f"data.channels={d.channels!r} runs need segmentation masks, which data.name=shapes "
            "provides; switch the dataset."
        )
    if d.channels != "none" and d.conditional:
        raise ConfigError(
            f"data.channels={d.channels!r} with data.conditional=true is not supported; "
            "condition on labels or on channels."
        )
    if d.channels not in recipe.channels:
        raise ConfigError(
            f"method.name={name!r} with data.channels={d.channels!r}: {name} image runs take "
            "class labels or nothing; set data.channels=none."
        )
    if d.autoencoder is not None and (not recipe.latent or d.channels != "none"):
        latent = "/".join(n for n, r in RECIPES.items() if r.latent)
        raise ConfigError(
            f"data.autoencoder={d.autoencoder!r} (latent flow matching) with "
            f"method.name={name!r} and data.channels={d.channels!r}: latent runs train "
            f"method.name={latent} with labels or unconditional (data.channels=none); set "
            "those, or drop data.autoencoder to train in pixel space."
        )
    if not recipe.samples:
        return
    if "accuracy" in c.eval.metrics and not d.conditional:
        raise ConfigError("eval.metrics 'accuracy' needs data.conditional=true (labels).")
    if "known_error" in c.eval.metrics and d.channels != "inpaint":
        raise ConfigError("eval.metrics 'known_error' needs data.channels=inpaint.")
    own = [n for n in c.eval.metrics if n in IMAGE_METRICS and n not in SHARED_IMAGE_METRICS]
    own = [n for n in own if n not in recipe.metrics]
    if own:
        owners = "/".join(n for n, r in RECIPES.items() if own[0] in r.metrics)
        raise ConfigError(
            f"eval.metrics {own[0]!r} is measured on method.name={owners} runs; drop it for "
            f"method.name={name!r}."
        )


def _validate_sampling(c: RunConfig, recipe) -> None:
    """``sample.solver``, ``eval.solvers``, ``sample.nfe`` and guidance against the recipe."""
    from flowforge.recipes.table import RECIPES

    name, solvers = recipe.name, recipe.solvers
    velocity = "dopri5" in solvers
    for key, names in {"sample.solver": [c.sample.solver], "eval.solvers": c.eval.solvers}.items():
        bad = [n for n in names if n not in solvers]
        if not bad:
            continue
        shown = names if len(names) > 1 else names[0]
        if bad[0] not in ODE_SOLVERS:  # another recipe's own sampler
            owners = [n for n, r in RECIPES.items() if bad[0] in r.solvers] or ["none"]
            uses = "ODE solvers such as heun" if velocity else ", ".join(solvers)
            raise ConfigError(
                f"{key} names {bad[0]!r}, the sampler of method.name={'/'.join(owners)}; a "
                f"{name} run uses {uses}."
            )
        own = [s for s in solvers if s not in ODE_SOLVERS] or list(solvers)
        fix = own[0] if key == "sample.solver" else "[" + ",".join(own) + "]"
        if own[0] in ODE_SOLVERS:  # a subset of the ODE solvers
            raise ConfigError(
                f"{key}={shown!r}: {name} runs sample with {', '.join(solvers)}; set {key}={fix}."
            )
        raise ConfigError(
            f"{key}={shown!r}: a {name} network is not a velocity field, so it samples with its "
            f"own sampler; set {key}={fix}."
        )
    if c.eval.dopri5 and not velocity:
        raise ConfigError(f"eval.dopri5=true needs a velocity field; set it false for {name}.")
    recipe.check_nfe("sample.nfe", c.sample.solver, c.sample.nfe)
    if c.sample.guidance != 1.0 and c.sample.solver not in recipe.guided_solvers:
        what = "the few-step samplers" if c.sample.solver == "fewstep" else c.sample.solver
        also = " (or sample with an ODE solver such as heun, which applies CFG)" * velocity
        raise ConfigError(
            f"sample.guidance={c.sample.guidance!r} with sample.solver={c.sample.solver}: "
            f"{what} apply no guidance at sampling time; set sample.guidance=1{also}."
        )
