"""TARFlow and STARFlow: transformer autoregressive flows with exact likelihood.

Data are cut into T tokens (image patches, or groups of ``patch_size`` features of a vector). A
flow is a stack of blocks; block k reads the tokens in its own order (identity, then flipped,
alternating; positional embeddings flipped with them) and maps every token by an affine
transform whose parameters a causal transformer computes from the tokens before it:

    (a_i, mu_i) = g(x_<i),   z_i = (x_i - mu_i) / sigma_i,   log|det| = -sum_i log sigma_i

TARFlow (``sos=False``) shifts the transformer's outputs by one position, so token 1 is left as
it is (a_1 = mu_1 = 0) and sigma = exp(a); STARFlow (``sos=True``) feeds a learned start token
instead, so token 1 gets learned, data-independent parameters, and sigma = softplus(a + c) with
softplus(c) = 1, optionally with a soft clip a <- s tanh(a / s). Output projections start at
zero: the flow is the identity at initialisation. STARFlow's deep-shallow allocation is a
``layers_per_block`` tuple with one deep block nearest the prior (the last one).

Sampling inverts the blocks from the prior back to the data, each a triangular system solved
chunk by chunk by fixed-point (Jacobi) iteration: ``decode(block_size=1)`` is exact sequential
decoding with a key/value cache (one pass per token), ``block_size=T`` iterated to convergence
equals it exactly in at most T passes. Class-conditional flows guide the per-token Gaussians:
TARFlow's rule extrapolates (a, mu) from the unconditional pass, optionally annealed along the
sequence; STARFlow's rule is the product of Gaussians (1 + w) log p_c - w log p_u.

References:
    Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv:2412.06329.
    STARFlow: Scaling Latent Normalizing Flows (Gu et al., NeurIPS 2025), arXiv:2506.06276.
    STARFlow-V (Gu et al., 2025), arXiv:2511.20462 (block-wise Jacobi iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.nf.base import NormalizingFlow
from flowforge.nf.transformer import CausalTransformer, KVCache

__all__ = ["AutoregressiveBlock", "Decoded", "TransformerFlow", "TransformerFlowConfig", "guide"]

_INV_SOFTPLUS_1 = math.log(math.e - 1)  # softplus(_INV_SOFTPLUS_1) = 1: identity at init
GuidanceRule = Literal["tarflow", "starflow"]


@dataclass
class TransformerFlowConfig:
    """Hyperparameters of ``TransformerFlow``.

    Args:
        shape: one example: (D,) features or (C, H, W) images.
        patch_size: images: patch side (tokens of C p^2 values); vectors: features per token.
        width: transformer width.
        layers_per_block: layers of each block, from the data side to the prior side
            (TARFlow: equal; STARFlow's deep-shallow: e.g. (2, 2, 2, 8)).
        head_dim: channels per attention head (width must be a multiple).
        expansion: MLP width factor.
        num_classes: K classes for class-conditional flows (label K is the null class); 0: none.
        cond_features: F features of a continuous condition (B, F) (a system's parameters, a
            transferable proposal), added through a linear embedding; 0: none. Not with
            ``num_classes``.
        sos: STARFlow's learned start token instead of TARFlow's shift by one.
        scale: ``"exp"`` (sigma = exp(a), TARFlow) or ``"softplus"`` (STARFlow).
        soft_clip: s in a <- s tanh(a / s) (STARFlow: 4), or None.
        cond_blocks: ``"all"`` blocks see the label, or only the ``"top"`` one (nearest the
            prior, STARFlow's cond_top_only).
    """

    shape: tuple[int, ...] = (2,)
    patch_size: int = 1
    width: int = 64
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    head_dim: int = 32
    expansion: int = 4
    num_classes: int = 0
    cond_features: int = 0
    sos: bool = False
    scale: Literal["exp", "softplus"] = "exp"
    soft_clip: float | None = None
    cond_blocks: Literal["all", "top"] = "all"

    def tokens(self) -> tuple[int, int]:
        """(T tokens, d values per token) of one example."""
        if len(self.shape) == 1:
            (D,) = self.shape
            if D % self.patch_size:
                raise ValueError(
                    f"patch_size={self.patch_size} does not divide the {D} features; choose a "
                    f"divisor of {D} (features per token)."
                )
            return D // self.patch_size, self.patch_size
        C, H, W = self.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} does not divide the {H}x{W} images; choose a "
                f"divisor of {math.gcd(H, W)}."
            )
        return (H // self.patch_size) * (W // self.patch_size), C * self.patch_size**2


@dataclass
class Decoded:
    """What ``TransformerFlow.decode`` returns: the data and the transformer passes it took
    (one pass per token for sequential decoding; the Jacobi iterations otherwise)."""

    x: Tensor
    passes: int


def guide(
    log_sigma: Tensor, mu: Tensor, log_sigma_u: Tensor, mu_u: Tensor, w: float | Tensor,
    rule: GuidanceRule,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Guided per-token Gaussian (log sigma, mu) from the conditional and unconditional ones.

    ``"tarflow"``: a <- a + w (a - a_u), mu <- mu + w (mu - mu_u) (with a = log sigma).
    ``"starflow"``: the Gaussian product (1 + w) log p_c - w log p_u, with s = min(sigma_c /
    sigma_u, 1)^2 so that sigma stays positive: sigma = sigma_c / sqrt(1 + w - w s),
    mu = ((1 + w) mu_c - w s mu_u) / (1 + w - w s).

    Example:
        >>> ls, mu = torch.zeros(1), torch.ones(1)
        >>> guide(ls, mu, ls, torch.zeros(1), 2.0, "starflow")[1].item()  # equal sigmas: 1 + w
        3.0
    """
    if rule == "tarflow":
        return log_sigma + w * (log_sigma - log_sigma_u), mu + w * (mu - mu_u)
    s = torch.exp(2 * (log_sigma - log_sigma_u)).clamp(max=1.0)
    denom = 1 + w - w * s
    return log_sigma - 0.5 * torch.log(denom), ((1 + w) * mu - w * s * mu_u) / denom


class AutoregressiveBlock(nn.Module):
    """One affine autoregressive block over T tokens of d values, in its own token order.

    Tokens come in groups of ``group`` (1: single tokens; a video's frames for STARFlow-V): a
    group's parameters come from the groups before it (block-causal attention, full inside a
    group), so each group is one step of the autoregression.

    Args:
        config: the flow's hyperparameters (width, scales, start token, classes).
        layers: transformer layers.
        flip: read the tokens in reverse order (positional embeddings flipped with them).
        conditioned: add the class embedding.
        tokens: (T, d); default the config's ``tokens()``.
        group: tokens per autoregressive step (T a multiple of it).
    """

    def __init__(
        self,
        config: TransformerFlowConfig,
        layers: int,
        flip: bool,
        conditioned: bool,
        tokens: tuple[int, int] | None = None,
        group: int = 1,
    ):
        super().__init__()
        c = config
        T, d = tokens if tokens is not None else c.tokens()
        if group < 1 or T % group:
            raise ValueError(f"group={group} must divide the {T} tokens.")
        self.T, self.d, self.flip, self.group = T, d, flip, group
        self.sos, self.scale, self.soft_clip = c.sos, c.scale, c.soft_clip
        self.proj_in = nn.Linear(d, c.width)
        self.pos_embed = nn.Parameter(torch.randn(T, c.width) * 0.02)
        self.sos_token = nn.Parameter(torch.randn(1, group, d)) if c.sos else None
        self.class_embed = (
            nn.Embedding(c.num_classes + 1, c.width) if conditioned and c.num_classes else None
        )
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        self.cond_embed = (
            nn.Linear(c.cond_features, c.width) if conditioned and c.cond_features else None
        )
        self.net = CausalTransformer(c.width, layers, c.head_dim, c.expansion)
        self.proj_out = nn.Linear(c.width, 2 * d)
        nn.init.zeros_(self.proj_out.weight)  # the identity flow at initialisation
        nn.init.zeros_(self.proj_out.bias)

    def _order(self, tokens: Tensor) -> Tensor:
        return tokens.flip(1) if self.flip else tokens

    def _run(self, u: Tensor, start: int, cond: Tensor | None, cache: KVCache | None):
        """Parameters at input positions start..start+L-1 for inputs ``u`` (B, L, d) after the
        cached prefix: ((log sigma, mu) each (B, L, d), the extended cache)."""
        pos = self._order(self.pos_embed[None])[0, start : start + u.shape[1]]  # flipped too
        h = self.proj_in(u) + pos
        if self.class_embed is not None:
            h = h + self.class_embed(cond)[:, None]
        if self.cond_embed is not None:
            h = h + self.cond_embed(cond.to(h.dtype))[:, None]
        h, cache = self.net(h, cache, self.group)
        a, mu = self.proj_out(h).chunk(2, dim=-1)
        if self.soft_clip is not None:
            a = self.soft_clip * torch.tanh(a / self.soft_clip)
        if self.scale == "exp":
            return a, mu, cache
        return torch.log(F.softplus(a + _INV_SOFTPLUS_1)), mu, cache

    def _inputs(self, x: Tensor) -> Tensor:
        """The input sequence of a token sequence: [sos, x_1..x_{T-G}] or x itself."""
        if self.sos_token is None:
            return x
        G = self.group
        return torch.cat([self.sos_token.expand(len(x), -1, -1), x[:, : self.T - G]], dim=1)

    def _params(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """(log sigma, mu) of every token (B, T, d) from the tokens x in the block's order."""
        G = self.group
        if self.sos_token is not None:
            log_sigma, mu, _ = self._run(self._inputs(x), 0, cond, None)
            return log_sigma, mu
        if self.T == G:  # TARFlow's first group is its own latent
            return torch.zeros_like(x), torch.zeros_like(x)
        # group g's parameters come from positions of group g - 1; the last is not needed
        log_sigma, mu, _ = self._run(x[:, : self.T - G], 0, cond, None)
        log_sigma = torch.cat([torch.zeros_like(log_sigma[:, :G]), log_sigma], 1)
        mu = torch.cat([torch.zeros_like(mu[:, :G]), mu], 1)
        return log_sigma, mu

    def forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """Tokens (B, T, d) in data order -> (z tokens in data order, logdet (B,))."""
        x = self._order(x)
        log_sigma, mu = self._params(x, cond)
        z = (x - mu) * torch.exp(-log_sigma)
        return self._order(z), -log_sigma.flatten(1).sum(1)

    def differentiable_decode(self, z: Tensor, cond: Tensor | None) -> Tensor:
        """z tokens -> x tokens with gradients (reparameterised samples, reverse KL): T / G
        whole-sequence fixed-point passes x <- mu(x) + sigma(x) z, exact after the last since
        each pass fixes one more group; no cache, no in-place writes."""
        z = self._order(z)
        x = z
        for _ in range(self.T // self.group):
            log_sigma, mu = self._params(x, cond)
            x = mu + torch.exp(log_sigma) * z
        return self._order(x)

    @torch.no_grad()
    def decode(
        self,
        z: Tensor,
        cond: Tensor | None,
        guidance: float,
        rule: GuidanceRule,
        annealed: bool,
        block_size: int,
        max_iter: int,
        tol: float,
        known: Tensor | None = None,
        init: Literal["noise", "previous"] = "noise",
    ) -> tuple[Tensor, int]:
        """Solve x from z tokens (B, T, d), chunk by chunk: ``block_size`` groups at a time by
        fixed-point iteration x_i <- mu_i(x_<i) + sigma_i(x_<i) z_i until the relative change
        falls under ``tol`` (or ``max_iter`` passes). ``known``: (B, K, d) given first tokens
        (in data order; not with ``flip``), kept as they are. ``init``: a chunk starts from
        its noise or from the last solved group (a video's previous frame). Returns
        (x tokens, passes)."""
        z = self._order(z)
        B, T, _ = z.shape
        G = self.group
        guided = guidance > 0 and self.class_embed is not None and cond is not None
        if guided:  # the conditional and the unconditional branch in one batch
            z = torch.cat([z, z])
            null = torch.full_like(cond, self.class_embed.num_embeddings - 1)
            cond = torch.cat([cond, null])
        x = z.clone()
        K = 0
        if known is not None:
            if self.flip:
                raise ValueError("known tokens are for blocks in data order (flip=False).")
            K = known.shape[1]
            if K % G:
                raise ValueError(f"known holds {K} tokens; give whole groups of {G}.")
            x[:, :K] = torch.cat([known, known]) if guided else known
        offset = 0 if self.sos_token is not None else G  # input position p -> token p + offset
        first = 0 if self.sos_token is not None else G  # TARFlow's group 1 is its own latent
        bounds = sorted({*range(first, T, block_size * G), T, *([K] if first < K < T else [])})
        cache, passes = KVCache(), 0
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            inputs = range(s - offset, e - offset)  # input positions of tokens s..e-1
            if init == "previous" and s >= G and e > K:
                prev = x[:, s - G : s]
                x[:, s:e] = prev.repeat(1, (e - s) // G, 1)
            for _ in range(max_iter):
                seq = self._inputs(x) if self.sos_token is not None else x
                u = seq[:, inputs.start : inputs.stop]
                log_sigma, mu, new_cache = self._run(u, inputs.start, cond, cache)
                passes += 1
                if e <= K:  # given tokens: the pass only extends the cache
                    break
                if guided:
                    (ls_c, ls_u), (mu_c, mu_u) = log_sigma.chunk(2), mu.chunk(2)
                    w = guidance
                    if annealed:  # g_i = w (i + 1) / (T - 1) along the sequence
                        i = torch.arange(s, e, device=z.device, dtype=z.dtype)
                        w = guidance * (i + 1)[None, :, None] / max(T - 1, 1)
                    log_sigma, mu = guide(ls_c, mu_c, ls_u, mu_u, w, rule)
                    log_sigma, mu = torch.cat([log_sigma, log_sigma]), torch.cat([mu, mu])
                new = mu + torch.exp(log_sigma) * z[:, s:e]
                change = (new - x[:, s:e]).square().mean() / new.square().mean().clamp_min(1e-30)
                x[:, s:e] = new
                if e - s == G or change <= tol:
                    break
            cache = new_cache
        x = x[:B] if guided else x
        return self._order(x), passes


class TransformerFlow(NormalizingFlow):
    """A TARFlow / STARFlow model: patchify, blocks with alternating orders, Gaussian prior.

    Args:
        config: the ``TransformerFlowConfig``.

    References:
        Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv:2412.06329.

    Example:
        >>> flow = TransformerFlow(TransformerFlowConfig(shape=(2,), width=16, head_dim=8))
        >>> x = torch.randn(4, 2)
        >>> z, logdet = flow(x)  # the identity at initialisation
        >>> torch.equal(z, x), logdet.abs().max().item()
        (True, 0.0)
    """

    def __init__(self, config: TransformerFlowConfig) -> None:
        super().__init__()
        c = config
        if not c.layers_per_block:
            raise ValueError("layers_per_block=() holds no block; give at least one.")
        if c.scale not in ("exp", "softplus"):
            raise ValueError(f"scale={c.scale!r} must be 'exp' or 'softplus'.")
        if c.num_classes and c.cond_features:
            raise ValueError(
                f"num_classes={c.num_classes} and cond_features={c.cond_features}: a flow takes "
                "labels or a feature vector as its condition, not both."
            )
        self.config = c
        self.event_shape = tuple(c.shape)
        self.T, self.d = c.tokens()
        last = len(c.layers_per_block) - 1
        self.blocks = nn.ModuleList(
            AutoregressiveBlock(
                c, n, flip=k % 2 == 1, conditioned=c.cond_blocks == "all" or k == last
            )
            for k, n in enumerate(c.layers_per_block)
        )

    def tokenize(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, T, d) tokens (image patches in raster order)."""
        if len(self.event_shape) == 1:
            return x.reshape(len(x), self.T, self.d)
        p = self.config.patch_size
        return F.unfold(x, p, stride=p).transpose(1, 2)

    def untokenize(self, tokens: Tensor) -> Tensor:
        """(B, T, d) tokens -> (B, *shape)."""
        if len(self.event_shape) == 1:
            return tokens.reshape(len(tokens), *self.event_shape)
        _, H, W = self.event_shape
        p = self.config.patch_size
        return F.fold(tokens.transpose(1, 2), (H, W), p, stride=p)

    def _check(self, x: Tensor, cond: Tensor | None) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; this flow models examples of shape "
                f"{self.event_shape} (pass (B, {', '.join(map(str, self.event_shape))}))."
            )
        K, F_ = self.config.num_classes, self.config.cond_features
        if F_:
            if cond is None or cond.shape != (len(x), F_):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(
                    f"this flow is conditioned on {F_} features: pass cond of shape "
                    f"({len(x)}, {F_}), got {got}."
                )
            return
        if cond is not None and K == 0:
            raise ValueError("cond was given to an unconditional flow (num_classes=0); drop it.")
        if cond is not None and ((cond < 0) | (cond > K)).any():
            raise ValueError(f"cond holds labels outside 0..{K} (K = {K} is the null class).")

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data (B, *shape) -> (z (B, *shape), log|det dz/dx| (B,)), through every block."""
        self._check(x, cond)
        cond = self._null(cond, len(x), x.device)
        h, logdet = self.tokenize(x), torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for block in self.blocks:
            h, ld = block(h, cond)
            logdet = logdet + ld
        return self.untokenize(h), logdet

    def _null(self, cond: Tensor | None, n: int, device) -> Tensor | None:
        if self.config.cond_features:
            return cond
        if self.config.num_classes == 0:
            return None
        if cond is None:  # unconditional: the null class
            return torch.full((n,), self.config.num_classes, dtype=torch.long, device=device)
        return cond.long()

    def decode(
        self,
        z: Tensor,
        cond: Tensor | None = None,
        *,
        guidance: float = 0.0,
        rule: GuidanceRule = "tarflow",
        annealed: bool = False,
        block_size: int = 1,
        max_iter: int | None = None,
        tol: float = 0.0,
    ) -> Decoded:
        """Latent -> data, block by block from the prior side, with its cost.

        Args:
            z: (B, *shape) latent.
            cond: (B,) labels of a class-conditional flow (None: the null class).
            guidance: guidance weight w (0: none); ``rule`` ``"tarflow"`` or ``"starflow"``;
                ``annealed``: w grows along the sequence as w (i + 1) / (T - 1).
            block_size: tokens solved together: 1 is exact sequential decoding (a KV-cached
                pass per token), more is Jacobi iteration over chunks of that many tokens.
            max_iter: Jacobi passes per chunk at most (default: the chunk's length, enough for
                an exact solution of the triangular system).
            tol: stop a chunk once ||x_new - x_old||^2 / ||x_new||^2 <= tol (0: run to the
                exact fixed point, or ``max_iter``).

        Returns:
            ``Decoded(x, passes)``.
        """
        self._check(z, cond)
        if block_size < 1:
            raise ValueError(f"block_size={block_size} must be >= 1 (1: sequential decoding).")
        if guidance < 0:
            raise ValueError(f"guidance={guidance} must be >= 0 (0: none).")
        if guidance > 0 and (cond is None or self.config.num_classes == 0):
            raise ValueError(
                f"guidance={guidance} needs a class-conditional flow and its labels (cond); "
                "pass cond to a flow with num_classes > 0, or set guidance=0."
            )
        cond_ = self._null(cond, len(z), z.device)
        h, passes = self.tokenize(z), 0
        for block in reversed(self.blocks):
            limit = max_iter if max_iter is not None else block_size
            h, n = block.decode(h, cond_, guidance, rule, annealed, block_size, limit, tol)
            passes += n
        return Decoded(self.untokenize(h), passes)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Latent -> data by exact sequential decoding."""
        return self.decode(z, cond).x

    def rsample(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` reparameterised samples (gradients flow to the weights): the inverse by
        whole-sequence fixed-point passes, T per block (for short sequences: vectors)."""
        param = next(self.parameters())
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=param.dtype)
        self._check(z, cond)
        cond_ = self._null(cond, n, param.device)
        h = self.tokenize(z.to(param.device))
        for block in reversed(self.blocks):
            h = block.differentiable_decode(h, cond_)
        return self.untokenize(h)
