"""Train every paper architecture under one protocol and write the comparison table (issue #5; not a test).

The protocol of docs/models.md, "Comparison under one protocol":

* **Data, hold-out, acquisitions**: those of the default model,
  ``models/recnn-d8w32/train-stage2.toml`` (``--base-config``; the mix of
  its second stage, before the fine-tuning stages 3 and 4): each row's
  configuration is that file with ``[model]`` and the schedule replaced
  (learning rate, minimum and warm-up of its first stage, trained from random
  weights; ``train.loss = "auto"``, each paper's loss, unless ``--loss``).
  Learned-upsampling networks (``rrlsrn``, ``georgescu``) are trained per
  integer scale (2x2x2 and 1x1x4) on the same distribution with the factors
  fixed to their scale (:mod:`mrisr.training.lr_pairs`). A paper's own
  augmentation is added to its rows (``Row.degradation``): Georgescu et al.'s
  random-sigma input blur.
* **Budget**: the same CPU time for every row (``--budget-minutes M``): the
  time per step is measured in the real trainer setting (same config, batch,
  patch, precision, threads: ``--calibrate-steps`` timed steps after
  ``--warmup-steps``), and ``train.steps = floor(M * 60 / seconds per step)``,
  so the cosine schedule ends when the budget does. ``--steps N`` trains
  every row N steps instead. The GAN rows (``--gan``) spend a tenth of their
  steps' critic updates before the first generator update (``gan.critic_warmup``)
  and have no extra critic updates, and their steps are counted so that the
  whole fits the budget.
* **Training**: ``mrisr.training.trainer.train``, the code of ``mrisr train``,
  into ``OUT/runs/NAME`` with its checkpoints; an interrupted row continues
  with ``--resume`` (``resume=True``) when the script runs again. The one
  training-time validation is at the last step, so ``best.pt`` holds the
  final weights (no selection on the held-out slab). Several processes may
  share one ``--out`` (e.g. one per core with ``--threads 1``): each row is
  claimed by a lock file while it runs and ``results.json`` is merged under
  a lock; every module is imported at launch (:func:`import_row_code`).
* **Evaluation**: ``mrisr.training.export.export_model``, the code of ``mrisr
  train --export``, writes ``OUT/models/NAME`` (model.pt, card.json,
  validation.md): the held-out slab, each contrast (``--contrasts``) and
  acquisition (iso2-box, thick4-slice and ``--cases``), the network run
  through ``mrisr.inference.engine.enhance`` or ``mrisr.inference.upsampling.upscale_learned``,
  PSNR and SSIM against the cubic spline of the same low-resolution volume.
  A learned-upsampling row is evaluated on the acquisitions whose factors are
  its scale (the others are refused by ``upscale``). The Georgescu rows are also
  evaluated with the paper's 8-flip median self-ensemble (``Row.ensemble``;
  ``mrisr upscale --ensemble median``), a second line of the table.
* **Cost**: parameters; FLOPs per output voxel (forward hooks on Conv3d,
  ConvTranspose3d and Linear: 2 x multiply-adds of one forward pass for a
  32^3 output, divided by 32^3; the input is the low-resolution patch for
  learned-upsampling networks); CPU seconds of ``mrisr.upscale`` of the
  template to 1 mm (2 mm input; 1x1x4 mm for the 1x1x4 networks; bf16,
  ``--head-threads``, best of 2), skipped by ``--no-head-timing``.

Output: ``OUT/results.json`` (everything, the calibrations included),
``OUT/table.md``, ``OUT/configs/NAME/train.toml`` (each row reproduces with
``mrisr train --config`` that file), ``OUT/runs/NAME``, ``OUT/models/NAME``.
Running the same command again skips finished rows (``--force`` redoes them)
and continues unfinished ones; a different budget or schedule in the same
``--out`` is refused.

Usage (from the repository root, with the template in data/icbm152: ``mrisr
train --config models/recnn-d8w32/train.toml --fetch-data``)::

    python benchmarks/compare_archs.py --list
    python benchmarks/compare_archs.py --out runs/compare-60 --budget-minutes 60            # hours
    python benchmarks/compare_archs.py --out runs/compare-60 --budget-minutes 60 --gan      # + the GAN modes
    python benchmarks/compare_archs.py --out runs/compare-60 --budget-minutes 60 --only srcnn3d rrlsrn-1x1x4
    python benchmarks/compare_archs.py --out runs/compare-500 --steps 500 --contrasts t1 t2 flair pd
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/machine.py: which CPU
from machine import describe, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: The default model's from-scratch data mix (its stage 2; stages 3 and 4 fine-tune towards thick slices).
BASE_CONFIG = ROOT / "models" / "recnn-d8w32" / "train-stage2.toml"
#: The schedule of the default model's first stage (``train-stage1.toml``: from random weights).
SCHEDULE = {"lr": 1e-3, "min_lr": 1e-5, "warmup": 100}
#: Acquisitions every row is evaluated on (``--cases`` adds more).
DEFAULT_CASES = ("iso2-box", "thick4-slice")
#: Side of the cubic output whose FLOPs are counted.
FLOP_OUTPUT = 32
#: Fraction of a GAN row's critic updates spent before its first generator update.
GAN_CRITIC_WARMUP = 0.1


@dataclass(frozen=True)
class Row:
    """One architecture of the table.

    Attributes:
        name: Row name (``--only``; folder names under ``--out``).
        model: The ``[model]`` table (``condition`` comes from the base config);
            None: the base config's own (the default model's 8 x 32 ReCNN).
        train: ``[train]`` overrides of this row.
        init: Row whose exported model this one starts from (``--init``).
        degradation: ``[degradation]`` additions of the paper's own training (augmentations only: the
            acquisitions stay those of the protocol).
        ensemble: Also evaluate the paper's 8-flip median self-ensemble (learned upsampling only).
    """

    name: str
    model: dict[str, Any] | None
    train: dict[str, Any] = field(default_factory=dict)
    init: str = ""
    degradation: dict[str, Any] = field(default_factory=dict)
    ensemble: bool = False


#: Georgescu et al.'s augmentation (section III.C): half of the inputs blurred, sigma in [0, 0.5].
GEORGESCU_BLUR = {"input_blur": [0.0, 0.5], "input_blur_probability": 0.5}


def _learned(arch: str, preset: str, scale: list[int], degradation: dict[str, Any] | None = None,
             ensemble: bool = False) -> Row:
    return Row(f"{arch}-{'x'.join(map(str, scale))}", {"arch": arch, "preset": preset, "params": {"scale": scale}},
               degradation=degradation or {}, ensemble=ensemble)


ROWS: tuple[Row, ...] = (
    Row("recnn", None),
    Row("recnn-pham-10l", {"arch": "recnn", "preset": "pham-10l"}),
    Row("srcnn3d", {"arch": "srcnn3d", "preset": "pham"}),
    Row("mdcsrn-b4u4", {"arch": "mdcsrn", "preset": "b4u4"}),
    Row("mdcsrn-b8u4", {"arch": "mdcsrn", "preset": "b8u4"}),
    Row("gan-cpce", {"arch": "gan-cpce", "preset": "lyu"}),
    _learned("rrlsrn", "song", [2, 2, 2]),
    _learned("rrlsrn", "song", [1, 1, 4]),
    _learned("georgescu", "georgescu", [2, 2, 2], GEORGESCU_BLUR, ensemble=True),
    _learned("georgescu", "georgescu", [1, 1, 4], GEORGESCU_BLUR, ensemble=True),
)
#: Adversarial modes (``--gan``): mDCSRN-GAN fine-tunes the trained mdcsrn-b4u4 at Chen et al.'s rate,
#: GAN-CPCE the trained gan-cpce at the same rate.
GAN_ROWS: tuple[Row, ...] = (
    Row("mdcsrn-gan", {"arch": "mdcsrn-gan", "preset": "b4u4"}, {"lr": 5e-6, "min_lr": 5e-7}, init="mdcsrn-b4u4"),
    Row("gan-cpce-wgan", {"arch": "gan-cpce-wgan", "preset": "lyu"}, {"lr": 5e-6, "min_lr": 5e-7}, init="gan-cpce"),
    Row("gan-circle", {"arch": "gan-circle", "preset": "lyu"}),
)
ALL_ROWS = {r.name: r for r in ROWS + GAN_ROWS}


# ----------------------------------------------------------------------------- configuration files


def toml_value(value: Any) -> str:
    """A TOML literal for a config value (bool, number, string, list, inline table).

    Example:
        >>> toml_value({"scale": [1, 1, 4], "t1": 0.5, "x": True})
        '{ scale = [1, 1, 4], t1 = 0.5, x = true }'
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_toml(raw: dict[str, dict[str, Any]], header: str = "") -> str:
    """A configuration dict (sections of fields) as a TOML file; ``None`` fields are left out."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section, values in raw.items():
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def row_cases(row: Row, cases: list[str]) -> list[str]:
    """The requested acquisitions a row is evaluated on: all of them, or for a learned-upsampling
    network those whose factors are its scale (all, at its scale, if none is)."""
    from mrisr.training.data import VALIDATION_CASES

    scale = _scale(row)
    if scale is None:
        return list(cases)
    same = [c for c in cases if tuple(VALIDATION_CASES[c].factors) == tuple(float(s) for s in scale)]
    return same or list(cases)


def _scale(row: Row) -> tuple[int, ...] | None:
    params = (row.model or {}).get("params", {})
    return tuple(params["scale"]) if "scale" in params else None


def _is_gan(row: Row) -> bool:
    from mrisr.training.trainables import TRAINABLES

    arch = (row.model or {}).get("arch")
    return arch is not None and TRAINABLES[arch].mode == "gan"


def row_config(base: dict[str, Any], row: Row, steps: int, settings: dict[str, Any], data_dir: str) -> dict:
    """The configuration dict of ``row``: the base config's data, hold-out and degradations; the
    row's ``[model]``; the protocol's schedule with ``steps``; one validation, at the last step."""
    raw = {k: dict(v) for k, v in base.items() if k in ("data", "degradation", "model", "train")}
    raw["data"]["dir"] = data_dir
    if row.model is not None:
        raw["model"] = {**row.model, "condition": base["model"]["condition"]}
    raw["degradation"].update(row.degradation)
    cases = row_cases(row, settings["cases"])
    raw["train"].update({
        "steps": steps, "lr": settings["lr"], "min_lr": SCHEDULE["min_lr"],
        "warmup": min(SCHEDULE["warmup"], max(1, steps // 10)),
        "loss": "auto" if _is_gan(row) else settings["loss"], "threads": settings["threads"],
        "validate_every": steps, "checkpoint_every": max(1, math.ceil(steps / 20)),
        "validation_cases": cases, "validation_contrasts": ["t1"], "average_from": 0, **row.train})
    if _is_gan(row):
        gan = {k: v for k, v in base["gan"].items() if v is not None}
        raw["gan"] = {**gan, "critic_warmup": base["gan"]["n_critic"] * math.ceil(GAN_CRITIC_WARMUP * steps),
                      "extra_critic_every": 0, "extra_critic_steps": 0}
    return raw


def load_row_config(raw: dict, folder: Path):
    """The validated :class:`~mrisr.training.config.Config` of a dict whose paths are relative to ``folder``."""
    from mrisr.training.config import config_from_dict

    return config_from_dict(json.loads(json.dumps(raw)), base_dir=str(folder))


def write_config(raw: dict, path: Path, header: str):
    """Write ``raw`` as TOML and read it back through ``load_config`` (the file is what trains)."""
    from mrisr.training.config import load_config

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(raw, header))
    return load_config(path)


# ----------------------------------------------------------------------------- calibration and training


def calibrate(raw: dict, folder: Path, work: Path, warmup: int, timed: int) -> dict:
    """Seconds per training step of ``raw``'s setting: ``timed`` steps of the real trainer after ``warmup``,
    run in the scratch folder ``work``."""
    from mrisr.training.trainer import train

    folder.mkdir(parents=True, exist_ok=True)  # relative data paths resolve through it
    probe = json.loads(json.dumps(raw))
    probe["train"].update({"steps": 10**6, "validate_every": 10**6, "checkpoint_every": 10**6})
    if "gan" in probe:
        probe["gan"].update({"critic_warmup": 0})
    marks: dict[int, float] = {}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    train(load_row_config(probe, folder), work, on_step=lambda step, loss, gain: marks.__setitem__(
        step, time.perf_counter()), stop_after=warmup + timed + 1)
    per_step = (marks[warmup + timed] - marks[warmup]) / timed
    return {"seconds_per_step": per_step, "warmup_steps": warmup, "timed_steps": timed,
            "seconds_total": time.perf_counter() - t0, "load_average_before": load}


def budget_steps(seconds_per_step: float, budget_minutes: float, gan: bool = False) -> int:
    """Steps that fit the budget (a GAN row also pays its critic warm-up: about a tenth more).

    Example:
        >>> budget_steps(0.5, 1.0), budget_steps(0.5, 1.0, gan=True)
        (120, 109)
    """
    per_step = seconds_per_step * (1 + GAN_CRITIC_WARMUP if gan else 1)
    return max(1, int(budget_minutes * 60 // per_step))


def checkpoint_step(run_dir: Path) -> int:
    """The step of ``run_dir``'s checkpoint (0 without one)."""
    import torch

    ckpt = run_dir / "checkpoint.pt"
    return int(torch.load(ckpt, weights_only=True, map_location="cpu")["step"]) if ckpt.is_file() else 0


