"""``terraseg registry``: list, show, tag and promote models in the MLflow model registry.

``terraseg models`` is the former name of this group; it still works and is not
listed in ``terraseg --help``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from terraseg.workflows.cli.options import tracking_uri_opt

as_json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def registry() -> None:
    """Registered models: list, show, tag, promote (set an alias such as ``production``)."""


@registry.command("list")
@tracking_uri_opt
@as_json_opt
def list_(tracking_uri: str | None, as_json: bool) -> None:
    """List registered models with their latest version and aliases."""
    from terraseg.pipeline.registry import list_models

    found = list_models(tracking_uri)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"{'name':<30} {'latest':>6}  {'updated':<25} aliases")
    for model in found:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(model["aliases"].items()))
        click.echo(
            f"{model['name']:<30} {model['latest_version'] or '-':>6}  "
            f"{model['updated'] or '-':<25} {aliases}"
        )


@registry.command()
@click.argument("model_ref", metavar="NAME[@ALIAS|/VERSION]")
@tracking_uri_opt
@as_json_opt
def show(model_ref: str, tracking_uri: str | None, as_json: bool) -> None:
    """Show a model version: source run, metrics, bands, classes.

    NAME alone is the latest version. Any model URI works too: models:/...,
    runs:/RUN_ID/model or a local model folder.
    """
    from terraseg.pipeline.registry import describe_model

    info = describe_model(model_ref, tracking_uri)
    click.echo(json.dumps(info, indent=2) if as_json else "\n".join(_show_lines(info)))


def _show_lines(info: dict[str, Any]) -> list[str]:
    lines = [info["uri"]]
    if "version" in info:
        aliases = ", ".join(info["aliases"]) or "none"
        lines.append(f"  {info['name']} version {info['version']}, aliases: {aliases}")
        lines.append(f"  created {info['created']}")
        lines.extend(f"  {line}" for line in info["description"].splitlines() if line)
    run = info.get("run")
    if run:
        lines.append(
            f"  source run {run['id']} ({run.get('name', '?')}) in experiment "
            f"{run.get('experiment', '?')}, {run.get('status', '?')}"
        )
    config = info["model_config"]
    lines.append(
        f"  model: DeepLabV3+ {config['backbone']}, output stride {config['output_stride']}, "
        f"{'decoder' if config['decoder'] else 'no decoder'}, tile {info['tile_size']}"
    )
    lines.append(f"  bands ({info['input_dtype']}): {', '.join(info['bands'])}")
    lines.append("  classes:")
    for c in info["classes"]:
        red, green, blue = c["color"]
        lines.append(f"    {c['id']:>3}  {c['name']:<24} #{red:02x}{green:02x}{blue:02x}")
    lines.extend(_metric_lines((run or {}).get("metrics", {})))
    return lines


def _metric_lines(metrics: dict[str, float]) -> list[str]:
    """The run's headline metrics (its best epoch's, the registered weights), then the last's.

    A run without ``best_epoch`` (not made by ``terraseg train``) shows its latest values.
    """
    if not metrics:
        return []
    best, last = metrics.get("best_epoch"), metrics.get("last_epoch")
    if best is None or last is None:
        title = "  metrics (latest values):"
    else:
        title = f"  metrics of epoch {best:.0f}, the best of {last:.0f} (the registered weights):"
    skip = ("best_epoch", "last_epoch")
    headline = [k for k in metrics if k not in skip and not k.startswith("last/")]
    headline.sort(
        key=lambda k: (not k.startswith("val/"), not k.startswith("train/"), k.count("/"), k)
    )
    lines = [title, *(f"    {key:<32} {metrics[key]:.4g}" for key in headline)]
    if best is not None and last is not None and "last/val/mean_iou" in metrics:
        lines.append(f"  last epoch ({last:.0f}): val/mean_iou {metrics['last/val/mean_iou']:.4g}")
    return lines


@registry.command()
@click.argument("model_ref", metavar="NAME[@ALIAS|/VERSION]")
@click.argument("settings", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--evaluation",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="metrics.json of terraseg evaluate on held-back scenes: sets heldout_mean_iou "
    "and heldout_pixel_accuracy and a line of the description.",
)
@tracking_uri_opt
def tag(
    model_ref: str, settings: tuple[str, ...], evaluation: Path | None, tracking_uri: str | None
) -> None:
    """Set tags of a model version (NAME alone: the latest); record a held-back evaluation.

    The registry page then shows how the model did on scenes it never saw, next
    to the validation mean IoU that training recorded.
    """
    from terraseg.pipeline.registry import record_held_back, tag_version

    tags = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{setting!r}: write KEY=VALUE", param_hint="KEY=VALUE")
        tags[key.strip()] = value
    if not tags and evaluation is None:
        raise click.UsageError("give KEY=VALUE tags, --evaluation FILE or both")
    version = tag_version(model_ref, tags, tracking_uri) if tags else None
    if evaluation is not None:
        version, card = record_held_back(model_ref, evaluation.resolve(), tracking_uri)
        tags |= card.tags
    assert version is not None
    for key, value in tags.items():
        click.echo(f"{version.name}/{version.version} {key}={value}")


@registry.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.argument("alias")
@tracking_uri_opt
def promote(name: str, version: int, alias: str, tracking_uri: str | None) -> None:
    """Point ALIAS (e.g. production) of model NAME at VERSION.

    Prediction then picks it up as models:/NAME@ALIAS.
    """
    from terraseg.pipeline.registry import promote as set_alias

    if alias.isdigit() or not alias.replace("_", "").replace("-", "").isalnum():
        raise click.BadParameter(
            "use letters, digits, '-' and '_', not only digits", param_hint="ALIAS"
        )
    previous = set_alias(name, version, alias, tracking_uri)
    was = f" (was version {previous})" if previous is not None else ""
    click.echo(f"{name}@{alias} -> version {version}{was}")
