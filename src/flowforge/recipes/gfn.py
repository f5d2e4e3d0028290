"""GFlowNets (``method.name: gfn``): a policy trained so that P_T(x) is proportional to R(x).

The environment is ``data.name`` (``hypergrid``, ``sets``, ``bits`` or ``molecules``, see
``flowforge.recipes.gfn_envs``) with its settings in this section. Training goes through the
one ``train()``: its data are placeholders whose count is the batch, and the objective rolls
out that many trajectories from the current policy each step (epsilon-uniform exploration,
temperature), optionally mixed with a replay buffer and (molecules) with trajectories of
training molecules, and cut to prefixes for the forward-looking losses, then applies
``method.loss``:

    tb       trajectory balance with a learned log Z (its own learning rate, ``log_z_lr``)
    db       detailed balance
    subtb    sub-trajectory balance (lambda = ``subtb_lambda``)
    fldb     forward-looking DB on the environment's partial energies
    flsubtb  forward-looking SubTB
    op       order-preserving TB: the TB-implied reward trained to order each batch like the
             objective, never reading R (``method.objectives``: the reward's total order, or
             the Pareto order of ``branin_currin``'s two objectives on a 2-D hypergrid, where
             the other losses train on the scalarised reward)

Samples (``sample.solver: policy``) are the terminal objects of rollouts of the trained policy
without exploration; ``flowforge sample RUN`` writes them as an (n, *state_shape) integer array.

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259.
    GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266.
    Learning GFlowNets from Partial Episodes for Improved Convergence and Stability
    (Madan et al., 2023), arXiv:2209.12782.
    Better Training of GFlowNets with Local Credit and Incomplete Trajectories (Pan et al., 2023),
    arXiv:2302.01687.
    Order-Preserving GFlowNets (Chen and Mauch, 2024), arXiv:2310.00386.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.data.smiles import require_chem
from flowforge.gfn import (
    DetailedBalance,
    Env,
    ForwardLookingDB,
    ForwardLookingSubTB,
    MLPPolicy,
    OrderPreservingTB,
    Policy,
    PolicyConfig,
    PolicyOutput,
    ReplayBuffer,
    SubTrajectoryBalance,
    Trajectories,
    TrajectoryBalance,
    backward_trajectories,
    sample_trajectories,
)
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training
from flowforge.recipes.config import ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.gfn_envs import EnvData, device_generator

__all__ = ["GFNConfig", "GFNObjective", "GFNRecipe", "ScaledLogZPolicy"]


def _op_loss(data: EnvData) -> OrderPreservingTB:
    """OP-TB on the data's objectives (Pareto order, no clamp, as the multi-objective reference
    code) or on the reward's total order (batch-mean clamp 100, as the single-objective one)."""
    env = data.env
    if data.objective is not None:
        return OrderPreservingTB(env, data.objective, order="pareto", max_loss=None)
    return OrderPreservingTB(env, lambda x: env.log_reward(x).double(), order="total")


LOSSES = {  # (data, method) -> loss
    "tb": lambda d, m: TrajectoryBalance(d.env),
    "db": lambda d, m: DetailedBalance(d.env),
    "subtb": lambda d, m: SubTrajectoryBalance(d.env, m.subtb_lambda),
    "fldb": lambda d, m: ForwardLookingDB(d.env),
    "flsubtb": lambda d, m: ForwardLookingSubTB(d.env, m.subtb_lambda),
    "op": lambda d, m: _op_loss(d),
}
FORWARD_LOOKING = ("fldb", "flsubtb")


