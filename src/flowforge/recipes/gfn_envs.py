"""GFlowNet environments as a run's data (``data.name: hypergrid | sets | bits | molecules``).

The environment's settings live in the ``method:`` section of the ``gfn`` recipe (hypergrid
``ndim``, ``height``, ``R0``, ``R1``, ``R2``; sets ``n_items``, ``set_size``, ``energy_seed``,
``energy_scale``; bits ``length``, ``n_modes``, ``mode_seed``, ``beta``); the drawn energies and
modes are written to ``data.json``, so a loaded run rebuilds the same environment. Molecules
(``flowforge.gfn.SmilesBuilder``: ``max_length``, ``score``, ``beta``, ``log_floor``) read their
training set from the MOSES train split (the first ``training_smiles`` lines, those that fit),
which ``offline_fraction`` of each batch trains on. The training
"data" are placeholders whose count is the number of trajectories the objective rolls out.

An evaluation reports one row (``solver: policy``; ``nfe``: policy calls per object) from
``eval.n_samples`` objects sampled from the policy: modes found (distinct objects with
R(x) >= ``method.mode_ratio`` x max R), the mean reward of the ``method.top_k`` best distinct
objects and their diversity (mean pairwise Hamming distance), and the learned log Z (TB's
``log_z``, else the flow at s_0) with its error. Where the state DAG has at most
``MAX_EXACT_STATES`` states it adds the exact L1 between the policy's terminal distribution (a
dynamic program over the DAG) and R / Z, the empirical L1 of the samples, and for sets and
bits the L1 of the per-element marginals P(x_i = 1). Floors are those of a perfect sampler:
0 for the exact figures, and for the sample figures the same statistics of ``eval.n_samples``
exact draws from R / Z (averaged over ``eval.floor_repeats``). OP-GFN's log Z is not identified
(its order losses are invariant to a shift of log R^), so its rows have no ``log_z``.

With ``method.objectives: branin_currin`` the 2-D hypergrid is scored by the two Branin-Currin
objectives u(x) (``flowforge.gfn.BraninCurrin``, both in about [0, 1], maximised): OP-GFN orders
by Pareto dominance, the other losses train on the scalarised reward R(x) = (u_1 + u_2) / 2
(which the reward figures above then refer to). The row adds the ``hypervolume`` (reference
point 0) and ``igd`` against the exact Pareto front (``pareto_front``) of the distinct objects'
u in sets of ``method.pareto_k`` samples (averaged over the sets: ``eval.n_samples`` draws
would cover a small grid whatever the policy), and ``pareto_mass``, the exact P_T of the
front; their floors are the front's own: its hypervolume, IGD 0 and mass 1.

Molecules have no exact reference: their row (``molecule_metrics``) holds validity (RDKit parses
the string), uniqueness and novelty (canonical SMILES outside MOSES train) of the valid ones,
their mean score, and the mean score and Tanimoto diversity of the ``top_k`` best distinct ones;
the evaluation adds the same figures of as many training molecules (``training``). Pictures:
the best molecules drawn (molecules.png) and the score histogram beside the training set's
(scores.png); ``flowforge sample RUN --out x.smi`` writes SMILES, one per line.

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259 (L1 on the hypergrid).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.data.smiles import moses_smiles
from flowforge.gfn import (
    BitSequence,
    BraninCurrin,
    Env,
    HyperGrid,
    SetGeneration,
    SmilesBuilder,
    StateDAG,
    diversity,
    empirical_l1,
    hypervolume,
    igd,
    l1_distance,
    mean_state,
    modes_found,
    non_dominated,
    pareto_front,
    sample_trajectories,
    terminal_distribution,
    top_k_reward,
)
from flowforge.recipes.base import RunData, Sampler, Samples
from flowforge.recipes.config import ConfigError, ModelConfig, RunConfig
from flowforge.recipes.gfn_molecules import evaluate_molecules
from flowforge.recipes.gfn_pictures import cpu_policy, pictures
from flowforge.utils.io import atomic_path

if TYPE_CHECKING:
    from flowforge.recipes.base import Recipe

__all__ = [
    "EnvData",
    "MAX_EXACT_STATES",
    "build_env",
    "check_env_settings",
    "env_objective",
    "env_settings",
    "load_env",
    "make_env",
]

DATA_INFO = "data.json"
MAX_EXACT_STATES = 2**18  # states of the DAG the exact programs visit (one policy call each)


def env_settings(name: str, method: Any) -> dict:
    """The constructor settings of environment ``name`` from the ``gfn`` method section
    (sets: energies e_i ~ U(0, energy_scale) drawn with ``energy_seed``; bits: ``n_modes``
    random strings drawn with ``mode_seed``)."""
    m = method
    if name == "hypergrid":
        return {"ndim": m.ndim, "height": m.height, "R0": m.R0, "R1": m.R1, "R2": m.R2,
                "objectives": m.objectives}  # fmt: skip
    if name == "sets":
        g = torch.Generator().manual_seed(m.energy_seed)
        energies = m.energy_scale * torch.rand(m.n_items, generator=g, dtype=torch.float64)
        return {"n_items": m.n_items, "set_size": m.set_size, "energies": energies.tolist()}
    if name == "molecules":
        return {"max_length": m.max_length, "score": m.score, "beta": m.beta,
                "log_floor": m.log_floor, "training_smiles": m.training_smiles}  # fmt: skip
    g = torch.Generator().manual_seed(m.mode_seed)
    modes = torch.randint(0, 2, (m.n_modes, m.length), generator=g)
    return {"modes": modes.tolist(), "beta": m.beta}


def make_env(name: str, settings: dict) -> Env:
    """The environment ``name`` built from ``settings`` (``env_settings`` or a data.json)."""
    s = settings
    u = env_objective(name, settings)
    if name == "hypergrid" and u is not None:  # the scalarised reward (u_1 + u_2) / 2 > 0
        return HyperGrid(s["ndim"], s["height"], reward_fn=lambda x: u(x).mean(1))
    if name == "hypergrid":
        return HyperGrid(s["ndim"], s["height"], s["R0"], s["R1"], s["R2"])
    if name == "sets":
        energies = torch.tensor(s["energies"], dtype=torch.float64)
        return SetGeneration(s["n_items"], s["set_size"], energies)
    if name == "molecules":
        return SmilesBuilder(s["max_length"], s["score"], s["beta"], s["log_floor"])
    return BitSequence(torch.tensor(s["modes"], dtype=torch.long), s["beta"])


def env_objective(name: str, settings: dict) -> BraninCurrin | None:
    """The multi-objective scores u(x) -> (B, K) of the environment, or None (its reward)."""
    if name == "hypergrid" and settings.get("objectives", "reward") == "branin_currin":
        return BraninCurrin(settings["height"])
    return None


def dag_size(env: Env) -> int:
    """The number of states of the environment's DAG (what the exact programs visit)."""
    if isinstance(env, HyperGrid):
        return env.height**env.ndim
    if isinstance(env, SetGeneration):
        return sum(math.comb(env.n_items, k) for k in range(env.set_size + 1))
    if isinstance(env, SmilesBuilder):  # prefixes of up to L tokens (an upper bound)
        return sum((env.n_actions - 1) ** k for k in range(env.max_length + 1))
    assert isinstance(env, BitSequence), f"no DAG size for {type(env).__name__}"
    return 2 ** (env.length + 1) - 1


