"""GFlowNet molecules as a run's data: the evaluation row and pictures of SMILES samples.

``molecule_metrics``: validity (RDKit parses the string), uniqueness and novelty (canonical
SMILES outside the MOSES train split) of the valid ones, their mean score, and the mean score
and Tanimoto diversity of the ``top_k`` best distinct ones; the evaluation adds the same figures
of as many training molecules. Pictures: the best molecules drawn (molecules.png) and the score
histogram beside the training set's (scores.png).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.data.smiles import canonical_smiles, moses_smiles, tanimoto_diversity
from flowforge.gfn import SmilesBuilder, sample_trajectories
from flowforge.recipes import plots

if TYPE_CHECKING:
    from flowforge.recipes.gfn_envs import EnvData

__all__ = ["evaluate_molecules", "molecule_metrics", "molecule_pictures"]


@functools.lru_cache(maxsize=1)
def _moses_train_set() -> frozenset[str]:
    return frozenset(moses_smiles("train"))


def molecule_metrics(env: SmilesBuilder, x: Tensor, top_k: int, novelty: bool = True) -> dict:
    """Validity (RDKit parses the string), uniqueness and novelty (canonical SMILES outside the
    MOSES train split) of the valid ones, their mean score, and the mean score and Tanimoto
    diversity (Morgan, radius 2) of the ``top_k`` best distinct molecules."""
    scores = env.scores(x).numpy()
    valid = ~np.isnan(scores)
    smiles = [s for s, v in zip(env.to_smiles(x), valid, strict=True) if v]
    canonical = canonical_smiles(smiles)
    best: dict[str, float] = {}
    for c, v in zip(canonical, scores[valid].tolist(), strict=True):
        if c is not None:
            best[c] = max(v, best.get(c, -math.inf))
    ranked = sorted(best, key=best.__getitem__, reverse=True)[:top_k]
    out = {
        "validity": float(valid.mean()),
        "uniqueness": len(best) / max(1, int(valid.sum())),
        "mean_score": float(scores[valid].mean()) if valid.any() else float("nan"),
        "top_k_score": float(np.mean([best[c] for c in ranked])) if ranked else float("nan"),
        "top_k_diversity": tanimoto_diversity(ranked),
    }
    if novelty:
        train = _moses_train_set()
        out["novelty"] = sum(c not in train for c in best) / max(1, len(best))
    return out


def evaluate_molecules(recipe, model, data: EnvData, x: Tensor, row: dict, step) -> dict:
    """The molecule row (``molecule_metrics``) beside the same figures of as many training
    molecules (``training``; no floors: no exact sampler exists)."""
    e, m, env = recipe.config.eval, recipe.method, data.env
    assert isinstance(env, SmilesBuilder)
    row.update(molecule_metrics(env, x, m.top_k))
    log_z = recipe.log_z(model, env)
    if log_z is not None:
        row["log_z"] = log_z
    out = {"step": step, "n_samples": e.n_samples, "guidance": None, "floors": {},
           "results": [row]}  # fmt: skip
    if data.settings["training_smiles"] > 0:
        known = data.training_objects()
        g = torch.Generator().manual_seed(e.seed + 1)
        ref = known[torch.randint(len(known), (min(e.n_samples, len(known)),), generator=g)]
        out["training"] = molecule_metrics(env, ref, m.top_k, novelty=False)
        out["training"]["molecules"] = len(known)
    return out


def molecule_pictures(recipe, policy: nn.Module, data: EnvData, title: str) -> dict:
    """molecules.png: the best distinct molecules of ``sample.n`` rollouts with their scores;
    scores.png: the score histogram of the valid samples beside the training molecules'."""
    from rdkit.Chem import Draw  # the chem extra is present: the environment needs it

    env, s, k = data.env, recipe.config.sample, min(recipe.method.top_k, 12)
    assert isinstance(env, SmilesBuilder)
    g = torch.Generator().manual_seed(s.seed)
    x = sample_trajectories(env, policy, s.n, generator=g).last_states
    scores = env.scores(x).numpy()
    best: dict[str, float] = {}
    for smi, v in zip(env.to_smiles(x), scores.tolist(), strict=True):
        if not math.isnan(v):
            best[smi] = v
    ranked = sorted(best, key=best.__getitem__, reverse=True)[:k]
    figures = {}
    if ranked:
        from rdkit import Chem

        image = Draw.MolsToGridImage(
            [Chem.MolFromSmiles(r) for r in ranked],
            molsPerRow=4,
            subImgSize=(220, 180),
            legends=[f"{env.score} {best[r]:.3f}" for r in ranked],
        )
        rows = math.ceil(len(ranked) / 4)
        fig, axes = plots.figure(8.8, 1.8 * rows + 0.6)
        axes[0, 0].imshow(np.asarray(image.convert("RGB")))
        axes[0, 0].axis("off")
        fig.suptitle(f"{title}: best of {s.n} samples", fontsize=9)
        figures["molecules.png"] = fig
    fig, axes = plots.figure(6, 3.8)
    ax = axes[0, 0]
    valid = scores[~np.isnan(scores)]
    ax.hist(valid, bins=40, alpha=0.6, density=True, label=f"policy ({len(valid)} valid of {s.n})")
    if data.settings["training_smiles"] > 0:
        known = env.scores(data.training_objects()[: s.n]).numpy()
        ax.hist(known[~np.isnan(known)], bins=40, alpha=0.6, density=True,
                label="training molecules (MOSES)")  # fmt: skip
    ax.set_xlabel(env.score)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: scores of valid molecules", fontsize=9)
    figures["scores.png"] = fig
    return figures
