"""Scores of the ViT-suited zero-cost proxies: AZ-NAS, ZiCo, MeCo and DSS (TF-TAS).

The registry (``evaluators.proxies``) wraps these functions: it makes the working copy (train or
eval mode, dropout and stochastic depth off), moves the batch and records failures. Every function
here takes that prepared copy, may change its gradients or weights, and returns HIGHER = BETTER
numbers. This module imports nothing from ``evaluators.proxies`` (no import cycle).

Where the proxies read FasterViT (``block_features``): the stem output and the output of every
residual block, i.e. each ``ConvBlock`` of the conv stages and the local tokens of each
``HATBlock`` of the transformer stages (carrier tokens are summaries of those tokens and are
left out). Every feature is returned as a channels-last map ``(B, H, W, C)`` in image order:
the windows of a transformer stage are put back in place and its padding is cropped, so that
consecutive features of a stage line up position by position and those of consecutive stages
differ by the stride-2 downsampling only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces.fastervit import ConvStage, FasterViT, TransformerStage

__all__ = [
    "ProxyError", "BlockFeature", "block_features", "spectral_entropy", "az_nas_components", "jacobian_score",
    "zico_score", "layer_snr", "meco_score", "min_correlation_eigenvalue", "dss_score", "Weighted",
]

Weighted = Union[nn.Conv2d, nn.Linear]  # a layer whose weight the gradient proxies read


class ProxyError(RuntimeError):
    """A proxy cannot give a finite score for this network (the message says why)."""


# ---------------------------------------------------------------------------------------------
# block features
# ---------------------------------------------------------------------------------------------
@dataclass
class BlockFeature:
    """One residual block's output: the tensor as the network passes it on, and how to map it."""

    name: str
    raw: torch.Tensor
    to_map: Callable[[torch.Tensor], torch.Tensor]  # a raw-shaped tensor -> (B, H, W, C)

    def map(self) -> torch.Tensor:
        return self.to_map(self.raw)


def _nchw_to_map(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)