def max_log_reward(env: Env) -> float:
    """log max_x R(x), in closed form (the threshold of the modes)."""
    if isinstance(env, HyperGrid) and env.reward_fn is not None:  # enumerate
        return env.log_reward(env.all_terminal_states()).max().item()
    if isinstance(env, HyperGrid):  # the reward is the same test on every coordinate
        diagonal = torch.arange(env.height)[:, None].expand(-1, env.ndim)
        return env.log_reward(diagonal).max().item()
    if isinstance(env, SetGeneration):  # the k items of lowest energy
        return -env.energies.sort().values[: env.set_size].sum().item()
    assert isinstance(env, BitSequence), f"no maximum reward for {type(env).__name__}"
    return env.log_reward(env.modes).max().item()  # the modes themselves


class EnvData(RunData):
    """A GFlowNet environment as a run's data.

    Attributes:
        name: ``data.name``.
        env: the environment.
        settings: what ``make_env`` builds it from (saved as data.json).
        exact: whether the DAG is small enough for the exact programs.
        objective: the multi-objective scores ``u(x) -> (B, K)`` (``env_objective``) or None.
        train: placeholders ``(n, generator) -> (zeros (n, 1), None)``: the objective rolls out
            n trajectories itself.
    """

    num_classes = 0
    columns = None

    def __init__(self, name: str, env: Env, settings: dict) -> None:
        self.name, self.env, self.settings = name, env, settings
        self.exact = dag_size(env) <= MAX_EXACT_STATES
        self.objective = env_objective(name, settings)
        self._dag: StateDAG | None = None
        self._training: Tensor | None = None
        self.train = lambda n, generator: (torch.zeros(n, 1), None)

    @property
    def shape(self) -> tuple[int, ...]:
        """One state's shape."""
        return tuple(self.env.state_shape)

    @property
    def dag(self) -> StateDAG:
        """The environment's ``StateDAG`` (built on first use; only when ``exact``)."""
        assert self.exact, f"{self.name}: the DAG has more than {MAX_EXACT_STATES} states"
        if self._dag is None:
            self._dag = StateDAG(self.env)
        return self._dag

    def training_objects(self) -> Tensor:
        """(N, *S) known objects to train on off-policy: for molecules, the MOSES training
        SMILES among the first ``training_smiles`` that fit the environment (its tokens,
        length and grammar masks); read once."""
        if not isinstance(self.env, SmilesBuilder):
            raise TypeError(f"{self.name} has no training objects (only molecules do).")
        if self._training is None:
            smiles = moses_smiles("train", limit=self.settings["training_smiles"])
            x = self.env.from_smiles(smiles, strict=False)
            self._training = x[self.env.fits(x)]
            if not len(self._training):
                raise ValueError(
                    f"none of the first {len(smiles)} MOSES training molecules fits "
                    f"method.max_length={self.env.max_length} tokens; raise it (MOSES "
                    "molecules have 25-50 tokens) or method.training_smiles."
                )
        return self._training

    def labels(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """None: environments are unconditional."""
        return None

    def to_data(self, x: Tensor) -> Tensor:
        """The identity: states are the objects."""
        return x

    def to_text(self, x: Tensor) -> list[str]:
        """The objects as lines of text (molecules: SMILES)."""
        if not isinstance(self.env, SmilesBuilder):
            raise ValueError(f"{self.name} objects have no text form; write a .npy instead.")
        return self.env.to_smiles(x)

    def network(self, model: ModelConfig, n_times: int = 1, channels: int | None = None):
        """Not used: the recipe builds its policy from the method section."""
        raise TypeError("a GFlowNet's network is the recipe's policy (method.hidden, depth).")

    def fresh(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, *S) exact draws from R / Z (enumerable environments)."""
        if not self.exact:
            raise ValueError(
                f"{self.name} with {dag_size(self.env)} states is not enumerated, so it has no "
                "exact reference samples; write the samples as .npy instead."
            )
        idx = torch.multinomial(self.dag.target(), n, replacement=True, generator=generator)
        return self.dag.terminal_states[idx]

    @torch.no_grad()
    def generate(
        self, sampler: Sampler, n, nfe, solver, generator, labels=None, device="cpu"
    ) -> Samples:
        """``n`` objects of ``sampler(n, generator) -> (x, nfe)`` (the recipe's rollouts)."""
        x, used = sampler(n, generator)
        return Samples(x.cpu(), used)

    def save(self, run_dir: Path) -> None:
        """data.json: the environment's name and settings."""
        info = {"kind": "environment", "name": self.name, "settings": self.settings}
        with atomic_path(Path(run_dir, DATA_INFO)) as tmp:
            tmp.write_text(json.dumps(info, indent=1))

    def describe(self) -> str:
        """The environment in a few words."""
        e = self.env
        if isinstance(e, HyperGrid) and self.objective is not None:
            what = f"hypergrid {e.ndim} x {e.height} scored by Branin-Currin"
        elif isinstance(e, HyperGrid):
            what = f"hypergrid {e.ndim} x {e.height} (R0 {e.R0:g})"
        elif isinstance(e, SetGeneration):
            what = f"sets of {e.set_size} of {e.n_items} items"
        elif isinstance(e, SmilesBuilder):
            return (
                f"SMILES of up to {e.max_length} tokens ({e.n_actions - 1} kinds), R = "
                f"exp({e.beta:g} {e.score}), log R = {e.log_floor:g} where RDKit rejects them"
            )
        else:
            what = f"bit strings of {e.length} bits, {len(e.modes)} modes"
        if not self.exact:
            return f"{what}, {dag_size(e)} states (not enumerated)"
        n = len(self.dag.terminal_states)
        return f"{what}, {n} objects, log Z = {self.env.log_partition():.4g}"

    def evaluate(self, recipe: Recipe, model: nn.Module, run_dir, step, progress) -> dict:
        """The policy row beside its floors (see the module)."""
        return evaluate(recipe, model, self, step)

    def pictures(self, recipe: Recipe, model: nn.Module, run_dir: Path, step) -> dict:
        """distribution.png (hypergrids), marginals.png (sets, bits), l1_curve.png."""
        return pictures(recipe, model, self, run_dir, step)

    def progress_hook(self, recipe: Recipe, run_dir: Path | None):
        """Every ``train.eval_every`` steps: trajectories seen, trajectories/s since the last
        check, the exact L1 (enumerable environments) and the learned log Z."""
        batch = recipe.config.train.batch_size
        last = {"time": time.perf_counter(), "step": None}

        def hook(step: int, net: nn.Module) -> dict:
            now = time.perf_counter()
            record: dict = {"trajectories": step * batch}
            if last["step"] is not None:  # the first interval includes the set-up
                record["trajectories_per_s"] = batch * (step - last["step"]) / (now - last["time"])
            record.update(_exact_metrics(recipe, net, self))
            last["time"], last["step"] = time.perf_counter(), step  # the check is not counted
            return record

        return hook


def device_generator(generator: torch.Generator | None, device: torch.device):
    """A generator on ``device`` seeded from ``generator`` (the sampler draws there)."""
    if device.type == "cpu" or generator is None:
        return generator
    seed = int(torch.randint(2**62, (), generator=generator))
    return torch.Generator(device).manual_seed(seed)


@torch.no_grad()
def _exact_metrics(recipe: Recipe, model: nn.Module, data: EnvData) -> dict:
    """log Z (learned and its error) and, where enumerable, the exact L1, the marginal L1 and
    (multi-objective) the exact mass on the Pareto front."""
    policy = cpu_policy(model)
    log_z = recipe.log_z(policy, data.env)  # None: not identified (OP-GFN)
    out = {} if log_z is None else {"log_z": log_z}
    if log_z is not None and (data.exact or isinstance(data.env, SetGeneration)):
        out["log_z_error"] = abs(log_z - data.env.log_partition())
    if data.exact:
        p = terminal_distribution(data.dag, policy)
        out["exact_l1"] = l1_distance(p, data.dag.target())
        if data.objective is not None:
            front = non_dominated(data.objective(data.dag.terminal_states))
            out["pareto_mass"] = p[front].sum().item()  # exact P_T of the Pareto set
        if not isinstance(data.env, HyperGrid):
            x = data.dag.terminal_states
            out["marginal_l1"] = l1_distance(mean_state(x, p), mean_state(x, data.dag.target()))
    return out


def _pareto_metrics(data: EnvData, x: Tensor, k: int) -> dict:
    """Hypervolume (reference 0) and IGD against the front of sets of ``k`` samples, averaged
    over the ``len(x) // k`` disjoint sets of ``x`` (many samples cover any small grid)."""
    assert data.objective is not None
    _, front = pareto_front(data.env, data.objective)
    hv, distance = [], []
    for group in x[: len(x) // k * k].split(k):
        u = data.objective(torch.unique(group, dim=0))  # HV and IGD read only the set
        hv.append(hypervolume(u, [0.0] * u.shape[1]))
        distance.append(igd(u, front))
    return {"hypervolume": float(np.mean(hv)), "igd": float(np.mean(distance))}


def _sample_metrics(data: EnvData, x: Tensor, log_r: Tensor, top_k: int, ratio: float) -> dict:
    """Modes found, top-k reward and its diversity, and (enumerable) the empirical L1."""
    threshold = max_log_reward(data.env) + math.log(ratio)
    keys, inverse = torch.unique(x.flatten(1), dim=0, return_inverse=True)
    best = torch.full((len(keys),), -torch.inf, dtype=torch.float64)
    best = best.scatter_reduce(0, inverse, log_r.double(), "amax")
    top = keys[best.topk(min(top_k, len(keys))).indices]
    out = {
        "modes_found": modes_found(x, log_r, threshold),
        "top_k_reward": top_k_reward(x, log_r, top_k),
        "diversity": diversity(top),
    }
    if data.exact:
        out["empirical_l1"] = empirical_l1(data.env, x)
    return out


@torch.no_grad()
def evaluate(recipe: Recipe, model: nn.Module, data: EnvData, step) -> dict:
    """One row for the policy from ``eval.n_samples`` objects, beside a perfect sampler's."""
    e, m = recipe.config.eval, recipe.method
    device = next(model.parameters()).device
    g = device_generator(torch.Generator().manual_seed(e.seed), device)
    traj = sample_trajectories(data.env, model, e.n_samples, generator=g)
    x, log_r = traj.last_states.cpu(), traj.log_rewards.cpu()
    row = {"solver": "policy", "nfe": traj.T}
    if isinstance(data.env, SmilesBuilder):
        return evaluate_molecules(recipe, model, data, x, row, step)
    row.update(_sample_metrics(data, x, log_r, m.top_k, m.mode_ratio))
    row.update(_exact_metrics(recipe, model, data))
    if not data.exact and isinstance(data.env, SetGeneration):  # exact marginals, no DAG
        row["marginal_l1"] = l1_distance(mean_state(x), data.env.inclusion_marginals())
    floors: dict = {k: 0.0 for k in ("exact_l1", "log_z_error") if k in row}
    info: dict = {}
    if data.objective is not None:  # a perfect multi-objective sampler covers the front
        row.update(_pareto_metrics(data, x, min(m.pareto_k, len(x))))
        front_x, front = pareto_front(data.env, data.objective)
        floors.update({"hypervolume": hypervolume(front, [0.0] * front.shape[1]), "igd": 0.0})
        if "pareto_mass" in row:
            floors["pareto_mass"] = 1.0
        info["front"] = len(front_x)
    if data.exact and "marginal_l1" in row:
        floors["marginal_l1"] = 0.0
    if data.exact:
        ref_g = torch.Generator().manual_seed(e.seed + 1)
        repeats = []
        for _ in range(e.floor_repeats):
            ref = data.fresh(e.n_samples, ref_g)
            ref_log_r = data.env.log_reward(ref)
            repeats.append(_sample_metrics(data, ref, ref_log_r, m.top_k, m.mode_ratio))
        floors.update({k: float(np.mean([r[k] for r in repeats])) for k in repeats[0]})
        target_log_r = data.dag.log_rewards()
        threshold = max_log_reward(data.env) + math.log(m.mode_ratio)
        info["modes"] = int((target_log_r >= threshold).sum())
        info["objects"] = len(target_log_r)
    if "log_z_error" in row:
        info["true_log_z"] = data.env.log_partition()
    return {"step": step, "n_samples": e.n_samples, "guidance": None, "floors": floors,
            "results": [row], **info}  # fmt: skip


def build_env(config: RunConfig) -> EnvData:
    """The environment of ``data.name`` with the method section's settings."""
    settings = env_settings(config.data.name, config.method)
    return EnvData(config.data.name, make_env(config.data.name, settings), settings)


def load_env(run_dir: str | Path, config: RunConfig) -> EnvData:
    """A trained run's environment from its data.json."""
    path = Path(run_dir, DATA_INFO)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {run_dir} is not a complete flowforge run.")
    try:
        info = json.loads(path.read_text())
        name = info["name"]
        if name != config.data.name:
            raise ValueError(f"it names {name!r}, the config {config.data.name!r}")
        return EnvData(name, make_env(name, info["settings"]), info["settings"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is corrupt ({e}); retrain the run.") from None


def check_env_settings(config: RunConfig) -> None:
    """ConfigError for data settings an environment does not read."""
    d = config.data
    if d.path is not None or d.conditional or d.autoencoder is not None or d.channels != "none":
        raise ConfigError(
            f"data.name={d.name!r} is a GFlowNet environment; drop data.path, "
            "data.conditional, data.autoencoder and data.channels (its settings are in the "
            "method section, e.g. method.height)."
        )