@dataclass
class GFNConfig(MethodConfig):
    """A GFlowNet: its loss, policy network, exploration, replay and environment settings."""

    name: str = field(default="gfn", metadata=meta("the recipe: a GFlowNet"))
    loss: Literal["tb", "db", "subtb", "fldb", "flsubtb", "op"] = field(
        default="tb",
        metadata=meta("tb, db, subtb, forward-looking fldb / flsubtb, or order-preserving op"),
    )
    objectives: Literal["reward", "branin_currin"] = field(
        default="reward",
        metadata=meta(
            "what is maximised: the environment's reward, or branin_currin (2-D hypergrid, two "
            "objectives: op orders by Pareto dominance, the other losses train on their mean)"
        ),
    )
    subtb_lambda: float = field(
        default=0.9, metadata=meta("subtb/flsubtb: weight ratio of one step longer")
    )
    hidden: int = field(default=256, metadata=meta("policy MLP: hidden width"))
    depth: int = field(default=2, metadata=meta("policy MLP: hidden layers"))
    activation: Literal["relu", "silu", "gelu", "selu"] = field(
        default="relu", metadata=meta("policy MLP: activation")
    )
    backward: Literal["uniform", "learned"] = field(
        default="uniform", metadata=meta("backward policy P_B: uniform or a learned head")
    )
    log_z_lr: float = field(
        default=0.1, metadata=meta("tb: Adam learning rate of log Z (train.lr: the network's)")
    )
    epsilon: float = field(
        default=0.0, metadata=meta("exploration: probability of a uniformly random action")
    )
    epsilon_final: float = field(
        default=0.0, metadata=meta("exploration: epsilon after epsilon_decay_steps")
    )
    epsilon_decay_steps: int = field(
        default=0, metadata=meta("steps of linear decay to epsilon_final (0: constant)")
    )
    temperature: float = field(
        default=1.0, metadata=meta("exploration: softmax temperature of the rollouts")
    )
    replay_size: int = field(
        default=0, metadata=meta("replay buffer: distinct objects kept (0: no replay)")
    )
    replay_fraction: float = field(
        default=0.5, metadata=meta("replay buffer: share of each batch replayed, in [0, 1)")
    )
    replay_priority: Literal["uniform", "reward"] = field(
        default="uniform", metadata=meta("replay buffer: draw uniformly or by reward")
    )
    prefix_fraction: float = field(
        default=0.0,
        metadata=meta("fldb/flsubtb: share of trajectories cut to random prefixes (incomplete)"),
    )
    ndim: int = field(default=2, metadata=meta("hypergrid: dimensions D"))
    height: int = field(default=8, metadata=meta("hypergrid: side H (>= 2)"))
    R0: float = field(default=1e-3, metadata=meta("hypergrid: reward floor R0 (> 0)"))
    R1: float = field(default=0.5, metadata=meta("hypergrid: reward of the outer regions"))
    R2: float = field(default=2.0, metadata=meta("hypergrid: reward of the modes"))
    n_items: int = field(default=10, metadata=meta("sets: items n"))
    set_size: int = field(default=5, metadata=meta("sets: items per set k"))
    energy_seed: int = field(default=0, metadata=meta("sets: seed of the item energies"))
    energy_scale: float = field(
        default=3.0, metadata=meta("sets: item energies e_i ~ U(0, energy_scale)")
    )
    length: int = field(default=8, metadata=meta("bits: string length n"))
    n_modes: int = field(default=4, metadata=meta("bits: random target strings"))
    mode_seed: int = field(default=0, metadata=meta("bits: seed of the target strings"))
    beta: float = field(
        default=3.0,
        metadata=meta("bits: R(x) = exp(-beta d_H(x, modes) / n); molecules: exp(beta score)"),
    )
    max_length: int = field(default=32, metadata=meta("molecules: the most SMILES tokens"))
    score: Literal["qed", "logp"] = field(
        default="qed", metadata=meta("molecules: RDKit's QED or Crippen logP (clipped to +-10)")
    )
    log_floor: float = field(
        default=-4.0, metadata=meta("molecules: log R of strings RDKit rejects (a floor)")
    )
    training_smiles: int = field(
        default=20000,
        metadata=meta("molecules: MOSES train lines read (those that fit are the training set)"),
    )
    offline_fraction: float = field(
        default=0.0,
        metadata=meta("molecules: share of each batch from training molecules (off-policy)"),
    )
    top_k: int = field(default=10, metadata=meta("eval: distinct objects of top_k_reward"))
    pareto_k: int = field(
        default=64, metadata=meta("eval (branin_currin): samples per set of hypervolume, IGD")
    )
    mode_ratio: float = field(
        default=0.5, metadata=meta("eval: modes are objects with R(x) >= mode_ratio * max R")
    )