def _tokens_to_map(geom) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B*windows, window², C) local tokens of a transformer stage -> (B, H, W, C), padding cropped."""
    (hp, wp), (h, w), ws = geom.padded, geom.feature, geom.window

    def fn(t: torch.Tensor) -> torch.Tensor:
        c = t.shape[-1]
        b = t.shape[0] // ((hp // ws) * (wp // ws))
        m = t.reshape(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        return m[:, :h, :w]
    return fn


def _feature_points(model: nn.Module) -> list[tuple[str, nn.Module, Callable[[torch.Tensor], torch.Tensor]]]:
    if not isinstance(model, FasterViT):
        raise ProxyError(f"this proxy reads FasterViT block outputs; got a {type(model).__name__}")
    points: list[tuple[str, nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = [("stem", model.stem, _nchw_to_map)]
    for i, stage in enumerate(model.stages):
        if isinstance(stage, ConvStage):
            points += [(f"stages.{i}.blocks.{j}", blk, _nchw_to_map) for j, blk in enumerate(stage.blocks)]
        elif isinstance(stage, TransformerStage):
            fn = _tokens_to_map(stage.geom)
            points += [(f"stages.{i}.blocks.{j}", blk, fn) for j, blk in enumerate(stage.blocks)]
        else:
            raise ProxyError(f"stage {i} is a {type(stage).__name__}, neither a ConvStage nor a TransformerStage")
    return points


def block_features(model: nn.Module, x: torch.Tensor) -> tuple[list[BlockFeature], torch.Tensor]:
    """Run ``model(x)`` once and return the stem/block outputs (still in the autograd graph
    when gradients are enabled) and the logits."""
    feats: list[BlockFeature] = []
    handles = []
    for name, mod, to_map in _feature_points(model):
        def hook(_m: nn.Module, _inp: tuple, out, name=name, to_map=to_map) -> None:
            t = out[0] if isinstance(out, tuple) else out  # HATBlock returns (local tokens, carrier tokens)
            feats.append(BlockFeature(name, t, to_map))
        handles.append(mod.register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return feats, logits


# ---------------------------------------------------------------------------------------------
# AZ-NAS
# ---------------------------------------------------------------------------------------------
def spectral_entropy(rows: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the covariance of ``rows`` (samples x channels).

    The AZ-NAS expressivity of one feature: log(C) when the channels are isotropic, 0 when all
    the variance lies along one direction (or there is none).
    """
    r = rows.double()
    r = r - r.mean(dim=0, keepdim=True)
    cov = r.T @ r / r.shape[0]
    s = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    total = s.sum()
    if not total > 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def _space_to_depth(m: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B, Ho, Wo, s*s*C) for a stride s = ceil(H/Ho) (zero-padded to s*Ho)."""
    b, h, w, c = m.shape
    ho, wo = out_hw
    s = -(-h // ho)
    if -(-w // wo) != s or -(-h // s) != ho or -(-w // s) != wo:
        raise ProxyError(f"cannot pair a {h}x{w} feature with a {ho}x{wo} one by one stride")
    m = F.pad(m, (0, 0, 0, s * wo - w, 0, s * ho - h))
    return m.reshape(b, ho, s, wo, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ho, wo, s * s * c)


def jacobian_score(g_in: torch.Tensor, g_out: torch.Tensor) -> float:
    """AZ-NAS trainability of one block from a random probe: -σ - 1/σ + 2 (<= 0, 0 at σ = 1).

    ``g_out`` (B, Ho, Wo, Co) is the Rademacher probe of the block output, ``g_in`` (B, Hi, Wi, Ci)
    the probe pulled back to the block input (v^T J). Rows are paired by position (stride folded
    into channels), and σ is the largest singular value of E[g_in g_out^T], an estimate of the
    block Jacobian's spectral norm.
    """
    if g_in.shape[1:3] != g_out.shape[1:3]:
        g_in = _space_to_depth(g_in, (g_out.shape[1], g_out.shape[2]))
    a = g_in.reshape(-1, g_in.shape[-1]).double()
    o = g_out.reshape(-1, g_out.shape[-1]).double()
    mat = a.T @ o / a.shape[0]
    sigma = float(torch.linalg.svdvals(mat).max())
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def az_nas_components(model: nn.Module, x: torch.Tensor, *, seed: int,
                      trainability: bool = True) -> dict[str, float]:
    """AZ-NAS expressivity, progressivity and (optionally) trainability of a prepared copy.

    expressivity = sum over features of ``spectral_entropy``; progressivity = the smallest
    increase of that entropy from one feature to the next; trainability = mean ``jacobian_score``
    over consecutive feature pairs, with Rademacher probes drawn from ``seed`` (on the CPU, so
    every device sees the same probes).
    """
    with torch.set_grad_enabled(trainability):
        feats, _ = block_features(model, x)
    if len(feats) < 2:
        raise ProxyError("AZ-NAS needs at least two block features")
    ent = []
    for f in feats:
        m = f.to_map(f.raw.detach())
        ent.append(spectral_entropy(m.reshape(-1, m.shape[-1])))
    out = dict(expressivity=sum(ent), progressivity=min(b - a for a, b in zip(ent, ent[1:])))
    if not trainability:
        return out
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for i in reversed(range(1, len(feats))):
        f_out, f_in = feats[i].map(), feats[i - 1]
        probe = (torch.randint(0, 2, tuple(f_out.shape), generator=gen) * 2 - 1).to(f_out.device, f_out.dtype)
        (g_raw,) = torch.autograd.grad(f_out, f_in.raw, grad_outputs=probe, retain_graph=True, allow_unused=True)
        if g_raw is None:
            raise ProxyError(f"{feats[i].name} does not depend on {f_in.name}")
        g_in = f_in.to_map(g_raw)
        if g_in.shape == probe.shape and torch.equal(g_in, probe):
            continue  # an identity block: no Jacobian to score (as in AZ-NAS)
        scores.append(jacobian_score(g_in, probe))
    if not scores:
        raise ProxyError("AZ-NAS trainability: every block is an identity map")
    out["trainability"] = sum(scores) / len(scores)
    return out


# ---------------------------------------------------------------------------------------------
# ZiCo
# ---------------------------------------------------------------------------------------------
def layer_snr(grads: torch.Tensor) -> Optional[float]:
    """ZiCo's term for one layer: log sum_theta mean|g| / std(g) over the ``grads`` rows
    (one row per batch, population std); parameters whose gradient does not vary are left out.
    None when no parameter varies (the layer adds nothing, as in ZiCo)."""
    g = grads.double()
    std = g.std(dim=0, unbiased=False)
    keep = std > 0
    if not bool(keep.any()):
        return None
    total = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
    return math.log(total) if total > 0 else None


def zico_score(model: nn.Module, layers: Sequence[Weighted], x: torch.Tensor, y: torch.Tensor, *,
               splits: int = 2) -> float:
    """Sum over ``layers`` of ``layer_snr`` of the cross-entropy gradients of ``splits`` batches.

    The batch is cut into ``splits`` equal consecutive parts, each a separate forward/backward.
    """
    n = x.shape[0]
    if splits < 2 or n < splits:
        raise ProxyError(f"ZiCo needs >= 2 batches: a batch of {n} cannot be cut into {splits}")
    weights = [layer.weight for layer in layers]
    per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
    for k in range(splits):
        sl = slice(k * n // splits, (k + 1) * n // splits)
        loss = F.cross_entropy(model(x[sl]), y[sl])
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        for acc, g in zip(per_layer, grads):
            if g is not None:
                acc.append(g.detach().reshape(-1).float())
    snrs = [layer_snr(torch.stack(acc)) for acc in per_layer if len(acc) == splits]
    terms = [t for t in snrs if t is not None]
    if not terms:
        raise ProxyError("ZiCo: no layer has a gradient that varies across batches")
    return float(sum(terms))


# ---------------------------------------------------------------------------------------------
# MeCo
# ---------------------------------------------------------------------------------------------
def min_correlation_eigenvalue(fmap: torch.Tensor) -> torch.Tensor:
    """Per image of a (B, H, W, C) map: the smallest eigenvalue of the C x C Pearson correlation
    of the channels over the H*W positions (0 <= value <= 1). A channel with no variance gets a
    zero row and column (its correlation is undefined), as in MeCo's code."""
    b, h, w, c = fmap.shape
    if h * w <= c:  # centred over h*w positions: rank <= h*w - 1 < c, so the smallest eigenvalue is 0
        return torch.zeros(b, dtype=torch.float64, device=fmap.device)
    z = fmap.reshape(b, h * w, c).double()
    z = z - z.mean(dim=1, keepdim=True)
    norm = z.norm(dim=1, keepdim=True)
    z = torch.where(norm > 0, z / norm.clamp_min(1e-300), torch.zeros_like(z))
    corr = z.transpose(1, 2) @ z
    return torch.linalg.eigvalsh(corr)[:, 0].clamp(0.0, 1.0)


