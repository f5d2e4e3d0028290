"""Few-step runs from the command line: models, objectives, data and samplers per method.

``method.objective`` names the method (``distill.*`` holds its settings); this module turns that
into the trained network, the objective handed to ``train()``, the training data (reflow trains
on its teacher's pairs) and the sampler used by ``sample.solver=fewstep``:

    reflow      student MLP initialised from the teacher; rf++ pairs; rf++ or Euler sampler
    meanflow    two-time MLP u(z, r, t); 1 NFE per step
    freeflow    two-time flow map distilled from the teacher without data; 1 NFE per step
    twinflow    two-time MLP (t, tt); 1 NFE per step
    flowturbo   a small refiner beside the frozen teacher; the H/P/R schedule (the row's NFE
                counts teacher calls; the refiner's calls are listed in the sampler's docs)
    blockwise   M segment MLPs (+ a shared feature network); NFE a multiple of M

Teacher runs are copied into the run directory (``teacher.safetensors`` and
``teacher.yaml``), so a distilled run keeps working when its teacher's directory is deleted; a
teacher must have been trained on the same data settings (``TEACHER_DATA_FIELDS``).

The networks above are the vector (MLP) forms; image runs build theirs in
``flowforge.cli.images`` (UNet/DiT with ``n_times=2``, segment UNets, a ``ConcatRefiner`` UNet)
and share the objectives, teacher handling and samplers here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flowforge.cli.build import DataSource, build_field, build_model, build_objective
from flowforge.cli.config import DataConfig, RunConfig
from flowforge.cli.config_io import load_yaml, save_yaml
from flowforge.cli.distill_config import (
    FEW_STEP_OBJECTIVES,
    TEACHER_OBJECTIVES,
    TWO_TIME_OBJECTIVES,
)
from flowforge.cli.errors import ConfigError
from flowforge.distill.blockwise import (
    BlockwiseField,
    BlockwiseLoss,
    blockwise_sample,
)
from flowforge.distill.blockwise_nets import (
    FeatureMLP,
    FeatureMLPConfig,
    SegmentMLP,
    SegmentMLPConfig,
)
from flowforge.distill.dispersive import dispersive_infonce_l2
from flowforge.distill.flowturbo import (
    MLPRefiner,
    MLPRefinerConfig,
    RefinerLoss,
    flowturbo_nfe,
    flowturbo_sample,
)
from flowforge.distill.freeflow import FreeFlowLoss, freeflow_sample
from flowforge.distill.meanflow import MeanFlowLoss, meanflow_sample
from flowforge.distill.reflow import (
    ReflowLoss,
    ReflowPairs,
    init_from_teacher,
    make_reflow_pairs,
    reflow_sample,
)
from flowforge.distill.twinflow import TwinFlowLoss
from flowforge.distill.twinflow_sampling import twinflow_sample
from flowforge.guidance.dropout import ConditionDropout
from flowforge.losses.time_samplers import UShapedTime
from flowforge.solvers.ode import NFE_PER_STEP
from flowforge.train.checkpoint import CONFIG_FILE, load_weights
from flowforge.typing import Field
from flowforge.utils.io import atomic_path

__all__ = [
    "FewStepSampler",
    "PAIRS_FILE",
    "TEACHER_FILE",
    "build_run_model",
    "build_run_objective",
    "eval_jobs",
    "fewstep_nfes",
    "load_teacher",
    "middle_module",
    "run_field",
    "run_teacher",
    "vector_teacher",
]

TEACHER_FILE = "teacher.safetensors"
TEACHER_CONFIG = "teacher.yaml"
PAIRS_FILE = "reflow_pairs.safetensors"
FEATURES = 16  # blockwise: width of the shared feature network's output h


def build_run_model(config: RunConfig, dim: int, num_classes: int) -> nn.Module:
    """The network a run trains: the MLP field, or the few-step method's network (float32).

    Example:
        >>> cfg = RunConfig()
        >>> cfg.method.objective = "meanflow"
        >>> build_run_model(cfg, dim=2, num_classes=0).config.n_times
        2
    """
    obj, m, d = config.method.objective, config.model, config.distill
    if obj in TWO_TIME_OBJECTIVES:
        return build_model(m, dim, num_classes, n_times=2)
    shared = dict(  # the time, class and activation settings of every small network
        dim=dim,
        time_embed_dim=m.time_embed_dim,
        num_classes=num_classes,
        class_embed_dim=m.class_embed_dim,
        activation=m.activation,
    )
    if obj == "flowturbo":
        refiner = MLPRefinerConfig(hidden=d.refiner_hidden, depth=d.refiner_depth, **shared)
        return MLPRefiner(refiner).float()
    if obj == "blockwise":
        features = FEATURES if d.segment_guidance else 0
        segment = SegmentMLPConfig(hidden=m.hidden, depth=m.depth, feature_dim=features, **shared)
        guidance = None
        if d.segment_guidance:
            guidance = FeatureMLP(
                FeatureMLPConfig(out_dim=features, hidden=m.hidden, depth=m.depth, **shared)
            )
        segments = [SegmentMLP(segment) for _ in range(d.segments)]
        return BlockwiseField(segments, guidance=guidance).float()
    return build_model(m, dim, num_classes)


TeacherBuilder = Callable[[RunConfig], nn.Module]


def vector_teacher(dim: int, num_classes: int) -> TeacherBuilder:
    """Builds a vector run's teacher network (an MLP field) from the teacher's config."""
    return lambda teacher_config: build_model(teacher_config.model, dim, num_classes)


# the data settings a teacher and its student must share (n_train only sizes a training set)
TEACHER_DATA_FIELDS = (
    "name",
    "path",
    "image_size",
    "channels",
    "autoencoder",
    "conditional",
    "label_column",
    "normalize",
)


def load_teacher(
    path: str | Path, build: TeacherBuilder, data: DataConfig | None = None
) -> nn.Module:
    """The EMA weights of a trained ``fm`` run (frozen, eval mode), checked against the data.

    ``path`` is the teacher's run directory, or a distilled run holding a copy of its teacher;
    ``build(teacher_config)`` makes the untrained network (``vector_teacher`` for vector runs);
    ``data``, the student's data settings, must match the teacher's (``TEACHER_DATA_FIELDS``).

    Raises:
        FileNotFoundError: ``path`` is not a run directory.
        ConfigError: the run is not a flow-matching run on data of this shape.
    """
    run = Path(path)
    copy = (run / TEACHER_FILE).is_file()  # a distilled run holding its teacher's copy
    config_file = run / (TEACHER_CONFIG if copy else CONFIG_FILE)
    if not config_file.is_file():
        raise FileNotFoundError(
            f"distill.teacher={str(path)!r} is not a run directory (no {CONFIG_FILE}); train a "
            "teacher first, e.g. `flowforge train toy2d_fm`, and pass its directory."
        )
    teacher_config = load_yaml(config_file)
    if teacher_config.method.objective != "fm":
        raise ConfigError(
            f"distill.teacher={str(path)!r} is a {teacher_config.method.objective!r} run; the "
            "teacher must be a flow-matching run (method.objective=fm)."
        )
    if data is not None:
        differ = [
            f"data.{k}={getattr(teacher_config.data, k)!r} (this run: {getattr(data, k)!r})"
            for k in TEACHER_DATA_FIELDS
            if getattr(teacher_config.data, k) != getattr(data, k)
        ]
        if differ:
            raise ConfigError(
                f"distill.teacher={str(path)!r} was trained on other data: "
                f"{', '.join(differ)}; distil a teacher trained on the same data."
            )
    try:
        net = build(teacher_config)
        if copy:
            net.load_state_dict(load_file(str(run / TEACHER_FILE)))
        else:
            load_weights(run, net, which="ema")
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"distill.teacher={str(path)!r} was trained on other data ({e}); distil a "
            "teacher trained on the same data (features or image shape, classes)."
        ) from None
    return net.eval().requires_grad_(False)


def _save_teacher(teacher: nn.Module, teacher_dir: str, run_dir: Path) -> None:
    with atomic_path(run_dir / TEACHER_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp))
    save_yaml(load_yaml(Path(teacher_dir) / CONFIG_FILE), run_dir / TEACHER_CONFIG)


def run_teacher(config: RunConfig, run_dir: Path | None, build: TeacherBuilder) -> nn.Module:
    """The teacher of a distilled run: its copy in ``run_dir``, else ``distill.teacher``."""
    if run_dir is not None and (run_dir / TEACHER_FILE).is_file():
        return load_teacher(run_dir, build, config.data)
    if config.distill.teacher is None:
        raise ConfigError(f"{run_dir} has no teacher copy and distill.teacher is not set.")
    return load_teacher(config.distill.teacher, build, config.data)


def build_run_objective(
    config: RunConfig,
    model: nn.Module,
    source: DataSource,
    run_dir: Path | None,
    resumed: bool,
    main: bool = True,
    build_teacher: TeacherBuilder | None = None,
):
    """The objective and training data of a run (few-step methods included).

    Teacher methods copy the teacher into ``run_dir`` (rank 0); reflow generates its pairs once
    (saved as ``reflow_pairs.safetensors`` and reused on resume) and starts the student from the
    teacher's weights on a fresh run. ``source`` is a vector run's ``DataSource`` or an image
    run's ``ImageData`` (anything with ``train``, ``shape``, ``num_classes`` and ``labels``);
    ``build_teacher`` makes the teacher's network (default: the MLP of a vector run).

    Returns:
        ``(objective, data)`` for ``train(model, objective, data, ...)``.
    """
    obj, d, K = config.method.objective, config.distill, source.num_classes
    if obj not in FEW_STEP_OBJECTIVES:
        return build_objective(config.method, K), source.train
    teacher = None
    if obj in TEACHER_OBJECTIVES:
        build = build_teacher or vector_teacher(source.shape[0], K)
        teacher = run_teacher(config, run_dir, build)
        if main and run_dir is not None and not (run_dir / TEACHER_FILE).is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            _save_teacher(teacher, d.teacher, run_dir)
    data = source.train
    if obj == "reflow":
        data = _reflow_pairs(config, teacher, source, run_dir, main).dataset()
        if not resumed:
            init_from_teacher(model, teacher)
        loss = ReflowLoss(
            time_sampler=UShapedTime(a=config.method.u_a),
            distance=config.method.distance,
            huber_c=config.method.huber_c,
        )
    elif obj == "meanflow":
        dispersive = {}
        if d.dispersive_weight > 0:  # InfoNCE-L2 on the middle layer's activations
            dispersive = dict(
                dispersive=dispersive_infonce_l2,
                dispersive_weight=d.dispersive_weight,
                feature_modules=(middle_module(config),),
            )
        loss = MeanFlowLoss(flow_map_ratio=d.flow_map_ratio, p=d.adaptive_p, **dispersive)
    elif obj == "freeflow":
        loss = FreeFlowLoss(teacher, two_time_fraction=d.flow_map_ratio)
    elif obj == "twinflow":
        loss = TwinFlowLoss()
    elif obj == "flowturbo":
        loss = RefinerLoss(teacher)
    else:
        loss = BlockwiseLoss()
    if K > 0 and config.method.cond_dropout > 0 and obj in ("meanflow", "twinflow", "blockwise"):
        loss = ConditionDropout(loss, config.method.cond_dropout, null_value=K)
    return loss, data


def middle_module(config: RunConfig) -> str:
    """Name of the middle layer of the run's network (MeanFlow's dispersive loss reads it).

    Example:
        >>> cfg = RunConfig()
        >>> middle_module(cfg)  # MLPField.net = [Linear, activation] * depth + [Linear]
        'net.3'
    """
    m = config.model
    if m.arch == "unet":
        return "mid2"
    if m.arch == "dit":
        return f"blocks.{m.depth // 2}"
    return f"net.{2 * (m.depth // 2) + 1}"


def _reflow_pairs(
    config: RunConfig, teacher: Field, source: DataSource, run_dir: Path | None, main: bool
) -> ReflowPairs:
    path = None if run_dir is None else run_dir / PAIRS_FILE
    if path is not None and path.is_file():
        return ReflowPairs.load(path)
    g = torch.Generator().manual_seed(config.train.seed)
    d = config.distill
    labels = source.labels(d.pairs, g)
    pairs = make_reflow_pairs(
        teacher,
        d.pairs,
        tuple(source.shape),
        n_steps=d.teacher_nfe,
        solver="euler",
        cond=labels,
        generator=g,
        progress=main and config.train.progress,
    )
    if path is not None and main:
        pairs.save(path)
    return pairs


def fewstep_nfes(config: RunConfig, nfes: list[int]) -> list[int]:
    """The budgets out of ``nfes`` that the run's few-step sampler spends, each once.

    FlowTurbo's cost is fixed by ``distill.schedule`` (its teacher calls); blockwise takes the
    same number of steps in each of its segments.

    Example:
        >>> cfg = RunConfig()
        >>> cfg.method.objective = "blockwise"
        >>> fewstep_nfes(cfg, [1, 2, 4, 8])
        [4, 8]
    """
    obj, d = config.method.objective, config.distill
    if obj == "flowturbo":
        return [flowturbo_nfe(d.schedule).predictor]
    if obj == "blockwise":
        return [n for n in nfes if n % d.segments == 0]
    return list(nfes)


def eval_jobs(config: RunConfig) -> list[tuple[str, int]]:
    """The ``(solver, nfe)`` rows of an evaluation: ``eval.solvers`` x ``eval.nfes``, keeping
    the budgets each solver spends exactly (``fewstep``: ``fewstep_nfes``).

    Example:
        >>> cfg = RunConfig()
        >>> cfg.eval.solvers, cfg.eval.nfes = ["euler", "heun"], [1, 2]
        >>> eval_jobs(cfg)
        [('euler', 1), ('euler', 2), ('heun', 2)]
    """
    e = config.eval
    return [
        (solver, nfe)
        for solver in e.solvers
        for nfe in (
            fewstep_nfes(config, e.nfes)
            if solver == "fewstep"
            else [n for n in e.nfes if n % NFE_PER_STEP[solver] == 0]
        )
    ]


@dataclass
class FewStepSampler:
    """``sample.solver=fewstep``: a few-step method's own sampler behind ``generate``.

    Attributes:
        objective: the method (``method.objective``).
        model: the trained network (EMA weights).
        teacher: the frozen teacher (flowturbo's predictor), else None.
        config: the run's config (``distill.*`` settings).
    """

    objective: str
    model: nn.Module
    teacher: Field | None
    config: RunConfig

    def sample(self, x_0: Tensor, nfe: int, cond: Tensor | None = None) -> tuple[Tensor, int]:
        """Samples from noise ``x_0`` with about ``nfe`` network calls; returns (x, NFE used).

        Raises:
            ConfigError: ``nfe`` does not fit the method (blockwise: a multiple of the segments).
        """
        obj, d, net = self.objective, self.config.distill, self.model
        if obj == "reflow":
            return reflow_sample(net, x_0, nfe, cond=cond, sampler=d.reflow_sampler), nfe
        if obj == "meanflow":
            return meanflow_sample(net, x_0, nfe, cond=cond), nfe
        if obj == "freeflow":
            return freeflow_sample(net, x_0, nfe, cond=cond), nfe
        if obj == "twinflow":
            return twinflow_sample(net, x_0, nfe, cond=cond), nfe
        if obj == "flowturbo":
            x = flowturbo_sample(self.teacher, net, x_0, schedule=d.schedule, cond=cond)
            return x, flowturbo_nfe(d.schedule).predictor
        M = d.segments
        if nfe % M:
            raise ConfigError(
                f"nfe={nfe} is not a multiple of distill.segments={M}: blockwise sampling takes "
                f"the same number of steps in every segment; use one of {[M, 2 * M, 4 * M]}."
            )
        return blockwise_sample(net, x_0, nfe // M, cond=cond), nfe


def run_field(
    model: nn.Module,
    config: RunConfig,
    num_classes: int,
    run_dir: Path | None,
    solver: str,
) -> Field | FewStepSampler:
    """What ``generate`` integrates for ``solver`` in a vector run: the (guided) field, or a
    ``FewStepSampler``."""
    obj = config.method.objective
    if solver != "fewstep":
        return build_field(model, config.sample, num_classes)
    teacher = None
    if obj == "flowturbo":
        teacher = run_teacher(config, run_dir, vector_teacher(model.config.dim, num_classes))
    return FewStepSampler(obj, model, teacher, config)
