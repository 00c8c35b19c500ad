"""Per-scan adaptation: fine-tune the pretrained network on pairs made from the input itself.

``mrisr upscale --adapt`` (``adapt=AdaptOptions(...)`` in Python) spends a
time budget fine-tuning a copy of the residual network before it runs, on
training pairs whose truth is the input scan (self-similarity across axes
and scales, as in SMORE / ECLARE, but starting from the pretrained prior):

- **anisotropic input** (some axes finer than others): each fine axis is
  thickened to the largest factor with the thick-slice profile (``slice``
  PSF) and spline-interpolated back; the scan itself is the truth. The
  network, conditioned on that factor along that axis, and shown patches in
  random axis orders, learns this scan's slices and contrast.
- **isotropic input** (every axis coarser than the output): the pairs would
  be the scan degraded by the factor again (``gaussian`` PSF), a problem at
  twice the scale of the real one. Measured on a real whole head at 2 mm
  (``benchmarks/bench_real_heads.py --upscale --adapt 60``) it *lost*
  0.49 dB against the pretrained network although its held-out internal
  loss improved, so the guard cannot catch it: isotropic inputs keep the
  pretrained weights (:data:`ADAPT_ISOTROPIC`), and the report says why.
- **two coarse axes** (2x2x1 k-space): the pairs thicken the one fine axis
  with the slice profile, another blur than the input's. Measured with the
  default consistency projection (recnn-d8w32 3.2.0, 60 s) it lost 0.73 dB
  on the whole-head T1 (+0.82 -> +0.09) and gained nothing on the other
  head: these inputs keep the pretrained weights too
  (:data:`ADAPT_MAX_COARSE_AXES`). Thick-slice inputs (one coarse axis) gained
  +0.01 to +0.11 dB on all four rows measured.

The simulated inputs get the scan's own noise level back (the thickening
averages it away). Six patches, fixed by the seed, are held out; the loss on
them is measured before and after. **Guard**: if the held-out loss did not
improve, the pretrained weights are kept and the report says so. The
network is trained in float32 (bf16 autocast where the CPU has it), with
Adam, on a copy: the loaded model is never modified.

Not for guided or learned-upsampling models (refused with the reason), nor
for an output no finer than the input (nothing to learn).

Example:
    >>> internal_factors((1.0, 1.0, 4.0))
    [((4.0, 1.0, 1.0), 'slice'), ((1.0, 4.0, 1.0), 'slice')]
    >>> internal_factors((2.0, 2.0, 2.0))
    [((2.0, 2.0, 2.0), 'gaussian')]
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrisr.errors import MrisrError

#: An axis whose factor is at most this is "fine" (already at the output's resolution).
FINE = 1.15
#: Held-out internal patches.
HOLDOUT_PATCHES = 6
#: Whether isotropic inputs are adapted (measured to lose on real heads: see the module docstring).
ADAPT_ISOTROPIC = False
#: Inputs with more coarse axes than this keep the pretrained weights (2x2x1 k-space lost: the module docstring).
ADAPT_MAX_COARSE_AXES = 1


@dataclass(frozen=True)
class AdaptOptions:
    """Settings of per-scan adaptation.

    Attributes:
        seconds: Time budget of the fine-tuning, pairs included (> 0).
        seed: Seed of the pair sampling and the held-out patches.
        lr: Adam learning rate.
        patch: Side of the training patches (voxels, >= 8).
        batch: Patches per step.

    Example:
        >>> AdaptOptions(seconds=30).seconds
        30.0
        >>> AdaptOptions(seconds=0)
        Traceback (most recent call last):
        ...
        mrisr.errors.MrisrError: adapt seconds must be a positive finite number, got 0
    """

    seconds: float = 90.0
    seed: int = 0
    lr: float = 5e-5
    patch: int = 32
    batch: int = 4

    def __post_init__(self) -> None:
        s = self.seconds
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise MrisrError(f"adapt seconds must be a positive finite number, got {s!r}")
        object.__setattr__(self, "seconds", float(s))
        if not (isinstance(self.patch, int) and self.patch >= 8 and isinstance(self.batch, int) and self.batch >= 1):
            raise MrisrError(f"adapt patch must be an integer >= 8 and batch >= 1, got {self.patch}, {self.batch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MrisrError(f"adapt lr must be positive, got {self.lr!r}")


@dataclass
class AdaptReport:
    """What adaptation did (recorded in the sidecar under ``adapt``)."""

    seconds_budget: float
    seed: int
    pairs: list[str]
    steps: int = 0
    seconds: float = 0.0
    heldout_loss_before: float = 0.0
    heldout_loss_after: float = 0.0
    kept: str = "pretrained"   # "adapted" or "pretrained"
    reason: str = ""

    def to_dict(self) -> dict:
        """Plain dict for the sidecar."""
        return dataclasses.asdict(self)


def internal_factors(factors: Sequence[float]) -> list[tuple[tuple[float, float, float], str]]:
    """The internal acquisitions (factors on the input grid, PSF) for an input upscaled by ``factors``.

    Raises:
        MrisrError: if no axis gets finer (nothing to learn from).
    """
    f = [float(v) for v in factors]
    coarse = [a for a in range(3) if f[a] > FINE]
    if not coarse:
        raise MrisrError(f"--adapt needs an output finer than the input along some axis (factors {f})")
    if len(coarse) == 3:
        return [(tuple(f), "gaussian")]  # type: ignore[list-item]
    top = max(f)
    out = []
    for a in range(3):
        if a not in coarse:
            g = [1.0, 1.0, 1.0]
            g[a] = top
            out.append((tuple(g), "slice"))
    return out  # type: ignore[return-value]


def check_adaptable(model: Any, guided: bool) -> None:
    """Refuse models adaptation cannot fine-tune, with the reason.

    Raises:
        MrisrError: guided models, learned-upsampling models, networks without factor conditioning.
    """
    net = model.network
    if guided or getattr(net, "in_channels", 1) != 1:
        raise MrisrError("--adapt does not take a reference yet: the internal pairs have no second scan "
                         "to pair with (run the guided model without --adapt, or drop --reference)")
    if getattr(net, "upsampling", None) is not None:
        raise MrisrError(f"--adapt fine-tunes residual models on the output grid; {model.name!r} is a "
                         "learned-upsampling model (use the default model, or drop --adapt)")
    if not getattr(net, "cond_dim", 0):
        raise MrisrError(f"--adapt needs a model conditioned on the upsampling factor; {model.name!r} is not")


def _pairs(data: np.ndarray, factors: Sequence[float], seed: int) -> tuple[list[np.ndarray], list[tuple], list[str]]:
    """Simulated inputs (one per internal acquisition) of the scan, its own noise put back."""
    from mrisr.training.data import Acquisition, simulate
    from mrisr.trust.ood import noise_sigma

    rng = np.random.default_rng(seed)
    sigma = noise_sigma(data)
    sims, facs, labels = [], [], []
    for g, psf in internal_factors(factors):
        sim = simulate(data, Acquisition(g, psf), rng)
        lost = sigma * math.sqrt(max(0.0, 1.0 - 1.0 / math.prod(g)))
        if lost > 0:
            sim = sim + rng.normal(0.0, lost, sim.shape).astype(np.float32)
        sims.append(sim.astype(np.float32))
        facs.append(g)
        labels.append("x".join(f"{v:g}" for v in g) + f" {psf} of the input")
    return sims, facs, labels


def _centres(mask: np.ndarray, patch: int, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``n`` patch origins whose centre voxel is in ``mask``."""
    shape = mask.shape
    idx = np.argwhere(mask)
    out = []
    for k in rng.integers(0, len(idx), n):
        c = idx[k]
        out.append(tuple(int(min(max(0, c[a] - patch // 2), shape[a] - patch)) for a in range(3)))
    return out  # type: ignore[return-value]


def _overlaps(o: Sequence[int], others: list[tuple[int, int, int]], patch: int) -> bool:
    return any(all(abs(o[a] - q[a]) < patch for a in range(3)) for q in others)


class _Sampler:
    """Training and held-out patches of the internal pairs (normalised by ``scale``)."""

    def __init__(self, data: np.ndarray, sims: list[np.ndarray], facs: list[tuple], scale: float,
                 opts: AdaptOptions) -> None:
        from mrisr.evaluation.masks import head_mask

        self.data, self.sims, self.facs, self.scale, self.opts = data, sims, facs, scale, opts
        self.patch = min(opts.patch, *data.shape)
        self.rng = np.random.default_rng(opts.seed + 1)
        mask = head_mask(data)
        self.mask = mask if mask.any() else np.ones(data.shape, bool)
        self.heldout = _centres(self.mask, self.patch, HOLDOUT_PATCHES, np.random.default_rng(opts.seed))

    def _patch(self, k: int, o: Sequence[int], perm: Sequence[int], flips: Sequence[bool]):
        sl = tuple(slice(v, v + self.patch) for v in o)
        x, y, g = self.sims[k][sl], self.data[sl], np.asarray(self.facs[k], np.float32)
        x, y, g = x.transpose(perm), y.transpose(perm), g[list(perm)]
        for a, f in enumerate(flips):
            if f:
                x, y = np.flip(x, a), np.flip(y, a)
        return np.ascontiguousarray(x) / self.scale, np.ascontiguousarray(y) / self.scale, g

    def heldout_batch(self):
        items = [self._patch(i % len(self.sims), o, (0, 1, 2), (False,) * 3) for i, o in enumerate(self.heldout)]
        return _stack(items)

    def batch(self):
        items = []
        while len(items) < self.opts.batch:
            for _ in range(50):  # a patch clear of the held-out ones (small volumes: the last try)
                (o,) = _centres(self.mask, self.patch, 1, self.rng)
                if not _overlaps(o, self.heldout, self.patch):
                    break
            perm = tuple(int(v) for v in self.rng.permutation(3))
            items.append(self._patch(int(self.rng.integers(len(self.sims))), o, perm, self.rng.random(3) < 0.5))
        return _stack(items)


def _stack(items):
    import torch

    x = torch.from_numpy(np.stack([i[0] for i in items])[:, None].astype(np.float32))
    y = torch.from_numpy(np.stack([i[1] for i in items])[:, None].astype(np.float32))
    cond = torch.from_numpy(np.log2(np.maximum(1.0, np.stack([i[2] for i in items]))).astype(np.float32))
    return x, y, cond


def _loss(net, batch, precision: str) -> Any:
    import torch

    x, y, cond = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        res = net(x, cond)
    return (x + res.float() - y).abs().mean()


def adapt_model(model: Any, data: np.ndarray, factors: Sequence[float], opts: AdaptOptions,
                progress: Callable[[float], None] | None = None, threads: int | None = None) -> tuple[Any, AdaptReport]:
    """A copy of ``model`` fine-tuned on the scan ``data`` (the input grid) for ``opts.seconds``, and the report.

    Returns the loaded model itself (unchanged) when the held-out internal loss did not improve.
    ``factors``: the upsampling factor per voxel axis (input voxel over output voxel).
    """
    import torch

    from mrisr.inference.device import cpu_supports_bf16, cpu_threads
    from mrisr.inference.intensity import normalising_scale

    t0 = time.perf_counter()
    data = np.asarray(data, np.float32)
    check_adaptable(model, guided=False)
    if not ADAPT_ISOTROPIC and all(psf == "gaussian" for _, psf in internal_factors(factors)):
        report = AdaptReport(opts.seconds, opts.seed, [])
        report.reason = ("isotropic input: its internal pairs (the scan degraded again, at twice the scale) "
                         "were measured to lose on real heads, so the pretrained weights run")
        return model, report
    coarse = sum(float(f) > FINE for f in factors)
    if coarse > ADAPT_MAX_COARSE_AXES:
        report = AdaptReport(opts.seconds, opts.seed, [])
        report.reason = (f"{coarse} coarse axes (as 2x2x1 k-space): its internal pairs (the fine axis thickened "
                         "with the slice profile) were measured to lose on a real head, so the pretrained "
                         "weights run")
        return model, report
    sims, facs, labels = _pairs(data, factors, opts.seed)
    report = AdaptReport(opts.seconds, opts.seed, labels)
    sampler = _Sampler(data, sims, facs, normalising_scale(data, model.card.normalisation), opts)
    precision = "bf16" if cpu_supports_bf16() else "fp32"
    with cpu_threads(threads):
        torch.manual_seed(opts.seed)
        net = copy.deepcopy(model.network).float().train()
        for p in net.parameters():
            p.requires_grad_(True)
        held = sampler.heldout_batch()
        with torch.no_grad():
            report.heldout_loss_before = float(_loss(net.eval(), held, precision))
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=opts.lr)
        while report.steps == 0 or time.perf_counter() - t0 < opts.seconds:  # at least one step
            loss = _loss(net, sampler.batch(), precision)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            report.steps += 1
            if progress is not None:
                progress(min(1.0, (time.perf_counter() - t0) / opts.seconds))
        net.eval()
        with torch.no_grad():
            report.heldout_loss_after = float(_loss(net, held, precision))
    for p in net.parameters():
        p.requires_grad_(False)
    report.seconds = round(time.perf_counter() - t0, 2)
    if report.steps == 0 or not report.heldout_loss_after < report.heldout_loss_before:
        report.kept = "pretrained"
        report.reason = (f"held-out internal loss did not improve ({report.heldout_loss_before:.5f} -> "
                         f"{report.heldout_loss_after:.5f} after {report.steps} steps): pretrained weights kept")
        return model, report
    report.kept = "adapted"
    return dataclasses.replace(model, network=net), report
