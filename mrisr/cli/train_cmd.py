"""``mrisr train``: train a model from a TOML configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: GAN modes whose paper starts from a trained generator: the generator's architecture.
_GAN_STARTS = {"mdcsrn-gan": "mdcsrn", "gan-cpce-wgan": "gan-cpce"}


def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML training configuration (required "
                                                "unless --list-archs).", exists=True, dir_okay=False,
                                                readable=True, show_default=False)] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run folder (checkpoints, logs). "
                                                 "Default: runs/<config folder name>.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's checkpoint.")] = False,
    fetch_data: Annotated[bool, typer.Option("--fetch-data", help="Download the ICBM152 template (pip download "
                                             "of the nilearn wheel) into data.dir if it is missing.")] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps of this "
                                                  "session (checkpointed; continue with --resume).", min=1)] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Instead of training: validate the run's best "
                                                "weights on the held-out data and write them as a model folder "
                                                "(weights, card.json, validation.md).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="With --export: weights to export "
                                                 "(default: <run dir>/best.pt).")] = None,
    description: Annotated[str, typer.Option("--description", help="With --export: the card's description.")] = "",
    model_version: Annotated[str, typer.Option("--model-version", help="With --export: the card's version.")] = "1.0.0",
    default: Annotated[bool, typer.Option("--default", help="With --export: mark as the default model.")] = False,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="With --export, for a learned-upsampling network: "
                                           "also validate its 8-flip median self-ensemble (what `mrisr upscale "
                                           "--ensemble median` runs).")] = False,
    init: Annotated[str | None, typer.Option("--init", help="Fine-tune: start from this trained model (a shipped "
                                             "model's name or a model folder) instead of random weights. The "
                                             "config's [model] must match it.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    list_archs: Annotated[bool, typer.Option("--list-archs", help="List the architectures [model] arch can name, "
                                             "with their papers, and exit.")] = False,
) -> None:
    """Train a super-resolution network (see docs/training.md; architectures: --list-archs)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mrisr.cli.common import usage_error
    from mrisr.errors import MrisrError
    from mrisr.training import icbm152
    from mrisr.training.config import load_config
    from mrisr.training.trainer import train as run_training

    err = Console(stderr=True)
    if list_archs:
        from mrisr.cli.models_cmd import print_architectures

        print_architectures()
        return
    if config is None:
        raise usage_error("give the training configuration with --config FILE (see docs/training.md), or "
                          "--list-archs to list the architectures", err)
    try:
        cfg = load_config(config)
        if fetch_data and cfg.data.source == "icbm152":
            icbm152.fetch(Path(cfg.base_dir) / cfg.data.dir)
        if fetch_data and cfg.data.wholehead_dir:
            from mrisr.training import wholehead

            wholehead.fetch(Path(cfg.base_dir) / cfg.data.wholehead_dir, wholehead.sources_for(cfg.data))
        out = run_dir or Path("runs") / config.resolve().parent.name
        if export is not None:
            from mrisr.training.export import export_model

            card = export_model(cfg, weights or out / "best.pt", export, config_path=config,
                                description=description, default=default, version=model_version,
                                log=lambda line: err.print(line, highlight=False), ensemble=ensemble)
            err.print(f"wrote {export} (sha256 {card.sha256[:12]}...)")
            return
        with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err, disable=quiet) as progress:
            task = progress.add_task("train", total=cfg.train.steps, info="")
            last_gain: list[float | None] = [None]

            def on_step(step: int, loss: float, gain: float | None) -> None:
                if gain is not None:
                    last_gain[0] = gain
                g = "" if last_gain[0] is None else f"val gain {last_gain[0]:+.2f} dB"
                progress.update(task, completed=step, info=f"loss {loss:.4f} {g}")

            start = None
            if init is not None and not resume:
                from mrisr.inference.registry import load_model

                start = load_model(init)
            elif cfg.model.arch in _GAN_STARTS and not resume:
                what = _GAN_STARTS[cfg.model.arch]
                err.print(f"note: {cfg.model.arch} starts from random weights; its paper starts from a trained "
                          f"{what} (train and export one, then pass it with --init)", highlight=False)
            best = run_training(cfg, out, config_path=config, resume=resume, on_step=on_step,
                                stop_after=max_steps, init=start)
    except MrisrError as e:
        raise usage_error(str(e), err) from None
    if best.is_file():
        err.print(f"best weights so far: {best}")
    else:
        err.print(f"stopped before the first validation; continue with --resume --run-dir {out}")
