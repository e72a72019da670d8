"""The README's configuration reference, rendered from the configuration models.

``python -m workflows.config_reference`` prints it; a test checks that the
README holds exactly this text between its reference markers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def sections() -> list[tuple[str, str, type[BaseModel]]]:
    """(command, configs/ file, model) for every configurable command."""
    from pipeline.evaluation import EvaluateConfig
    from pipeline.model.config import ModelConfig
    from pipeline.prediction.config import PredictConfig
    from pipeline.synth.config import SynthConfig
    from pipeline.tiling import TileConfig
    from pipeline.training.config import TrainConfig
    from pipeline.vectorize import VectorizeConfig
    from workflows.run_workflow import Step, Workflow

    return [
        ("terraseg synth", "configs/synth.yaml", SynthConfig),
        ("terraseg tile", "configs/tile.yaml", TileConfig),
        (
            "model (terraseg model describe, and the model section of training)",
            "configs/model.yaml",
            ModelConfig,
        ),
        ("terraseg train", "configs/train.yaml", TrainConfig),
        ("terraseg predict", "configs/predict.yaml", PredictConfig),
        ("terraseg vectorize", "configs/vectorize.yaml", VectorizeConfig),
        ("terraseg evaluate", "--config FILE", EvaluateConfig),
        ("terraseg run: the workflow file", "configs/workflows/*.yaml", Workflow),
        ("terraseg run: each entry of steps", "configs/workflows/*.yaml", Step),
    ]


def render() -> str:
    """Markdown tables: every key, its default and its meaning."""
    parts = []
    fallback = {"ModelConfig": _comments(ROOT / "configs" / "model.yaml")}
    for title, path, model in sections():
        parts.append(f"**{title}** (`{path}`)\n\n| key | default | meaning |\n|---|---|---|")
        parts.extend(_rows(model, "", _comments(ROOT / path), _defaults(model), fallback))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _rows(
    model: type[BaseModel],
    prefix: str,
    comments: dict[str, str],
    defaults: BaseModel | None,
    fallback: dict[str, dict[str, str]],
) -> list[str]:
    """One row per leaf key; nested sections take their defaults from the parent's default."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        value = (
            getattr(defaults, name)
            if defaults is not None
            else field.get_default(call_default_factory=True)
        )
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = value if isinstance(value, BaseModel) else None
            rows.extend(_rows(annotation, f"{prefix}{name}.", comments, nested, fallback))
            continue
        text = (
            field.description
            or comments.get(f"{prefix}{name}")
            or fallback.get(model.__name__, {}).get(name)
            or f"see `{model.__name__}`"
        )
        meaning = text.replace("|", "\\|")
        shown = "required" if field.is_required() else f"`{_default(value)}`"
        rows.append(f"| `{prefix}{name}` | {shown} | {meaning} |")
    return rows


def _defaults(model: type[BaseModel]) -> BaseModel | None:
    """The model with every default, when it has no required fields."""
    try:
        return model()
    except Exception:  # required fields (workflow files, steps)
        return None


def _default(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str)


def _comments(path: Path) -> dict[str, str]:
    """The comment lines right above each top-level or nested key of a YAML file."""
    found: dict[str, str] = {}
    pending: list[str] = []
    parents: list[tuple[int, str]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        if not stripped or ":" not in stripped:
            pending = []
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        parents = [(i, k) for i, k in parents if i < indent]
        dotted = ".".join([k for _, k in parents] + [key])
        if pending:
            found[dotted] = " ".join(pending)
        parents.append((indent, key))
        pending = []
    return found


if __name__ == "__main__":
    print(render(), end="")
