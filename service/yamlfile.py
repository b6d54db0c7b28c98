"""YAML files checked against pydantic models, every problem named by file, line and
field (``rules.yaml:5: rules[0].window_s: Input should be ...``).

The alert rules (``service.alerts.rules``) and the forwarding subscriptions
(``service.forward.config``) are read this way, so a mistake is reported at start-up
and by their ``check-`` commands in one pass, never half-loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class YamlFileError(ValueError):
    """A file that cannot be used; the message names file, line and field."""


def read(path: Path, what: str) -> str:
    """The file's text, or YamlFileError naming it (``what``: "rules", ...)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlFileError(f"{path}: cannot read the {what} file: {exc}") from None


def parse(text: str, origin: str) -> tuple[Any, yaml.Node | None]:
    """The data and its node tree (for line numbers), or YamlFileError."""
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise YamlFileError(f"{origin}{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{origin}: not valid YAML: {exc}") from None
    return data, tree


def describe(
    exc: ValidationError,
    tree: yaml.Node | None,
    origin: str,
    is_field: Callable[[str], bool],
) -> list[str]:
    """Each problem as ``file:line: rules[2].window_s: message``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc, line = locate(tree, error["loc"], is_field)
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{origin}:{line}: {where.lstrip('.') or '(top)'}: {message}")
    return lines


def locate(
    tree: yaml.Node | None,
    loc: tuple[int | str, ...],
    is_field: Callable[[str], bool] = lambda part: True,
) -> tuple[list[int | str], int]:
    """The part of ``loc`` that names places in the file, and the line of the last.

    Pydantic puts a discriminator's value (``bounce_rate``) and validator names into
    ``loc``; those name no node, so they are skipped.
    """
    node = tree
    path: list[int | str] = []
    line = node.start_mark.line + 1 if node is not None else 1
    for position, part in enumerate(loc):
        # The tag comes right after an item's index (a field may share its name).
        after_index = position > 0 and isinstance(loc[position - 1], int)
        if after_index and isinstance(part, str) and part == _kind_of(node):
            continue
        child = _child(node, part)
        if child is None:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str) and is_field(part):
                path.append(part)  # a missing field: point at its mapping
            continue
        node = child
        path.append(part)
        line = child.start_mark.line + 1
    return path, line


def _child(node: yaml.Node | None, part: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        return node.value[part] if 0 <= part < len(node.value) else None
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if key.value == part:
                return value
    return None


def _kind_of(node: yaml.Node | None) -> str | None:
    kind = _child(node, "kind")
    return kind.value if isinstance(kind, yaml.ScalarNode) else None