class ScaledLogZPolicy(Policy):
    """An ``MLPPolicy`` whose log Z trains at its own Adam learning rate in one optimizer.

    log Z = c u with u the trained scalar and c = ``log_z_lr / train.lr`` (a saved buffer):
    Adam's step on u does not depend on the gradient's scale and is about ``train.lr``, so
    log Z moves by about ``log_z_lr`` per step, as with a separate parameter group (``train()``
    builds one AdamW over all parameters; the learning-rate schedule scales both alike). The
    wrapped policy's own ``log_z`` is frozen and unused.

    Args:
        net: the policy.
        log_z_scale: c.

    Example:
        >>> policy = ScaledLogZPolicy(MLPPolicy(PolicyConfig(4, 3, hidden=8)), 100.0)
        >>> with torch.no_grad():
        ...     _ = policy.u.fill_(0.01)
        >>> round(policy.log_z.item(), 6), policy(torch.zeros(2, 4)).logits.shape
        (1.0, torch.Size([2, 3]))
    """

    def __init__(self, net: MLPPolicy, log_z_scale: float) -> None:
        super().__init__()
        self.net = net
        net.log_z.requires_grad_(False)
        self.u = nn.Parameter(torch.zeros(()))
        self.register_buffer("log_z_scale", torch.tensor(float(log_z_scale)))

    @property
    def log_z(self) -> Tensor:  # type: ignore[override]
        """The learned log Z = c u."""
        return self.log_z_scale * self.u

    def forward(self, x: Tensor, cond: Tensor | None = None) -> PolicyOutput:
        return self.net(x.to(self.u.dtype), cond)


class _Through:
    """A wrapped policy (DDP) seen as a policy: calls go through the wrapper, which syncs the
    gradients; log Z comes from the policy inside."""

    def __init__(self, model: nn.Module, policy: Policy) -> None:
        self.model, self.log_z = model, policy.log_z

    def __call__(self, x: Tensor, cond: Tensor | None = None) -> PolicyOutput:
        return self.model(x, cond)


class GFNObjective:
    """Rollouts as training data: each call samples ``len(x)`` trajectories and returns the
    loss of each, (B,).

    Fresh trajectories come from the current policy with epsilon-uniform exploration (epsilon
    decaying linearly over ``epsilon_decay_steps`` optimizer steps) at ``temperature``; with a
    replay buffer, ``replay_fraction`` of the batch is redrawn from it and the fresh ones are
    added; ``prefix_fraction`` of the trajectories are cut to a random prefix (the
    forward-looking losses learn from incomplete trajectories); with ``offline`` objects
    (training molecules), ``offline_fraction`` of the batch are trajectories drawn backward from
    some of them (``backward_trajectories``). State (the calls, the buffer)
    is in ``state_dict``, so a resumed run continues where it stopped.

    Args:
        env: the environment.
        loss: ``loss(policy, traj) -> (B,)``.
        method: the ``GFNConfig``.
        grad_accum: calls per optimizer step (``train.grad_accum``).
        offline: (N, *state_shape) known objects for the off-policy share, or None.
    """

    def __init__(
        self,
        env: Env,
        loss,
        method: GFNConfig,
        grad_accum: int = 1,
        offline: Tensor | None = None,
    ) -> None:
        self.env, self.loss, self.m, self.grad_accum = env, loss, method, grad_accum
        self.offline = offline
        m = method
        self.replay = ReplayBuffer(m.replay_size, m.replay_priority) if m.replay_size else None
        self.calls = 0

    def epsilon(self, step: int) -> float:
        """The exploration epsilon of optimizer step ``step``."""
        m = self.m
        if m.epsilon_decay_steps == 0:
            return m.epsilon
        frac = min(1.0, step / m.epsilon_decay_steps)
        return m.epsilon + frac * (m.epsilon_final - m.epsilon)

    def __call__(
        self, model: nn.Module, x: Tensor, cond: Tensor | None = None, generator=None
    ) -> Tensor:
        policy = getattr(model, "module", model)  # inside DDP
        m, n = self.m, len(x)
        step = self.calls // self.grad_accum
        self.calls += 1
        n_replay = n_offline = 0
        if self.replay is not None and len(self.replay):
            n_replay = min(round(m.replay_fraction * n), n - 1)
        if self.offline is not None and len(self.offline):
            n_offline = min(round(m.offline_fraction * n), n - 1 - n_replay)
        traj = sample_trajectories(self.env, policy, n - n_replay - n_offline,
                                   epsilon=self.epsilon(step), temperature=m.temperature,
                                   generator=generator)  # fmt: skip
        if self.replay is not None:
            replayed = self.replay.sample(n_replay, generator) if n_replay else None
            self.replay.add(traj)
            traj = traj if replayed is None else Trajectories.cat([traj, replayed])
        if n_offline:
            device = traj.states.device
            idx = torch.randint(
                len(self.offline),
                (n_offline,),
                generator=generator,
                device=generator.device if generator is not None else "cpu",
            )
            x = self.offline[idx.cpu()].to(device)  # fmt: skip
            traj = Trajectories.cat(
                [traj, backward_trajectories(self.env, policy, x, generator=generator)]
            )
        if m.prefix_fraction > 0:
            traj = _cut(traj, m.prefix_fraction, generator)
        net = policy if model is policy else _Through(model, policy)
        if isinstance(self.loss, OrderPreservingTB):  # draws its pairs on the CPU
            cpu = generator is not None and generator.device.type == "cpu"
            return self.loss(net, traj, generator=generator if cpu else None)
        return self.loss(net, traj)

    def state_dict(self) -> dict:
        """The call count and the replay buffer's trajectories."""
        stored = None if self.replay is None else self.replay.storage
        fields = None if stored is None else {k: v for k, v in vars(stored).items()}
        return {"calls": self.calls, "replay": fields}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict``'s values."""
        self.calls = int(state["calls"])
        if self.replay is not None and state.get("replay") is not None:
            self.replay.storage = Trajectories(**state["replay"])