def meco_score(model: nn.Module, x: torch.Tensor, *, sample: Optional[int] = None, seed: int = 0) -> float:
    """Sum over block features of the smallest channel-correlation eigenvalue, averaged over the
    batch's images.

    ``sample=k`` is MeCo_opt: per feature, k channels drawn without replacement (from ``seed``,
    on the CPU; the same channels for every image), the eigenvalue of their k x k correlation
    times C / k (all channels when C <= k).
    """
    with torch.no_grad():
        feats, _ = block_features(model, x)
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for f in feats:
        m = f.map()
        c = m.shape[-1]
        scale = 1.0
        if sample is not None and c > sample:
            idx = torch.randperm(c, generator=gen)[:sample].to(m.device)
            m, scale = m[..., idx], c / sample
        total += scale * float(min_correlation_eigenvalue(m).mean())
    return total


# ---------------------------------------------------------------------------------------------
# DSS (TF-TAS)
# ---------------------------------------------------------------------------------------------
def dss_score(model: nn.Module, msa: Sequence[Weighted], saliency: Sequence[Weighted], x: torch.Tensor) -> float:
    """log(S_D + S_S) on a linearised copy (weights and buffers already |.|, float64, eval).

    R = sum of the logits of ``x``; S_D = sum over ``msa`` layers of ||W||_* ||dR/dW||_*
    (nuclear norms: synaptic diversity); S_S = sum over ``saliency`` layers of sum |W * dR/dW|
    (synaptic saliency).
    """
    weights = [layer.weight for layer in [*msa, *saliency]]
    grads = torch.autograd.grad(model(x).sum(), weights, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for k, (w, g) in enumerate(zip(weights, grads)):
        if g is None:
            continue
        if k < len(msa):
            total += torch.linalg.matrix_norm(w.detach(), ord="nuc") * torch.linalg.matrix_norm(g, ord="nuc")
        else:
            total += (w.detach() * g).abs().sum()
    value = float(total)
    if not math.isfinite(value):
        raise ProxyError(f"DSS sum overflowed float64 ({value})")
    if value <= 0.0:
        raise ProxyError("DSS sum is 0: no gradient reaches the scored weights")
    return math.log(value)
