"""Reference docs generated from the code itself, so the README cannot drift.

Used by cog blocks in README.md (`make docs` rewrites them; a test runs `cog --check`).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import click
from pydantic import BaseModel

from digest.config import Config


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _model_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        annotation = field.annotation
        inner = _model_inside(annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            suffix = "[]" if typing.get_origin(annotation) is list else ""
            rows.extend(_model_rows(inner, f"{key}{suffix}."))
            continue
        default = (
            "required"
            if field.is_required()
            else f"`{field.get_default(call_default_factory=True)!r}`"
        )
        rows.append(
            f"| `{key}` | {_type_name(annotation)} | {default} | {field.description or ''} |"
        )
    return rows


def _model_inside(annotation: Any) -> Any:
    """The model in `list[Model]` or `Model | None`; else the annotation itself."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        return args[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
    return annotation


def config_reference() -> str:
    """A Markdown table of every digest.yaml key, its type, default and description."""
    head = ["| key | type | default | description |", "|---|---|---|---|"]
    return "\n".join(head + _model_rows(Config, ""))


def cli_reference(group: click.Group) -> str:
    """Every command's --help, in a Markdown section each."""
    out: list[str] = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        # Contexts chain to the group's, so settings such as `-h` for help are inherited
        # exactly as they are when the command runs.
        ctx = click.Context(
            command,
            parent=parent,
            info_name=path[-1],
            terminal_width=88,
            max_content_width=88,
            **(command.context_settings if parent is None else {}),
        )
        out.append(f"### `{' '.join(path)}`\n\n```\n{command.get_help(ctx).rstrip()}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.list_commands(ctx)):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*path, name], ctx)

    walk(group, ["digest"], None)
    return "\n".join(out)