def _cut(traj: Trajectories, fraction: float, generator) -> Trajectories:
    """Cut ``fraction`` of the trajectories to a random prefix of 1 .. n_steps - 1 actions."""
    B, device = len(traj), traj.n_steps.device
    u = torch.rand(B, generator=generator, device=device)
    r = torch.rand(B, generator=generator, device=device)
    keep = 1 + (r * (traj.n_steps - 1).clamp(min=0)).long()  # in 1 .. n_steps - 1 (or 1)
    cut = (u < fraction) & (traj.n_steps > 1)
    return traj.truncate(torch.where(cut, keep.clamp(max=traj.n_steps - 1), traj.n_steps))


class GFNRecipe(Recipe):
    """A GFlowNet policy on an environment, trained on its own rollouts."""

    name = "gfn"
    Config = GFNConfig
    data_kinds = ("environments",)
    labels = False
    own_network = True
    solvers = ("policy",)
    guided_solvers = ()
    own_cost = True

    def validate(self) -> None:
        """Sizes positive, probabilities in range, the environment's settings valid."""
        m = self.method
        for key in ("hidden", "depth", "top_k", "pareto_k", "ndim", "n_items", "length",
                    "n_modes", "max_length"):  # fmt: skip
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 1.")
        for key in ("epsilon_decay_steps", "replay_size"):
            if getattr(m, key) < 0:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 0.")
        for key in ("epsilon", "epsilon_final", "prefix_fraction"):
            if not 0 <= getattr(m, key) <= 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be in [0, 1].")
        if (
            not 0 <= m.offline_fraction < 1
            or m.offline_fraction + m.replay_fraction * (m.replay_size > 0) >= 1
        ):
            raise ConfigError(
                f"method.offline_fraction={m.offline_fraction!r} must be in [0, 1) and leave "
                f"room beside method.replay_fraction={m.replay_fraction!r} (with a replay "
                "buffer) for fresh rollouts: their sum must be < 1."
            )
        if not 0 <= m.replay_fraction < 1:
            raise ConfigError(
                f"method.replay_fraction={m.replay_fraction!r} must be in [0, 1) (some of each "
                "batch must be fresh rollouts)."
            )
        positive = {"subtb_lambda": m.subtb_lambda, "log_z_lr": m.log_z_lr,
                    "temperature": m.temperature}  # fmt: skip
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"method.{key}={value!r} must be > 0.")
        if not 0 < m.mode_ratio <= 1:
            raise ConfigError(f"method.mode_ratio={m.mode_ratio!r} must be in (0, 1].")
        if m.prefix_fraction > 0 and m.loss not in FORWARD_LOOKING:
            raise ConfigError(
                f"method.prefix_fraction={m.prefix_fraction!r} trains on incomplete "
                f"trajectories, which method.loss={m.loss!r} cannot learn from; use "
                "method.loss=fldb or flsubtb, or method.prefix_fraction=0."
            )
        self._validate_env()

    def _validate_env(self) -> None:
        m, name = self.method, self.config.data.name
        if m.objectives == "branin_currin" and (name != "hypergrid" or m.ndim != 2):
            raise ConfigError(
                f"method.objectives='branin_currin' scores 2-D hypergrid states, but data.name="
                f"{name!r} and method.ndim={m.ndim}; use data.name=hypergrid and method.ndim=2."
            )
        if name == "hypergrid":
            if m.height < 2:
                raise ConfigError(
                    f"method.height={m.height!r} must be >= 2 (a grid of side 1 has no moves)."
                )
            if not (m.R0 > 0 and math.isfinite(m.R0)):
                raise ConfigError(
                    f"method.R0={m.R0!r} must be > 0: it is the reward floor, and a GFlowNet "
                    "needs R(x) > 0 everywhere (e.g. method.R0=1e-3)."
                )
            if not (m.R1 >= 0 and m.R2 >= 0):
                raise ConfigError(f"method.R1={m.R1!r} and method.R2={m.R2!r} must be >= 0.")
        elif name == "sets":
            if not 1 <= m.set_size <= m.n_items:
                raise ConfigError(
                    f"method.set_size={m.set_size!r} must be in [1, method.n_items={m.n_items}]."
                )
            if not (m.energy_scale >= 0 and math.isfinite(m.energy_scale)):
                raise ConfigError(
                    f"method.energy_scale={m.energy_scale!r} must be finite and >= 0."
                )
        elif not (m.beta >= 0 and math.isfinite(m.beta)):
            raise ConfigError(f"method.beta={m.beta!r} must be finite and >= 0.")
        if name == "molecules":
            try:
                require_chem()
            except ImportError as e:
                raise ConfigError(f"data.name='molecules': {e}") from None
        if name == "molecules" and m.training_smiles < 0:
            raise ConfigError(f"method.training_smiles={m.training_smiles!r} must be >= 0.")
        if m.offline_fraction > 0 and (name != "molecules" or m.training_smiles == 0):
            raise ConfigError(
                f"method.offline_fraction={m.offline_fraction!r} trains on known objects, which "
                f"only data.name=molecules has (with method.training_smiles > 0); use "
                "method.offline_fraction=0."
            )

    def build_model(self, data: RunData) -> nn.Module:
        """The MLP policy (forward, backward and flow heads) with its scaled log Z."""
        assert isinstance(data, EnvData)
        m, env = self.method, data.env
        config = PolicyConfig(env.encoding_dim, env.n_actions, m.hidden, m.depth,
                              backward=m.backward, activation=m.activation)  # fmt: skip
        policy = ScaledLogZPolicy(MLPPolicy(config), m.log_z_lr / self.config.train.lr)
        if m.loss != "tb":  # log Z is read from the flow head: keep u out of the optimizer
            policy.u.requires_grad_(False)
        return policy.float()

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """The loss on fresh rollouts (and replayed ones); the data only set the batch."""
        assert isinstance(data, EnvData)
        loss = LOSSES[self.method.loss](data, self.method)
        offline = data.training_objects() if self.method.offline_fraction > 0 else None
        objective = GFNObjective(data.env, loss, self.method, self.config.train.grad_accum,
                                 offline)  # fmt: skip
        return Training(objective, data.train)

    @torch.no_grad()
    def log_z(self, policy: nn.Module, env: Env) -> float | None:
        """The learned log Z: TB's scalar, else the flow at s_0 (forward-looking: log F~(s_0)
        - E(s_0), since F = F~ exp(-E)); None for OP-GFN, whose order losses leave it
        unidentified."""
        if self.method.loss == "op":
            return None
        if self.method.loss == "tb":
            return float(policy.log_z)
        device = next(policy.parameters()).device
        s_0 = env.initial_states(1, device)
        log_f = policy(env.encode(s_0)).log_flow[0].item()
        if self.method.loss in FORWARD_LOOKING:
            log_f -= env.state_energy(s_0)[0].item()
        return log_f

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """``sampler(n, generator) -> (x, nfe)``: the terminal objects of n rollouts without
        exploration, and the policy calls each took (the padded trajectory length)."""
        assert isinstance(data, EnvData)

        @torch.no_grad()
        def sampler(n: int, generator: torch.Generator | None):
            device = next(model.parameters()).device
            g = device_generator(generator, device)
            traj = sample_trajectories(data.env, model, n, generator=g)
            return traj.last_states, traj.T

        return sampler
