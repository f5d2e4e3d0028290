"""Molecules as SMILES strings built one token at a time, scored with RDKit.

A state is a prefix of at most L tokens of a fixed vocabulary (atoms, bonds, branches, ring
digits); a move appends a token, the exit ends the string. Appending is a tree (each state has
one parent), so P_B = 1 and a string determines its trajectory: training molecules turn into
trajectories (``gfn.backward_trajectories``) for off-policy training.

The forward mask enforces the SMILES grammar that can be read from the prefix, vectorised over
the batch: a string starts with an atom; a bond follows an atom, a digit or a branch sign and is
followed by an atom or a closing ring digit; a branch opens after an atom, a ring digit or a
closed branch; ``)`` closes an open branch after an atom, a digit or a ``)``; a ring digit
follows an atom or a digit and either opens the lowest free digit (not one closed at the same
atom) or closes an open one opened before the current atom; the exit needs every branch and
ring closed. A token is
allowed only while the rest of the budget can still close the string: with A = 1 when the next
token must be an atom before anything can close (after a bond, a ``(``, at the start, after a
``)`` with rings open, or with a ring opened at the current atom), a prefix needs at least

    need(s) = A + open branches + open rings

more tokens, and a token is valid only when need(s') <= L - |s'|. Appending an atom, then
closing the lowest ring, then the innermost branch lowers need by one at each step, so every
state keeps a valid action. Valences and aromaticity are left to RDKit: a valid string gets

    log R(x) = beta * score(x)      (score: QED in [0, 1], or Crippen logP clipped to [-10, 10])

and one it rejects the floor log R(x) = log_floor - |x| log V (V tokens). The per-token term
matters: there are up to V^l strings of l tokens, almost all invalid, so a constant floor would
give them most of the total reward (measured: TB on 8-token strings with a constant floor of -4
converged to sampling invalid strings only); with it their total reward stays below
(L + 1) exp(log_floor) however many there are.

Scores are cached per string (RDKit is called once per new molecule).

References:
    Flow Network based Generative Models for Non-Iterative Diverse Candidate Generation
    (Bengio et al., 2021), arXiv:2106.04399 (molecule generation with GFlowNets).
    SMILES, a chemical language and information system (Weininger, 1988), J. Chem. Inf.
    Comput. Sci. 28, 31.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from flowforge.data.smiles import SCORES, score_smiles, tokenize
from flowforge.gfn.env import SequenceEnv

__all__ = ["DEFAULT_VOCAB", "SmilesBuilder"]

ATOMS = ("C", "c", "N", "n", "O", "o", "S", "s", "F", "Cl", "Br", "[nH]")
BONDS = ("=", "#", "-")
RING_DIGITS = ("1", "2", "3", "4")
DEFAULT_VOCAB = (*ATOMS, *BONDS, "(", ")", *RING_DIGITS)
_ATOM, _BOND, _OPEN, _CLOSE, _RING, _NONE = range(6)  # token classes; _NONE: empty prefix
_LOGP_CLIP = 10.0


def _token_class(token: str) -> int:
    if token in BONDS:
        return _BOND
    if token == "(":
        return _OPEN
    if token == ")":
        return _CLOSE
    if token.isdigit():
        return _RING
    if token.startswith("[") or token[0].isalpha():
        return _ATOM
    raise ValueError(f"token {token!r} is not an atom, bond, branch or ring digit.")


class SmilesBuilder(SequenceEnv):
    """Append SMILES tokens to build a molecule of at most ``max_length`` tokens.

    States are (B, L) token ids, -1 past the end; actions 0 .. V - 1 append that token, V exits.
    The encoding is the one-hot of each position (L V features).

    Args:
        max_length: L, the most tokens of a string.
        score: ``qed`` or ``logp`` (see the module).
        beta: log R = beta * score for valid molecules.
        log_floor: log R of strings RDKit rejects is log_floor - |x| log V (a floor, never 0).
        vocab: the tokens; single-digit ring labels must be ``"1"`` .. in order.

    Example:
        >>> env = SmilesBuilder(max_length=8)
        >>> x = env.from_smiles(["CCO", "c1ccccc1"])
        >>> env.to_smiles(x), env.forward_mask(x)[:, env.exit_action].tolist()
        (['CCO', 'c1ccccc1'], [True, True])
        >>> bool(env.forward_mask(env.initial_states(1))[0, env.vocab.index("(")])
        False
    """

    def __init__(
        self,
        max_length: int = 32,
        score: str = "qed",
        beta: float = 8.0,
        log_floor: float = -4.0,
        vocab: Sequence[str] = DEFAULT_VOCAB,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length={max_length!r} must be >= 1.")
        if score not in SCORES:
            raise ValueError(f"score={score!r}; choose one of {', '.join(SCORES)}.")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta={beta!r} must be finite and >= 0.")
        if not math.isfinite(log_floor):
            raise ValueError(
                f"log_floor={log_floor!r} must be finite: it is log R of invalid strings, and "
                "a GFlowNet needs R > 0 (e.g. log_floor=-4)."
            )
        self.vocab = tuple(vocab)
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab lists a token twice.")
        self.classes = torch.tensor([_token_class(t) for t in self.vocab] + [_NONE])
        digits = [t for t in self.vocab if t.isdigit()]
        if digits != [str(i + 1) for i in range(len(digits))]:
            raise ValueError(f"ring digits of vocab must be '1', '2', ... in order, not {digits}.")
        self.digit_ids = torch.tensor([self.vocab.index(d) for d in digits], dtype=torch.long)
        self.open_id = self.vocab.index("(") if "(" in self.vocab else -2
        self.close_id = self.vocab.index(")") if ")" in self.vocab else -2
        self.max_length, self.score, self.beta, self.log_floor = max_length, score, beta, log_floor
        V = len(self.vocab)
        self.state_shape = (max_length,)
        self.n_actions = V + 1
        self.max_steps = max_length
        self.encoding_dim = max_length * V
        self._cache: dict[str, float] = {}

    # --- strings <-> states -------------------------------------------------------------------
    def to_smiles(self, states: Tensor) -> list[str]:
        """The strings of the states (their prefixes so far)."""
        rows = states.cpu().tolist()
        return ["".join(self.vocab[t] for t in row if t >= 0) for row in rows]

    def from_smiles(self, smiles: Sequence[str], strict: bool = True) -> Tensor:
        """(n, L) states of the strings; with ``strict=False`` strings that do not fit (unknown
        tokens, too long, or refused by the grammar masks) give rows of -1 instead of an error
        (``fits`` tells which)."""
        L = self.max_length
        out = torch.full((len(smiles), L), -1, dtype=torch.long)
        index = {t: i for i, t in enumerate(self.vocab)}
        for i, s in enumerate(smiles):
            try:
                ids = [index[t] for t in tokenize(s)]
            except (KeyError, ValueError):
                ids = None
            if ids is None or len(ids) > L:
                if strict:
                    raise ValueError(
                        f"{s!r} has tokens outside the vocabulary or more than {L} tokens."
                    )
                continue
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        ok = self.fits(out)
        if strict and not ok.all():
            bad = smiles[int((~ok).nonzero()[0])]
            raise ValueError(f"{bad!r} breaks the grammar masks of the environment.")
        return out.masked_fill(~ok[:, None], -1)

    def fits(self, x: Tensor) -> Tensor:
        """(B,) bool: the rows are complete strings every token of which the forward masks allow
        (replayed token by token, batched)."""
        n = self.lengths(x)
        ok = (n > 0) & ~((x[:, :-1] < 0) & (x[:, 1:] >= 0)).any(1)  # no gaps
        s = self.initial_states(len(x), x.device)
        for t in range(self.max_length):
            going = t < n
            if not going.any():
                break
            a = x[:, t].clamp(min=0)
            allowed = self.forward_mask(s).gather(1, a[:, None]).squeeze(1)
            ok &= allowed | ~going
            s = torch.where(going[:, None], s.scatter(1, torch.full_like(n, t)[:, None],
                                                      a[:, None]), s)  # fmt: skip
        return ok & self.forward_mask(s)[:, -1]

    # --- the contract -------------------------------------------------------------------------
    def _summary(self, states: Tensor):
        """Per state: length, class of the last token, open branches, open ring digits (B, D)
        and the digits written since the last atom (B, D)."""
        B, L = states.shape
        device = states.device
        n = self.lengths(states)
        classes = self.classes.to(device)
        last_tok = states.gather(1, (n - 1).clamp(min=0)[:, None]).squeeze(1)
        last = torch.where(n > 0, classes[last_tok.clamp(min=0)], _NONE)
        depth = (states == self.open_id).sum(1) - (states == self.close_id).sum(1)
        pos = torch.arange(L, device=device)
        hits = states[:, None, :] == self.digit_ids.to(device)[None, :, None]  # (B, D, L)
        ring_open = hits.sum(-1) % 2 == 1
        last_hit = torch.where(hits, pos, -1).amax(-1)  # (B, D)
        is_atom = (classes[states.clamp(min=0)] == _ATOM) & (states >= 0)
        last_atom = torch.where(is_atom, pos, -1).amax(1)  # (B,)
        touched_here = last_hit > last_atom[:, None]  # opened or closed at the current atom
        return n, last, depth, ring_open, touched_here

    @staticmethod
    def _need(last: Tensor, depth: Tensor, n_open: Tensor, any_here: Tensor) -> Tensor:
        """need(s) = A + open branches + open rings (see the module)."""
        a = (
            (last == _BOND) | (last == _OPEN) | (last == _NONE)
            | ((last == _CLOSE) & (n_open > 0)) | any_here
        )  # fmt: skip
        return a.long() + depth + n_open

    def forward_mask(self, states: Tensor) -> Tensor:
        n, last, depth, ring_open, touched = self._summary(states)
        here = ring_open & touched  # rings opened at the current atom
        B, device = len(states), states.device
        budget = self.max_length - n - 1  # tokens left after the appended one
        classes = self.classes[:-1].to(device)  # (V,)
        atom_ids, bond_ids = (classes == _ATOM).nonzero()[:, 0], (classes == _BOND).nonzero()[:, 0]
        n_open = ring_open.sum(1)
        any_here = here.any(1)
        after_atomlike = (last == _ATOM) | (last == _RING)
        mask = torch.zeros(B, self.n_actions, dtype=torch.bool, device=device)
        # atoms: anywhere; then A = 0, nothing else changes
        ok = self._need(torch.full_like(last, _ATOM), depth, n_open, torch.zeros_like(any_here))
        mask[:, atom_ids] = (ok <= budget)[:, None]
        # bonds: after an atom, a digit, a branch's ( or ); then an atom is needed
        bond_ok = after_atomlike | (last == _OPEN) | (last == _CLOSE)
        need = self._need(torch.full_like(last, _BOND), depth, n_open, any_here)
        mask[:, bond_ids] = (bond_ok & (need <= budget))[:, None]
        if self.open_id >= 0:
            need = self._need(torch.full_like(last, _OPEN), depth + 1, n_open, any_here)
            mask[:, self.open_id] = (after_atomlike | (last == _CLOSE)) & (need <= budget)
        if self.close_id >= 0:
            close_ok = (depth > 0) & (after_atomlike | (last == _CLOSE))
            need = self._need(torch.full_like(last, _CLOSE), depth - 1, n_open, any_here)
            mask[:, self.close_id] = close_ok & (need <= budget)
        # ring digits: open the lowest free one not closed at this atom, or close one opened
        # before it; after a bond only closing ("c-2", "C=1")
        free = ~ring_open & ~touched
        lowest_free = free & (free.long().cumsum(1) == 1)  # (B, D)
        need_open = self._need(torch.full_like(last, _RING), depth, n_open + 1,
                               torch.ones_like(any_here))  # fmt: skip
        need_close = self._need(torch.full_like(last, _RING), depth, n_open - 1, any_here)
        opening = lowest_free & (need_open <= budget)[:, None]
        closing = ring_open & ~here & (need_close <= budget)[:, None]
        mask[:, self.digit_ids.to(device)] = (after_atomlike[:, None] & (opening | closing)) | (
            (last == _BOND)[:, None] & closing
        )
        exit_ok = (n > 0) & (depth == 0) & (n_open == 0) & (after_atomlike | (last == _CLOSE))
        mask[:, -1] = exit_ok
        return mask

    def scores(self, x: Tensor) -> Tensor:
        """(B,) float64 score of each string (NaN where RDKit rejects it), cached."""
        smiles = self.to_smiles(x)
        new = sorted({s for s in smiles if s not in self._cache})
        if new:
            self._cache.update(zip(new, score_smiles(new, self.score).tolist(), strict=True))
        return torch.tensor([self._cache[s] for s in smiles], dtype=torch.float64)

    def log_reward(self, x: Tensor) -> Tensor:
        s = self.scores(x)
        if self.score == "logp":
            s = s.clamp(-_LOGP_CLIP, _LOGP_CLIP)
        per_token = math.log(self.n_actions - 1) * self.lengths(x).double().cpu()
        log_r = torch.where(torch.isnan(s), self.log_floor - per_token, self.beta * s)
        return log_r.to(device=x.device, dtype=torch.get_default_dtype())

    def encode(self, states: Tensor) -> Tensor:
        V = self.n_actions - 1
        one_hot = torch.zeros(*states.shape, V, device=states.device)
        one_hot.scatter_(-1, states.clamp(min=0)[..., None], (states >= 0)[..., None].float())
        return one_hot.flatten(1).to(torch.get_default_dtype())

    def valid(self, x: Tensor) -> np.ndarray:
        """(B,) bool: the strings RDKit accepts."""
        return ~np.isnan(self.scores(x).numpy())
