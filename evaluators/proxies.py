"""Zero-cost accuracy proxies: scores of an untrained network that should rank architectures.

Every proxy has one signature, ``fn(model, batch, *, device, seed) -> float``, where ``batch`` is
``(images, labels)``: images already resized to the model's resolution and normalised (see
``evaluators.data``), labels int64. Proxies are registered by name (``register_proxy``) and are
meant to be computed on a freshly initialised model (``init_model(cfg, seed)``, seeded without
touching the global RNG). A proxy never changes the caller's model: those that change weights
or modes (all but ``params``/``flops``) work on a deep copy.

Sign convention: HIGHER = BETTER for every proxy (a search maximises them all):

========== =====================================================================================
params     +number of parameters ("bigger nets score higher").
flops      +multiply-accumulates of one image at the batch's resolution, as fvcore counts them
           (from the config when the model is a FasterViT, else traced; bigger = higher).
synflow    log of the synaptic-flow saliency sum (Tanaka et al. 2020, as used by Abdelfattah et al.
           2021): a float64 copy with every state-dict tensor replaced by its absolute value,
           BatchNorm in eval mode (at initialisation: the identity), an all-ones input of one
           image, R = sum of the logits, score = log sum_{conv/linear weights} |w * dR/dw|.
           LayerNorm cannot be "switched off" like BN (it has no running statistics) and is part
           of the transformer blocks, so it stays; it also keeps the transformer stages' signal
           bounded, which is why float64 does not overflow even on FasterViT-6.
snip       sum |w * dL/dw| over conv/linear weights, L = cross-entropy on the batch (Lee et al.
           2019 as a proxy: Abdelfattah et al. 2021). Train mode, stochastic depth off.
grad_norm  sum over conv/linear layers of ||dL/dW||_2 (Abdelfattah et al. 2021). Train mode.
jacob_cov  Mellor et al. (2020, v1 of "NAS without training"): J = d(sum of logits)/d(input) per
           image, C = correlation matrix of the rows of J, score = -sum_i [log(l_i + k) +
           1/(l_i + k)] over the eigenvalues l_i of C, k = 1e-5 (less correlated = higher).
           Rows with zero variance are treated as uncorrelated; tiny negative eigenvalues from
           round-off are clipped to 0.
naswot     Mellor et al. (ICML 2021): each image gets a binary code, one bit per activation unit;
           K[i, j] = number of units where images i and j agree; score = log det K. FasterViT has
           ReLU in the stem and GELU in the blocks: the bit is the sign of the PRE-activation
           (x > 0), which for ReLU is the original definition and for GELU marks the side where
           GELU(x) is positive. Positional-encoding MLPs (inputs are coordinates, not images) are
           left out. Train mode (BatchNorm batch statistics), no gradients.
ensemble   synflow + log(snip) + naswot / batch_size: a sum of log-scale scores, equal weights.
           Taking logs makes the sum indifferent to each proxy's units (a constant factor on a
           proxy shifts every architecture equally), so it needs no population statistics; the
           implicit weight of each member is its log dynamic range across architectures. It was
           chosen a priori (a size/flow signal, a loss-gradient saliency and an activation
           diversity signal, as in the literature's votes), not fitted to any ground truth here;
           ``bench/groundtruth.py`` measures it like every other proxy.
az_*       AZ-NAS (Lee & Ham, CVPR 2024): ``az_expressivity`` (sum of per-block spectral entropies
           of the feature covariance), ``az_progressivity`` (smallest entropy gain block to block),
           ``az_trainability`` (mean -s - 1/s + 2, s = block-Jacobian spectral norm, <= 0) and
           ``az_nas`` (per-model stand-in E + P + T + log FLOPs; the paper's rank score is the
           population-level ``az_nas_rank``).
zico       ZiCo (Li et al., ICLR 2023): sum over layers of log sum mean|g| / std(g), gradients of
           the batch's two halves.
meco       MeCo (Jiang et al., NeurIPS 2023): sum over blocks of the smallest eigenvalue of the
           channel correlation matrix (in [0, 1] per block); ``meco_opt``: 8 sampled channels per
           block, eigenvalue times C / 8.
dss        TF-TAS DSS (Zhou et al., CVPR 2022): log of nuclear-norm synaptic diversity of the
           attention qkv/proj + synaptic saliency of the MLPs and conv layers (linearised net).
========== =====================================================================================

The layers each proxy reads in FasterViT are given in its docstring; the scores themselves are in
``evaluators.proxy_scores``. ``compute_proxy_table(configs, names, batch)`` runs several
architectures; each ``ProxyResult`` carries the seconds of that proxy alone.

``rank_ensemble(records, names)`` is the population-level ensemble: the mean normalised rank of
several proxies over a set of architectures (needs the whole set; not a per-model proxy);
``az_nas_rank(records)`` is AZ-NAS's sum of log-ranks, and ``population_scores(records)`` computes
every population-level score whose members are present.

Determinism: given the model (hence ``init_model``'s seed) and the batch, every proxy is
deterministic on the CPU; on a GPU, cuDNN/cuBLAS reductions may differ in the last bits.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import FasterViT, FasterViTConfig, resolve_config
from search_spaces.fastervit import Attention, RelPosBias, TokenPosEmbed

from . import proxy_scores as _zs
from .checks import check_int
from .cost import analytic_flops, count_flops, count_params
from .proxy_scores import ProxyError, Weighted

__all__ = [
    "Proxy", "ProxyResult", "ProxyError", "PROXIES", "register_proxy", "list_proxies", "get_proxy", "init_model",
    "compute_proxies", "compute_proxy_table", "rank_ensemble", "ENSEMBLE_MEMBERS", "AZ_NAS_MEMBERS", "ZICO_SPLITS",
    "MECO_OPT_CHANNELS",
    "az_nas_rank", "population_scores", "POPULATION_SCORES", "proxy_timings",
]

Batch = tuple[torch.Tensor, torch.Tensor]
ProxyFn = Callable[..., float]


@dataclass(frozen=True)
class Proxy:
    """A registered proxy: its function, what it measures, and (for derived ones) its members."""

    name: str
    fn: ProxyFn
    description: str
    members: tuple[str, ...] = ()
    combine: Optional[Callable[[Mapping[str, float], int], float]] = None
    #: members whose seconds a combined value costs (default: all); a member computed as a
    #: by-product of another (AZ-NAS: E and P come with the trainability pass) is left out
    cost_members: tuple[str, ...] = ()


@dataclass
class ProxyResult:
    """One proxy on one network: the value (None when it failed), seconds taken, the error if any."""

    name: str
    value: Optional[float]
    seconds: float
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROXIES: dict[str, Proxy] = {}


def register_proxy(name: str, *, description: str = "", members: Sequence[str] = (),
                   combine: Optional[Callable[[Mapping[str, float], int], float]] = None,
                   cost_members: Sequence[str] = ()) -> Callable[[ProxyFn], ProxyFn]:
    """Register ``fn(model, batch, *, device, seed) -> float`` (higher = better) under ``name``.

    ``members``/``combine`` declare a derived proxy: ``compute_proxies`` combines the members'
    values (``combine(values, batch_size)``) when they were computed in the same call, and charges
    it the seconds of ``cost_members`` (default: all members).
    """
    if not set(cost_members) <= set(members):
        raise ValueError(f"cost_members {list(cost_members)} must be members of {name!r}")

    def deco(fn: ProxyFn) -> ProxyFn:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} is already registered")
        PROXIES[name] = Proxy(name, fn, description or (fn.__doc__ or "").strip().splitlines()[0], tuple(members),
                              combine, tuple(cost_members))
        return fn
    return deco


def list_proxies() -> list[str]:
    """Registered proxy names, in registration order."""
    return list(PROXIES)


def get_proxy(name: str) -> Proxy:
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; known: {', '.join(PROXIES)}")
    return PROXIES[name]


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def init_model(cfg: Union[FasterViTConfig, str, Mapping[str, Any]], seed: int, *,
               num_classes: Optional[int] = None, device: Union[str, torch.device, None] = None,
               on_device: bool = False) -> FasterViT:
    """A freshly initialised FasterViT whose weights depend only on ``cfg`` and ``seed``.

    Built on the CPU under ``torch.random.fork_rng`` seeded with ``seed`` (the caller's global RNG
    state is restored afterwards), then moved to ``device``: the same seed gives the same weights
    on every device. ``on_device=True`` initialises on ``device`` instead (fast for large models,
    as the profiler wants; weights then depend on the device's generator too).
    """
    check_int("seed", seed)
    cfg = resolve_config(cfg)
    if num_classes is not None:
        cfg = cfg.replace(num_classes=num_classes)
    if on_device and device is not None:
        dev = torch.device(device)
        with torch.random.fork_rng(devices=[dev.index] if dev.type == "cuda" else []), dev:
            torch.manual_seed(seed)
            return FasterViT(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FasterViT(cfg)
    return model.to(device) if device is not None else model


def _device(device: Union[str, torch.device, None], batch: Batch) -> torch.device:
    return torch.device(device) if device is not None else batch[0].device


def _working_copy(model: nn.Module, device: torch.device, *, train: bool,
                  dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A deep copy on ``device`` in train/eval mode with stochastic depth and dropout off, no grads."""
    from timm.layers import DropPath

    m = copy.deepcopy(model)
    m = m.to(device=device, dtype=dtype) if dtype is not None else m.to(device)
    m.train(train)
    for mod in m.modules():
        if isinstance(mod, DropPath):
            mod.drop_prob = 0.0
        elif isinstance(mod, nn.Dropout):
            mod.p = 0.0
    for p in m.parameters():
        p.grad = None
        p.requires_grad_(True)
    return m


def _weighted_layers(model: nn.Module) -> list[Weighted]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _batch_on(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    return x.to(device), y.to(device)


# ---------------------------------------------------------------------------------------------
# proxies
# ---------------------------------------------------------------------------------------------
@register_proxy("params", description="+number of parameters (bigger nets score higher)")
def params(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    return float(count_params(model))


@register_proxy("flops", description="+MACs of one image at the batch's resolution, fvcore's count (bigger = higher)")
def flops(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """From the config (``evaluators.cost.analytic_flops``, equal to fvcore's trace, instant) when the
    model is a FasterViT built for the batch's resolution; otherwise fvcore traces the model."""
    x = batch[0]
    res = (int(x.shape[-2]), int(x.shape[-1]))
    cfg = getattr(model, "config", None)
    if isinstance(cfg, FasterViTConfig) and tuple(cfg.resolution) == res and cfg.in_chans == x.shape[1]:
        return float(analytic_flops(cfg))
    return float(count_flops(model, res, in_chans=x.shape[1]))


@register_proxy("synflow", description="log sum |w * dR/dw|, |weights|, BN eval, ones input, float64")
def synflow(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    dev = _device(device, batch)
    m = _linearised_copy(model, dev)  # parameters and BN running statistics |.|, as in the paper
    scored = {id(layer.weight) for layer in _weighted_layers(m)}
    total = torch.zeros((), dtype=torch.float64, device=dev)
    seen: set[int] = set()

    # Score each parameter as soon as its gradient is complete and drop the gradient: peak memory
    # stays at one model (float64) + activations, which matters for FasterViT-4..6.
    def hook(p: torch.Tensor) -> None:
        if id(p) in seen:
            raise ProxyError("a parameter is used twice in one forward pass; synflow's per-parameter "
                             "streaming needs each parameter used once")
        seen.add(id(p))
        if id(p) in scored and p.grad is not None:
            total.add_((p.detach() * p.grad).abs().sum())
        p.grad = None

    handles = [p.register_post_accumulate_grad_hook(hook) for p in m.parameters()]
    try:
        x = torch.ones((1, *batch[0].shape[1:]), dtype=torch.float64, device=dev)
        m(x).sum().backward()
    finally:
        for h in handles:
            h.remove()
    value = float(total)
    if not math.isfinite(value):
        raise ProxyError(f"synflow sum overflowed float64 ({value})")
    if value <= 0.0:
        raise ProxyError("synflow sum is 0: no gradient reaches the weights")
    return math.log(value)


def _loss_grads(model: nn.Module, batch: Batch, dev: torch.device
                ) -> tuple[list[Weighted], list[Optional[torch.Tensor]]]:
    m = _working_copy(model, dev, train=True)
    x, y = _batch_on(batch, dev)
    layers = _weighted_layers(m)
    loss = F.cross_entropy(m(x), y)
    grads = torch.autograd.grad(loss, [layer.weight for layer in layers], allow_unused=True)
    return layers, list(grads)


@register_proxy("snip", description="sum |w * dL/dw| over conv/linear weights (cross-entropy on the batch)")
def snip(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    dev = _device(device, batch)
    layers, grads = _loss_grads(model, batch, dev)
    total = sum(((layer.weight.detach() * g).abs().sum(dtype=torch.float64) for layer, g in zip(layers, grads)
                 if g is not None), torch.zeros((), dtype=torch.float64, device=dev))
    return float(total)


@register_proxy("grad_norm", description="sum over conv/linear layers of ||dL/dW||_2")
def grad_norm(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    dev = _device(device, batch)
    _, grads = _loss_grads(model, batch, dev)
    total = sum((g.double().norm() for g in grads if g is not None), torch.zeros((), dtype=torch.float64, device=dev))
    return float(total)


@register_proxy("jacob_cov", description="-sum log(l+k)+1/(l+k), l = eigenvalues of the input-Jacobian correlation")
def jacob_cov(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    dev = _device(device, batch)
    m = _working_copy(model, dev, train=True)
    x, _ = _batch_on(batch, dev)
    if x.shape[0] < 2:
        raise ProxyError("jacob_cov needs a batch of at least 2 images")
    x = x.clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(m(x).sum(), x)
    j = jac.reshape(jac.shape[0], -1).double()
    j = j - j.mean(dim=1, keepdim=True)
    norms = j.norm(dim=1, keepdim=True)
    j = torch.where(norms > 0, j / norms.clamp_min(1e-300), torch.zeros_like(j))
    corr = j @ j.T
    corr.fill_diagonal_(1.0)
    eig = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    k = 1e-5
    return float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum())


def _positional_modules(model: nn.Module) -> set[int]:
    out: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, (TokenPosEmbed, RelPosBias)):
            out.update(id(sub) for sub in mod.modules())
    return out


@register_proxy("naswot", description="log det of the activation-pattern agreement kernel (pre-activation sign)")
def naswot(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    dev = _device(device, batch)
    m = _working_copy(model, dev, train=True)
    x, _ = _batch_on(batch, dev)
    b = x.shape[0]
    if b < 2:
        raise ProxyError("naswot needs a batch of at least 2 images")
    kernel = torch.zeros((b, b), dtype=torch.float64, device=dev)
    skip = _positional_modules(m)
    problems: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def fn(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            a = inputs[0].detach()
            if a.shape[0] % b:
                problems.append(f"{name}: leading dimension {a.shape[0]} is not a multiple of the batch {b}")
                return
            code = (a.reshape(b, -1) > 0)
            units = code.shape[1]
            # exact in float32 while counts stay below 2**24 (0/1 inputs are exact in TF32 too)
            z = code.to(torch.float32 if units < 2**24 else torch.float64)
            agree_ones = z @ z.T
            ones = z.sum(dim=1)
            # agreements = z z^T + (1 - z)(1 - z)^T
            kernel.add_((2 * agree_ones - ones[:, None] - ones[None, :] + units).double())
        return fn

    handles = [mod.register_forward_hook(hook(name)) for name, mod in m.named_modules()
               if isinstance(mod, (nn.ReLU, nn.GELU)) and id(mod) not in skip]
    if not handles:
        raise ProxyError("naswot found no ReLU/GELU modules to read activation patterns from")
    try:
        with torch.no_grad():
            m(x)
    finally:
        for h in handles:
            h.remove()
    if problems:
        raise ProxyError("naswot cannot group activations per image: " + "; ".join(problems[:3]))
    sign, logdet = torch.linalg.slogdet(kernel)
    if float(sign) <= 0 or not math.isfinite(float(logdet)):
        raise ProxyError("naswot kernel is singular: two images of the batch have identical activation codes")
    return float(logdet)


#: members of the per-model ``ensemble`` proxy (chosen a priori, see the module docstring)
ENSEMBLE_MEMBERS = ("synflow", "snip", "naswot")


def _combine_ensemble(values: Mapping[str, float], batch_size: int) -> float:
    snip_value = values["snip"]
    if not snip_value > 0:
        raise ProxyError(f"ensemble needs snip > 0 to take its log, got {snip_value}")
    return values["synflow"] + math.log(snip_value) + values["naswot"] / batch_size


@register_proxy("ensemble", description="synflow + log(snip) + naswot/batch (log-scale sum, a-priori members)",
                members=ENSEMBLE_MEMBERS, combine=_combine_ensemble)
def ensemble(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    values = {n: PROXIES[n].fn(model, batch, device=device, seed=seed) for n in ENSEMBLE_MEMBERS}
    return _combine_ensemble(values, batch[0].shape[0])


# ---------------------------------------------------------------------------------------------
# ViT-suited proxies (scores in evaluators.proxy_scores; layer choices documented here)
# ---------------------------------------------------------------------------------------------
def _fastervit_only(model: nn.Module, name: str) -> None:
    if not isinstance(model, FasterViT):
        raise ProxyError(f"{name} reads FasterViT block outputs; got a {type(model).__name__}")


def _az(model: nn.Module, batch: Batch, device: Any, seed: int, trainability: bool) -> dict[str, float]:
    _fastervit_only(model, "AZ-NAS")
    dev = _device(device, batch)
    m = _working_copy(model, dev, train=True)
    x, _ = _batch_on(batch, dev)
    return _zs.az_nas_components(m, x, seed=seed, trainability=trainability)


@register_proxy("az_expressivity", description="AZ-NAS: sum of per-block spectral entropies of the feature covariance")
def az_expressivity(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """AZ-NAS expressivity (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network
    Architecture Search", CVPR 2024, Sec. 3): for every block feature, the entropy of the
    normalised eigenvalues of its channel covariance (positions of all images as samples), summed.
    Isotropic features (the variance spread over many directions) score high.

    FasterViT: the stem output, every ConvBlock output and every HATBlock's local tokens (put back
    in image order, padding cropped; carrier tokens left out as summaries of those tokens) — the
    residual-block outputs, which is where AZ-NAS reads both its CNN and its ViT spaces. Train
    mode (BatchNorm on batch statistics, as in the authors' CNN space), no gradients.
    """
    return _az(model, batch, device, seed, trainability=False)["expressivity"]


@register_proxy("az_progressivity", description="AZ-NAS: smallest increase of the block entropy, block to block")
def az_progressivity(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """AZ-NAS progressivity (Lee & Ham, CVPR 2024, Sec. 3): min over consecutive block features of
    (entropy of block l+1) - (entropy of block l), with the entropies of ``az_expressivity``: a
    network whose expressivity grows at every block scores high; one block that loses it costs.

    FasterViT: the same features as ``az_expressivity``; the pairs run across stage boundaries
    too (width doubles there, so the entropy can rise by up to log 2). The authors drop this term
    on their isotropic ViT space (AutoFormer, constant width); FasterViT is hierarchical like
    their CNN space, where they use it.
    """
    return _az(model, batch, device, seed, trainability=False)["progressivity"]


@register_proxy("az_trainability", description="AZ-NAS: mean over blocks of -s-1/s+2, s = block-Jacobian spectral norm")
def az_trainability(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """AZ-NAS trainability (Lee & Ham, CVPR 2024, Sec. 3): for each pair of consecutive block
    features, a Rademacher probe v (drawn from ``seed``) on the output is pulled back to the input
    (v^T J by autograd); σ = largest singular value of the position-averaged E[g_in v^T], an
    estimate of the block Jacobian's spectral norm; score = mean of -σ - 1/σ + 2 (<= 0; 0 when
    σ = 1, i.e. gradients neither explode nor vanish through the block).

    FasterViT: the features of ``az_expressivity``. Within a stage, positions pair one to one;
    across a stage boundary (stride-2 downsample) the input gradient is folded 2x2 into channels
    (space-to-depth, as the authors do for strided CNN blocks). For a HATBlock, the carrier
    tokens entering it are held fixed: J is the block's map on local tokens.

    Sampling bias (the paper's estimator): with N = B*H*W probe rows and C channels, E[g v^T] of
    an identity block has σ ~ (1 + sqrt(C/N))^2, not 1. Late, wide, small-map stages need a
    large batch (FasterViT-0 at 224, stage 4: C = 512, N = 49 B; B = 64 gives ~2.0, B = 8 ~4.6),
    and the bias grows with width, so compare architectures at one batch size.
    """
    return _az(model, batch, device, seed, trainability=True)["trainability"]


#: members of the AZ-NAS combination: its three zero-cost terms and its complexity term (FLOPs)
AZ_NAS_MEMBERS = ("az_expressivity", "az_progressivity", "az_trainability", "flops")


def _combine_az_nas(values: Mapping[str, float], batch_size: int) -> float:
    f = values["flops"]
    if not f > 0:
        raise ProxyError(f"az_nas needs flops > 0 to take its log, got {f}")
    return values["az_expressivity"] + values["az_progressivity"] + values["az_trainability"] + math.log(f)


@register_proxy("az_nas", description="per-model AZ-NAS stand-in: E + P + T + log FLOPs",
                members=AZ_NAS_MEMBERS, combine=_combine_az_nas, cost_members=("az_trainability", "flops"))
def az_nas(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """Per-model AZ-NAS stand-in (Lee & Ham, CVPR 2024): E + P + T + log(FLOPs).

    AZ-NAS itself is population-level: sum over its four terms of log(rank / N) within the
    evaluated set (``az_nas_rank``, the number to compare with the paper). A single model has no
    ranks, so this entry is a fixed, a-priori sum of the same terms in their natural units
    (nats for E and P, a bounded <= 0 score for T, log FLOPs for the complexity), usable where a
    per-model score is needed (a search objective). Its spread across architectures is
    dominated by expressivity, which grows with the number of blocks; ``bench`` reports it and
    ``az_nas_rank`` side by side. One pass computes E, P and T.

    FasterViT: the block features of ``az_expressivity``; FLOPs as the ``flops`` entry.
    """
    values = _az(model, batch, device, seed, trainability=True)
    values = {f"az_{k}": v for k, v in values.items()}
    values["flops"] = PROXIES["flops"].fn(model, batch, device=device, seed=seed)
    return _combine_az_nas(values, batch[0].shape[0])


def _scored_layers(model: nn.Module) -> list[Weighted]:
    """Conv/linear layers that see image features: positional MLPs (coordinate inputs) left out."""
    skip = _positional_modules(model)
    return [m for m in _weighted_layers(model) if id(m) not in skip]


#: ZiCo cuts the batch into this many parts (the paper uses two batches)
ZICO_SPLITS = 2


@register_proxy("zico", description="ZiCo: sum over layers of log sum |mean grad| / std grad across 2 half-batches")
def zico(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """ZiCo (Li, Dong, Yang, Bogdan, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation
    on Gradients", ICLR 2023, Eq. 9): for each layer, sum over its weights of E[|g|] / std(g),
    the gradient statistics taken over batches; the score sums the log of that per layer. High
    when gradients are large and consistent across batches.

    The batch is cut into ``ZICO_SPLITS`` = 2 equal halves, each a separate cross-entropy
    forward/backward (pass 2x the per-batch size the paper uses, e.g. 128 for two batches of 64).
    Weights whose gradient is equal in both halves (std 0) are left out, as in the authors' code.
    FasterViT: every conv and linear weight that sees image features — stem, conv blocks,
    downsamplers, carrier-token convs, attention qkv/proj, MLP fc1/fc2 (local and carrier-token
    branches) and the head; the positional MLPs (inputs are coordinates) are left out. Train mode.
    """
    dev = _device(device, batch)
    m = _working_copy(model, dev, train=True)
    x, y = _batch_on(batch, dev)
    return _zs.zico_score(m, _scored_layers(m), x, y, splits=ZICO_SPLITS)


@register_proxy("meco", description="MeCo: sum over blocks of the min eigenvalue of the channel correlation matrix")
def meco(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """MeCo (Jiang, Wang, Bie, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via
    Minimum Eigenvalue of Correlation", NeurIPS 2023): for each layer's feature map of one image,
    the Pearson correlation matrix of its channels (over spatial positions); score = sum over
    layers of its smallest eigenvalue (in [0, 1]). High when no channel is a linear mix of others.

    FasterViT: the block features of ``az_expressivity`` (stem, ConvBlocks, HATBlock local tokens
    in image order). The authors' code hooks every module; at block level each residual block
    counts once, and transformer tokens get the same channels-by-positions layout as conv maps.
    The eigenvalue is averaged over the batch's images (the paper uses one; the mean is the same
    quantity with less noise). A feature with no more positions than channels has a rank-deficient
    correlation and contributes 0 — at 224 px FasterViT-0's stages 3-4 (14², 7² positions vs 256,
    512 channels); the paper's MeCo_opt variant (channel sampling) is not implemented here.
    Train mode (BatchNorm on batch statistics), no gradients.
    """
    _fastervit_only(model, "meco")
    dev = _device(device, batch)
    m = _working_copy(model, dev, train=True)
    x, _ = _batch_on(batch, dev)
    return _zs.meco_score(m, x)


#: channels MeCo_opt samples per feature (the authors' choice)
MECO_OPT_CHANNELS = 8


@register_proxy("meco_opt", description="MeCo_opt: meco on 8 sampled channels per block, times C/8")
def meco_opt(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """MeCo_opt (Jiang, Wang, Bie, NeurIPS 2023, the paper's optimised variant): as ``meco``, but
    per block feature only ``MECO_OPT_CHANNELS`` = 8 channels, drawn at random (from ``seed``),
    enter the correlation matrix, and its smallest eigenvalue is weighted by C / 8. Cheaper, no
    longer zero for features with fewer positions than channels (8 x 8 needs >= 8 positions),
    and it weights wide layers more (the C / 8 factor follows the authors' code).

    FasterViT: the block features of ``meco`` (stem, ConvBlocks, HATBlock local tokens); a
    feature with C <= 8 uses all its channels (weight 1). Train mode, no gradients.
    """
    _fastervit_only(model, "meco_opt")
    dev = _device(device, batch)
    m = _working_copy(model, dev, train=True)
    x, _ = _batch_on(batch, dev)
    return _zs.meco_score(m, x, sample=MECO_OPT_CHANNELS, seed=seed)


def _linearised_copy(model: nn.Module, dev: torch.device) -> nn.Module:
    """float64 eval copy with every floating state-dict tensor replaced by its absolute value."""
    m = _working_copy(model, dev, train=False, dtype=torch.float64)
    with torch.no_grad():
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    return m


@register_proxy("dss", description="TF-TAS DSS: log(sum nuc|W| nuc|dR/dW| over attention + sum |W dR/dW| elsewhere)")
def dss(model: nn.Module, batch: Batch, *, device: Any = None, seed: int = 0) -> float:
    """DSS indicator of TF-TAS (Zhou et al., "Training-free Transformer Architecture Search",
    CVPR 2022, Sec. 3.3): synaptic diversity of the multi-head attention weights, sum of
    ||W||_* x ||dR/dW||_* (nuclear norms), plus synaptic saliency of the MLP weights,
    sum |W * dR/dW|; R = sum of the logits of an all-ones image through the linearised network
    (every weight and buffer |.|, BN in eval mode, float64; as synflow). Returned as the log of
    the sum (monotone: the ranking is DSS's; the log keeps the values readable).

    FasterViT: diversity term on every Attention's qkv and proj (local and carrier-token
    attention); saliency term on every Mlp's fc1 and fc2 and, as TF-TAS treats its patch
    embedding and classifier, on every other conv/linear weight that sees image features — the
    stem, the conv stages' blocks, the downsamplers, the carrier-token convs and the head — so
    that the conv stages count (they have neither attention nor MLP). Positional MLPs are left out.
    """
    dev = _device(device, batch)
    m = _linearised_copy(model, dev)
    msa_ids = {id(mod.qkv) for mod in m.modules() if isinstance(mod, Attention)}
    msa_ids |= {id(mod.proj) for mod in m.modules() if isinstance(mod, Attention)}
    layers = _scored_layers(m)
    msa = [layer for layer in layers if id(layer) in msa_ids]
    rest = [layer for layer in layers if id(layer) not in msa_ids]
    x = torch.ones((1, *batch[0].shape[1:]), dtype=torch.float64, device=dev)
    return _zs.dss_score(m, msa, rest, x)


# ---------------------------------------------------------------------------------------------
# running several
# ---------------------------------------------------------------------------------------------
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return text[:500]


def compute_proxies(model_or_cfg: Union[nn.Module, FasterViTConfig, str, Mapping[str, Any]],
                    names: Optional[Iterable[str]], batch: Batch, *, device: Union[str, torch.device, None] = None,
                    seed: int = 0, num_classes: Optional[int] = None) -> dict[str, ProxyResult]:
    """Compute several proxies on one network; a failing proxy records its error, the rest still run.

    Args:
        model_or_cfg: a model (used as given, never changed) or a config / preset name / dict,
            from which ``init_model(cfg, seed, num_classes=num_classes)`` builds a fresh model.
        names: proxies to compute (default: all registered), in this order; a derived proxy
            (``ensemble``) reuses its members' values when they are computed in the same call.
        batch: ``(images, labels)``, images resized to the model's resolution and normalised.
        device: where to run (default: the batch's device).
        seed: passed to every proxy, and the init seed for a config.

    Returns:
        ``{name: ProxyResult(value, seconds, error)}``; a non-finite value is recorded as an error.
    """
    names = list(names) if names is not None else list(PROXIES)
    for n in names:
        get_proxy(n)
    if len(set(names)) != len(names):
        raise ValueError(f"proxy names repeat: {names}")
    dev = _device(device, batch)
    if isinstance(model_or_cfg, nn.Module):
        model = model_or_cfg  # proxies copy it before changing modes or weights
    else:
        model = init_model(model_or_cfg, seed, num_classes=num_classes, device=dev)
    batch = _batch_on(batch, dev)
    results: dict[str, ProxyResult] = {}
    for name in names:
        proxy = PROXIES[name]
        if proxy.members and all(m in results and results[m].ok for m in proxy.members):
            t0 = time.perf_counter()
            try:
                assert proxy.combine is not None  # a proxy with members combines them
                value: Optional[float] = proxy.combine({m: float(results[m].value or 0.0) for m in proxy.members},
                                                       batch[0].shape[0])
                error = None
            except Exception as e:  # recorded on the result, never raised
                value, error = None, _error_text(e)
            seconds = sum(results[m].seconds for m in (proxy.cost_members or proxy.members)) + time.perf_counter() - t0
            results[name] = _checked(name, value, seconds, error)
            continue
        _sync(dev)
        t0 = time.perf_counter()
        try:
            value = float(proxy.fn(model, batch, device=dev, seed=seed))
            error = None
        except Exception as e:  # recorded on the result, never raised
            value, error = None, _error_text(e)
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
        _sync(dev)
        results[name] = _checked(name, value, time.perf_counter() - t0, error)
    return results


def compute_proxy_table(configs: Sequence[Union[FasterViTConfig, str, Mapping[str, Any]]],
                        names: Optional[Iterable[str]], batch: Batch, *,
                        device: Union[str, torch.device, None] = None, seed: int = 0,
                        num_classes: Optional[int] = None,
                        progress: Optional[Callable[[int, int, dict[str, ProxyResult]], None]] = None,
                        ) -> list[dict[str, ProxyResult]]:
    """``compute_proxies`` for each config (same batch, device and seed), one record per config.

    Each record maps proxy name -> ``ProxyResult`` (value, seconds of that proxy alone, error);
    ``progress(i, n, record)`` is called after each config. Feed the records to
    ``population_scores`` / ``rank_ensemble`` for the population-level combinations.
    """
    names = list(names) if names is not None else list(PROXIES)
    out: list[dict[str, ProxyResult]] = []
    for i, cfg in enumerate(configs):
        rec = compute_proxies(cfg, names, batch, device=device, seed=seed, num_classes=num_classes)
        out.append(rec)
        if progress is not None:
            progress(i + 1, len(configs), rec)
    return out


def _checked(name: str, value: Optional[float], seconds: float, error: Optional[str]) -> ProxyResult:
    if error is None and (value is None or not math.isfinite(value)):
        return ProxyResult(name, None, seconds, f"ProxyError: {name} returned a non-finite value ({value})")
    return ProxyResult(name, value, seconds, error)


def _value(v: Any) -> Optional[float]:
    if isinstance(v, ProxyResult):
        v = v.value
    if isinstance(v, Mapping):
        v = v.get("value")
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def rank_ensemble(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Optional[float]]:
    """Population-level ensemble: mean normalised rank (0 = worst, 1 = best) of ``names``.

    ``records[i][name]`` is a number, a ``ProxyResult`` or a ``{"value": ...}`` dict. Only
    records with a finite value for every name are ranked (ties share their average rank); the
    others get None. Higher = better, like every proxy.
    """
    from scipy.stats import rankdata

    names = list(names)
    if not names:
        raise ValueError("rank_ensemble needs at least one proxy name")
    vals = [[_value(r.get(n)) for n in names] for r in records]
    keep = [i for i, row in enumerate(vals) if all(v is not None for v in row)]
    out: list[Optional[float]] = [None] * len(records)
    if not keep:
        return out
    if len(keep) == 1:
        out[keep[0]] = 0.5
        return out
    score = [0.0] * len(keep)
    for j in range(len(names)):
        ranks = rankdata([vals[i][j] for i in keep], method="average")
        for k, r in enumerate(ranks):
            score[k] += (float(r) - 1.0) / (len(keep) - 1)
    for k, i in enumerate(keep):
        out[i] = score[k] / len(names)
    return out


def _valid_rows(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[list[int], list[list[float]]]:
    vals = [[_value(r.get(n)) for n in names] for r in records]
    keep = [i for i, row in enumerate(vals) if all(v is not None for v in row)]
    return keep, [[float(vals[i][j]) for i in keep] for j in range(len(names))]  # type: ignore[arg-type]


def az_nas_rank(records: Sequence[Mapping[str, Any]],
                names: Sequence[str] = AZ_NAS_MEMBERS) -> list[Optional[float]]:
    """The AZ-NAS score of Lee & Ham (CVPR 2024, Eq. 9) over a population: sum over ``names`` of
    log(rank / N), rank 1 = lowest value, N = number of ranked records (ties share their average
    rank). The best record on every term scores 0; others are negative. Records with a missing
    or non-finite member get None (not ranked). Like ``rank_ensemble``, it needs the whole set:
    adding architectures changes every score, so it is a bench/report quantity, not a per-model
    proxy (the per-model stand-in is the ``az_nas`` entry).
    """
    from scipy.stats import rankdata

    names = list(names)
    if not names:
        raise ValueError("az_nas_rank needs at least one proxy name")
    keep, cols = _valid_rows(records, names)
    out: list[Optional[float]] = [None] * len(records)
    if not keep:
        return out
    n = len(keep)
    score = [0.0] * n
    for col in cols:
        for k, r in enumerate(rankdata(col, method="average")):
            score[k] += math.log(float(r) / n)
    for k, i in enumerate(keep):
        out[i] = score[k]
    return out


#: population-level combinations: name -> (function of the records, the proxies it needs)
POPULATION_SCORES: dict[str, tuple[Callable[..., list[Optional[float]]], tuple[str, ...]]] = {
    "az_nas_rank": (az_nas_rank, AZ_NAS_MEMBERS),
}


def population_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Optional[float]]]:
    """Every population-level score whose members appear in ``records`` (one record per
    architecture, as ``compute_proxy_table`` returns): ``{name: [score or None per record]}``."""
    present = set().union(*(r.keys() for r in records)) if records else set()
    return {name: fn(records, members) for name, (fn, members) in POPULATION_SCORES.items()
            if set(members) <= present}


def proxy_timings(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Optional[float]]]:
    """Seconds per architecture of each proxy over ``compute_proxy_table`` records (or dicts
    with ``"seconds"``): ``{name: {n, mean, median, max}}``, successful runs only (n = 0 -> None).

    A derived proxy computed from its members carries the members' seconds it costs (see
    ``Proxy.cost_members``); ``params``/``flops`` are analytic and near 0.
    """
    import statistics

    names: list[str] = []
    for r in records:
        names += [n for n in r if n not in names]
    out: dict[str, dict[str, Optional[float]]] = {}
    for n in names:
        secs = []
        for r in records:
            v = r.get(n)
            ok = v.ok if isinstance(v, ProxyResult) else (isinstance(v, Mapping) and v.get("error") is None
                                                          and v.get("value") is not None)
            if v is not None and ok:
                secs.append(float(v.seconds if isinstance(v, ProxyResult) else v["seconds"]))
        out[n] = dict(n=len(secs), mean=statistics.fmean(secs) if secs else None,
                      median=statistics.median(secs) if secs else None, max=max(secs) if secs else None)
    return out