class Progress:
    """Prints a training's progress about every 5 % and keeps its elapsed seconds in the row."""

    def __init__(self, name: str, steps: int, row: dict, save) -> None:
        self.name, self.steps, self.row, self.save = name, steps, row, save
        self.every = max(1, steps // 20)
        self.start, self.before = time.perf_counter(), float(row.get("train_seconds", 0.0))
        self.first: int | None = None

    def __call__(self, step: int, loss: float, gain: float | None) -> None:
        if self.first is None:
            self.first = step - 1
        if step % self.every and step != self.steps:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / max(1, step - self.first) * (self.steps - step)
        self.row["train_seconds"] = self.before + elapsed
        self.save()
        info = "" if gain is None else f"  validation gain {gain:+.2f} dB"
        print(f"  {self.name}: step {step}/{self.steps} loss {loss:.4f}  {elapsed / 60:.1f} min, "
              f"~{left / 60:.1f} min left{info}", flush=True)


def train_row(cfg, config_path: Path, run_dir: Path, init_dir: Path | None, progress: Progress) -> None:
    """Train (or continue with ``resume``) until ``train.steps``; nothing if the checkpoint is there."""
    from mrisr.inference.registry import load_model
    from mrisr.training.trainer import train

    done = checkpoint_step(run_dir)
    if done >= cfg.train.steps:
        print(f"  {run_dir.name}: trained ({done} steps)")
        return
    resume = done > 0
    init = load_model(init_dir) if init_dir is not None and not resume else None
    print(f"  {run_dir.name}: {'resuming at step ' + str(done) if resume else 'training'} "
          f"({cfg.train.steps} steps)", flush=True)
    train(cfg, run_dir, config_path=config_path, resume=resume, on_step=progress, init=init)


# ----------------------------------------------------------------------------- cost


def _macs(module, inputs: tuple, output) -> int:
    """Multiply-adds of one call of a Conv3d, ConvTranspose3d or Linear."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    k = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose3d):  # every input value meets out/groups filters of k taps
        return inputs[0].numel() * (module.out_channels // module.groups) * k
    return output.numel() * (module.in_channels // module.groups) * k


def flops_per_voxel(network, out_size: int = FLOP_OUTPUT) -> float:
    """2 x multiply-adds of Conv3d/ConvTranspose3d/Linear layers per output voxel, for an ``out_size``^3
    output (on the meta device: shapes only, no arithmetic).

    Example:
        >>> from mrisr.archs.recnn import ReCNN
        >>> flops_per_voxel(ReCNN(depth=2, width=4, cond_dim=0), 8) == 2 * 27 * (1 * 4 + 4 * 1)
        True
    """
    import torch
    from torch import nn

    from mrisr.inference.upsampling import upsampling_scale

    net = network.to("meta").eval()
    scale = upsampling_scale(net) or (1, 1, 1)
    x = torch.zeros(1, net.in_channels, *(out_size // s for s in scale), device="meta")
    cond = torch.zeros(1, 3, device="meta") if getattr(net, "cond_dim", 0) else None
    total = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + 2 * _macs(m, i, o)))
             for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear))]
    try:
        with torch.no_grad():
            out = net(x, cond)
    finally:
        for h in hooks:
            h.remove()
    return total[0] / math.prod(out.shape[2:])


def network_cost(cfg) -> dict:
    """Parameters, receptive radius and FLOPs per output voxel of the exported network."""
    from mrisr.training.networks import build_network

    net = build_network(cfg)
    return {"params": sum(p.numel() for p in net.parameters()), "receptive_radius": int(net.receptive_radius),
            "flops_per_voxel": flops_per_voxel(net)}


def _bench_upscale():
    """``benchmarks/bench_upscale.py`` (its template helpers), importable from anywhere."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import bench_upscale

    return bench_upscale


def head_input(out: Path, data_dir: Path, factors: tuple[int, int, int]) -> Path:
    """The template degraded (box) by ``factors``, cached under ``OUT/head``."""
    label = "x".join(map(str, factors))
    path = out / "head" / f"t1_{label}mm.nii.gz"
    if not path.is_file():
        bench = _bench_upscale()
        path.parent.mkdir(parents=True, exist_ok=True)
        hr, affine = bench.template_head(data_dir)
        bench.degraded_head(hr, affine, tuple(float(f) for f in factors), path)
    return path


def time_upscale(path: Path, threads: int, repeats: int = 2, precision: str = "auto", **kwargs: Any) -> dict:
    """Best wall seconds of ``mrisr.upscale(path, spacing=1, ...)`` in this process."""
    import mrisr

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        img = mrisr.upscale(str(path), spacing=1.0, device="cpu", precision=precision, threads=threads, **kwargs)
        times.append(time.perf_counter() - t0)
    return {"seconds": min(times), "runs": times, "precision": precision, "threads": threads,
            "output_shape": list(img.shape)}


def head_timing(out: Path, data_dir: Path, model_dir: Path, scale, threads: int, results: dict) -> dict:
    """CPU seconds of the exported model on the template head (input: 2 mm, or the network's scale),
    with the spline's time for that input recorded once in ``results["head_inputs"]``; bf16 where supported."""
    from mrisr.inference.device import cpu_supports_bf16
    from mrisr.inference.registry import load_model

    factors = tuple(scale) if scale else (2, 2, 2)
    path = head_input(out, data_dir, factors)
    label = "x".join(map(str, factors))
    inputs = results.setdefault("head_inputs", {})
    if label not in inputs:
        inputs[label] = {"path": str(path), "spline": time_upscale(path, threads, method="spline")}
    precision = "bf16" if cpu_supports_bf16() else "fp32"
    record = time_upscale(path, threads, precision=precision, method="cnn", model=load_model(model_dir))
    return {**record, "input": f"{label} mm"}


# ----------------------------------------------------------------------------- results and table


def load_results(out: Path) -> dict:
    """``OUT/results.json``, or an empty record."""
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def save_results(out: Path, results: dict, rows: list[str] | None = None) -> dict:
    """Write ``OUT/results.json`` atomically, merged under a lock with what is on disk: only ``rows``
    (default: all) of ``results`` replace the file's, so several processes running different ``--only``
    rows can share one ``--out``. Returns the merged record.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = save_results(d, {"rows": {"a": {"steps": 1}}})
        >>> sorted(save_results(d, {"rows": {"a": {"stale": 1}, "b": {"steps": 2}}}, ["b"])["rows"]["a"])
        ['steps']
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = load_results(out)
        names = list(results["rows"]) if rows is None else [n for n in rows if n in results["rows"]]
        merged = {**disk, **{k: v for k, v in results.items() if k not in ("rows", "head_inputs")}}
        merged["head_inputs"] = {**disk.get("head_inputs", {}), **results.get("head_inputs", {})}
        merged["rows"] = {**disk.get("rows", {}), **{n: results["rows"][n] for n in names}}
        tmp = out / f".results.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(merged, indent=1, default=str) + "\n")
        os.replace(tmp, out / "results.json")
    return merged


def claim_row(out: Path, name: str):
    """An exclusive claim on row ``name`` among processes sharing ``out`` (an open lock file; close it to
    release), or None when another process holds it."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / f".row-{name}.lock", "w")  # noqa: SIM115 - held while the row runs
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def check_protocol(results: dict, protocol: dict) -> None:
    """Refuse an ``--out`` folder whose rows were trained under another protocol."""
    old = results.get("protocol")
    if old is not None and results["rows"] and old != protocol:
        diff = {k: (old.get(k), protocol.get(k)) for k in set(old) | set(protocol) if old.get(k) != protocol.get(k)}
        raise SystemExit(f"this --out folder holds rows trained under another protocol "
                         f"(was vs now: {diff}); use another --out")


def _evaluated(entry: dict, row: Row, cases: list[str], contrasts: list[str]) -> bool:
    """Whether the row's evaluation covers ``cases`` and ``contrasts`` (and its ensemble, if it has one)."""
    done = entry.get("evaluated", {"cases": [], "contrasts": []})
    ensemble = all("psnr_ensemble" in r for r in entry.get("evaluation", [])) if row.ensemble else True
    return set(cases) <= set(done["cases"]) and set(contrasts) <= set(done["contrasts"]) and ensemble


def row_finished(entry: dict, row: Row, settings: dict) -> bool:
    """Whether a row has its training, the requested evaluation, its cost and (unless skipped) head timing."""
    return (entry.get("trained", False) and _evaluated(entry, row, row_cases(row, settings["cases"]),
                                                       settings["contrasts"])
            and "params" in entry and ("head" in entry or not settings["head_timing"]))


def _requested(rows: list[dict], cases: list[str]) -> list[dict]:
    """Tag each report row with the requested acquisition it is (None: a scaled stand-in)."""
    from mrisr.training.data import VALIDATION_CASES

    labels = {VALIDATION_CASES[c].describe(): c for c in cases}
    return [{**r, "requested": labels.get(r["acquisition"])} for r in rows]


def _cell(entry: dict, contrast: str, case: str, of: str = "model") -> str:
    """PSNR / SSIM (gains) of the network (``of="model"``) or its flip ensemble (``"ensemble"``)."""
    for r in entry.get("evaluation", []):
        if r["contrast"] == contrast and r.get("requested") == case and f"psnr_{of}" in r:
            return (f"{r[f'psnr_{of}']:.2f} / {r[f'ssim_{of}']:.4f} "
                    f"({r[f'psnr_{of}'] - r['psnr_spline']:+.2f} / {r[f'ssim_{of}'] - r['ssim_spline']:+.4f})")
    return "n/a (scale)" if entry.get("scale") else "-"


def _spline_cell(results: dict, contrast: str, case: str) -> str:
    for entry in results["rows"].values():
        if entry.get("scale"):
            continue
        for r in entry.get("evaluation", []):
            if r["contrast"] == contrast and r.get("requested") == case:
                return f"{r['psnr_spline']:.2f} / {r['ssim_spline']:.4f}"
    return "-"


def _budget_text(protocol: dict) -> str:
    if protocol.get("budget_minutes") is not None:
        return (f"the same CPU budget for every row, **{protocol['budget_minutes']:g} minutes** of training on "
                f"{protocol['threads']} thread(s) (train.steps = floor(budget / calibrated seconds per step))")
    return f"the same number of steps for every row, **{protocol['steps']}**, on {protocol['threads']} thread(s)"


def markdown(results: dict, settings: dict) -> str:
    """``table.md``: the protocol, the table and how to reproduce it."""
    p = results["protocol"]
    pairs = [(c, a) for c in settings["contrasts"] for a in settings["cases"]]
    steps = f"steps in {p['budget_minutes']:g} min" if p.get("budget_minutes") is not None else "steps"
    head = ["architecture", "preset / scale", "params", "FLOP/voxel", "s/step", steps]
    head += [f"{c.upper()} {a}: PSNR / SSIM (gain)" for c, a in pairs] + ["CPU s, head (input)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| cubic spline | | | | | | " + " | ".join(_spline_cell(results, c, a) for c, a in pairs) + " | "
                 + " / ".join(f"{v['spline']['seconds']:.1f} ({k} mm)" for k, v in
                              results.get("head_inputs", {}).items()) + " |")
    order = list(ALL_ROWS)
    for name, e in sorted(results["rows"].items(), key=lambda item: order.index(item[0])):
        if "error" in e and not e.get("trained"):
            lines.append(f"| {name} | failed: {e['error'].splitlines()[0][:80]} |")
            continue
        if "preset" not in e:  # calibrated only: another process is training it, or it was stopped
            lines.append(f"| {name} | not trained yet |")
            continue
        head_s = f"{e['head']['seconds']:.1f} ({e['head']['input']})" if "head" in e else "-"
        per_step = e["calibration"]["seconds_per_step"] if "calibration" in e else (
            e.get("train_seconds", 0) / max(1, e.get("steps", 1)))
        lines.append(f"| {name} | {e['preset']} | {e.get('params', 0):,} | {e.get('flops_per_voxel', 0) / 1e6:.2f} M "
                     f"| {per_step:.2f} | {e.get('steps', '-')} | "
                     + " | ".join(_cell(e, c, a) for c, a in pairs) + f" | {head_s} |")
        if ALL_ROWS[name].ensemble and any("psnr_ensemble" in r for r in e.get("evaluation", [])):
            lines.append(f"| {name} + 8-flip median | | | | | | "
                         + " | ".join(_cell(e, c, a, "ensemble") for c, a in pairs) + " | |")
    return "\n".join([
        "# Architectures under one protocol\n",
        f"Protocol (docs/models.md): data, hold-out and acquisition distribution of `{p['base_config']}`; "
        f"{_budget_text(p)}; learning rate {p['lr']:g} to {SCHEDULE['min_lr']:g} (cosine), loss `{p['loss']}` "
        f"(auto: each paper's), batch {p['batch']}, patch {p['patch']}, {p['precision']}. Evaluation: held-out "
        "slab, network through the code of `mrisr upscale` (`mrisr train --export`), PSNR dB / SSIM over the "
        "head mask; gain = network minus the cubic spline of the same low-resolution volume (learned-upsampling "
        "rows: their slab is cropped to whole low-resolution voxels, so their spline differs slightly from the "
        "spline row). FLOP/voxel: per output voxel of a 32^3 output. s/step: seconds per training step, "
        f"calibrated (with --steps: training wall seconds over steps). CPU s: `mrisr.upscale` of the 1 mm template "
        f"from the named input, bf16, {settings['head_threads']} "
        "threads, best of 2.\n",
        "\n".join(lines) + "\n",
        f"Reproduce: `{results.get('command', '')}` (resumable); one row: `mrisr train --config "
        "OUT/configs/NAME/train.toml --run-dir OUT/runs/NAME` then the same with `--export OUT/models/NAME` "
        "(mdcsrn-gan, gan-cpce-wgan: `--init OUT/models/mdcsrn-b4u4`, `OUT/models/gan-cpce` in the first).\n"])


# ----------------------------------------------------------------------------- one row


def _preset_label(row: Row, cfg) -> str:
    m = cfg.model
    label = m.preset or (f"{m.depth}x{m.width}" if m.arch == "recnn" else "defaults")
    scale = _scale(row)
    return label + (f", {'x'.join(map(str, scale))}" if scale else "")


def _steps(row: Row, raw_of, entry: dict, args, out: Path, save) -> int:
    """The row's ``train.steps``: ``--steps``, or calibrated once (kept in the row) to the budget."""
    if args.steps:
        return args.steps
    if "calibration" not in entry:
        print(f"  {row.name}: calibrating ({args.warmup_steps} + {args.calibrate_steps} steps)", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".calibration-", dir=out) as work:
            entry["calibration"] = calibrate(raw_of(10**6), out / "configs" / row.name, Path(work),
                                             args.warmup_steps, args.calibrate_steps)
        save()
    cal = entry["calibration"]
    steps = budget_steps(cal["seconds_per_step"], args.budget_minutes, _is_gan(row))
    print(f"  {row.name}: {cal['seconds_per_step']:.3f} s/step (load average {cal['load_average_before']:.1f} "
          f"before) -> {steps} steps in {args.budget_minutes:g} min", flush=True)
    return steps


def _header(row: Row, out: Path, steps: int) -> str:
    init = f" --init {out / 'models' / row.init}" if row.init else ""
    folder = out / "configs" / row.name
    return (f"{row.name}: generated by benchmarks/compare_archs.py ({steps} steps; protocol: docs/models.md, "
            f"'Comparison under one protocol').\n"
            f"mrisr train --config {folder / 'train.toml'} --run-dir {out / 'runs' / row.name}{init}\n"
            f"mrisr train --config {folder / 'train.toml'} --run-dir {out / 'runs' / row.name} "
            f"--export {out / 'models' / row.name}")


def run_row(row: Row, args, settings: dict, base: dict, results: dict, out: Path, data_dir: Path) -> None:
    """Calibrate, train, export (evaluate), cost and time one row, saving ``results`` after each stage."""
    entry = results["rows"].setdefault(row.name, {})
    save = lambda: save_results(out, results, [row.name])  # noqa: E731
    folder = out / "configs" / row.name
    rel_data = os.path.relpath(data_dir, folder) if out.is_relative_to(ROOT) else str(data_dir)
    raw_of = lambda steps: row_config(base, row, steps, settings, rel_data)  # noqa: E731
    steps = _steps(row, raw_of, entry, args, out, save)
    cfg = write_config(raw_of(steps), folder / "train.toml", _header(row, out, steps))
    entry.update({"arch": cfg.model.arch, "preset": _preset_label(row, cfg), "scale": _scale(row),
                  "steps": steps, "config": str(folder / "train.toml")})
    run_dir, model_dir = out / "runs" / row.name, out / "models" / row.name
    init_dir = out / "models" / row.init if row.init else None
    if init_dir is not None and not (init_dir / "card.json").is_file() and checkpoint_step(run_dir) == 0:
        raise RuntimeError(f"{row.name} starts from {row.init}'s model: run --only {row.init} first")
    train_row(cfg, folder / "train.toml", run_dir, init_dir, Progress(row.name, steps, entry, save))
    entry["trained"] = True
    save()
    cases = row_cases(row, settings["cases"])
    if not _evaluated(entry, row, cases, settings["contrasts"]):
        card = _export(row, cfg, folder / "train.toml", run_dir, model_dir, cases, settings, steps)
        entry["evaluation"] = _requested(card.validation["rows"], cases)
        entry["evaluated"] = {"cases": cases, "contrasts": settings["contrasts"]}
        entry["model_dir"] = str(model_dir)
        save()
    entry.update(network_cost(cfg))
    save()
    if settings["head_timing"] and "head" not in entry:
        print(f"  {row.name}: timing the head", flush=True)
        entry["head"] = head_timing(out, data_dir, model_dir, _scale(row), args.head_threads, results)
        save()


def _export(row: Row, cfg, config_path: Path, run_dir: Path, model_dir: Path, cases: list[str],
            settings: dict, steps: int):
    from mrisr.training.export import export_model

    budget = (f"{settings['budget_minutes']:g} CPU minutes, " if settings["budget_minutes"] is not None else "")
    print(f"  {row.name}: evaluating and exporting to {model_dir}", flush=True)
    return export_model(cfg, run_dir / "best.pt", model_dir, config_path=config_path, version="0.1.0",
                        description=f"{row.name} trained by benchmarks/compare_archs.py ({budget}{steps} steps) "
                                    "under the one-protocol comparison of docs/models.md",
                        log=lambda line: print("    " + line, flush=True), cases=cases,
                        contrasts=tuple(settings["contrasts"]), ensemble=row.ensemble)


# ----------------------------------------------------------------------------- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    from mrisr.training.data import VALIDATION_CASES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="output folder (results.json, table.md, configs, runs, models)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--budget-minutes", type=float, help="CPU minutes of training per row (calibrated steps)")
    mode.add_argument("--steps", type=int, help="train every row this many steps instead of a time budget")
    ap.add_argument("--only", nargs="+", choices=list(ALL_ROWS), metavar="NAME", help="run these rows only")
    ap.add_argument("--gan", action="store_true",
                    help="add the GAN modes (mdcsrn-gan after mdcsrn-b4u4, gan-cpce-wgan after gan-cpce, gan-circle)")
    ap.add_argument("--force", action="store_true", help="redo the selected rows from scratch")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of training and evaluation (2)")
    ap.add_argument("--head-threads", type=int, default=2, help="threads of the head timing (2)")
    ap.add_argument("--no-head-timing", dest="head_timing", action="store_false", help="skip the head timing")
    ap.add_argument("--cases", nargs="+", default=[], choices=list(VALIDATION_CASES), metavar="CASE",
                    help=f"acquisitions evaluated besides {', '.join(DEFAULT_CASES)}")
    ap.add_argument("--contrasts", nargs="+", default=["t1"], choices=["t1", "t2", "flair", "pd"])
    ap.add_argument("--loss", default="auto", choices=["auto", "l1", "l2", "charbonnier", "l1+gdl", "charbonnier+gdl"],
                    help="train.loss of every non-GAN row (auto: each paper's)")
    ap.add_argument("--lr", type=float, default=SCHEDULE["lr"],
                    help="peak learning rate (mdcsrn-gan, gan-cpce-wgan: 5e-6)")
    ap.add_argument("--calibrate-steps", type=int, default=10, help="timed calibration steps (10)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed calibration steps first (3)")
    ap.add_argument("--base-config", type=Path, default=BASE_CONFIG, help="data, hold-out and degradations")
    args = ap.parse_args(argv)
    if not args.list and (args.out is None or (args.budget_minutes is None and args.steps is None)):
        ap.error("--out and one of --budget-minutes / --steps are required")
    return args


def selected_rows(args) -> list[Row]:
    """The rows to run, in table order (a GAN row after the row it starts from)."""
    names = set(args.only) if args.only else {r.name for r in ROWS + (GAN_ROWS if args.gan else ())}
    return [r for r in ROWS + GAN_ROWS if r.name in names]


def settings_of(args, base_cfg) -> tuple[dict, dict]:
    """(protocol: what training depends on, checked on resume; settings: protocol + evaluation)."""
    t = base_cfg.train
    protocol = {"base_config": os.path.relpath(args.base_config.resolve(), ROOT), "budget_minutes": args.budget_minutes,
                "steps": args.steps, "threads": args.threads, "lr": args.lr, "loss": args.loss, "batch": t.batch,
                "patch": t.patch, "precision": t.precision, "seed": t.seed}
    cases = list(dict.fromkeys([*DEFAULT_CASES, *args.cases]))
    return protocol, {**protocol, "cases": cases, "contrasts": list(args.contrasts), "head_timing": args.head_timing,
                      "head_threads": args.head_threads}


def _forget(row: Row, out: Path, results: dict) -> None:
    """``--force``: the row's results, run and model folders go."""
    results["rows"].pop(row.name, None)
    for sub in ("runs", "models", "configs"):
        shutil.rmtree(out / sub / row.name, ignore_errors=True)


def import_row_code() -> None:
    """Import every module of :mod:`mrisr`, :mod:`mrisr.archs` and :mod:`mrisr.training` now, so that all
    rows of a run that lasts hours use the code as it was at launch (no lazy import of an edited file)."""
    import importlib
    import pkgutil

    import mrisr
    import mrisr.archs
    import mrisr.training

    for pkg in (mrisr, mrisr.archs, mrisr.training):
        for module in pkgutil.iter_modules(pkg.__path__):
            if module.name != "__main__":
                importlib.import_module(f"{pkg.__name__}.{module.name}")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.list:
        for r in ROWS + GAN_ROWS:
            print(f"{r.name:18s} {json.dumps(r.model) if r.model else '[model] of ' + str(BASE_CONFIG.name)}"
                  f"{'  (--gan)' if r in GAN_ROWS else ''}")
        return
    import torch

    from mrisr.training.config import load_config

    import_row_code()
    torch.set_num_threads(args.threads)
    base_cfg = load_config(args.base_config)
    protocol, settings = settings_of(args, base_cfg)
    out = args.out.resolve()
    results = load_results(out)
    check_protocol(results, protocol)
    results.update({"protocol": protocol, "command": "python benchmarks/compare_archs.py " + " ".join(
        sys.argv[1:] if argv is None else argv)})
    results["machine"] = machine_info()
    print(f"# {describe(results['machine'])}", flush=True)
    base = base_cfg.to_dict()
    data_dir = (Path(base_cfg.base_dir) / base_cfg.data.dir).resolve()
    for row in selected_rows(args):
        claim = claim_row(out, row.name)
        if claim is None:
            print(f"== {row.name}: running in another process, skipped")
            continue
        with claim:
            on_disk = load_results(out)["rows"].get(row.name)  # another process may have run it meanwhile
            if on_disk is not None:
                results["rows"][row.name] = on_disk
            if args.force:
                _forget(row, out, results)
            if row_finished(results["rows"].get(row.name, {}), row, settings):
                print(f"== {row.name}: finished, skipped (--force redoes it)")
                continue
            print(f"== {row.name}", flush=True)
            t0 = time.perf_counter()
            try:
                run_row(row, args, settings, base, results, out, data_dir)
                results["rows"][row.name].pop("error", None)
            except Exception as e:  # one failed row must not lose the others
                traceback.print_exc()
                results["rows"].setdefault(row.name, {})["error"] = f"{type(e).__name__}: {e}"
            results["rows"][row.name]["wall_seconds_last_session"] = time.perf_counter() - t0
            merged = save_results(out, results, [row.name])
        (out / "table.md").write_text(markdown(merged, settings))
    merged = save_results(out, results, [r.name for r in selected_rows(args)])
    (out / "table.md").write_text(markdown(merged, settings))
    print(f"\nwrote {out / 'results.json'} and {out / 'table.md'}\n")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
