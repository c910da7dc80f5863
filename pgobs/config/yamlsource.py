"""YAML to plain Python values, remembering the line of every path for error messages."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pgobs.config.report import Issues, Path


def load_yaml(text: str, issues: Issues) -> Any:
    """Parse ``text``; syntax errors and duplicate keys are recorded in ``issues``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        issues.lines[("__yaml__",)] = line
        issues.error(
            ("__yaml__",), f"YAML syntax: {exc.problem or exc}", "fix the YAML at that line"
        )
        return None
    except yaml.YAMLError as exc:
        issues.error((), f"YAML: {exc}", "fix the YAML")
        return None
    if root is None:
        return None
    return _build(root, (), issues, SafeConstructor())


def _build(node: Node, path: Path, issues: Issues, constructor: SafeConstructor) -> Any:
    issues.lines[path] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                key = str(key)
            child = (*path, key)
            if key in out:
                issues.lines[child] = key_node.start_mark.line + 1
                issues.error(
                    child, f"duplicate key {key!r}", "YAML keeps only the last; remove one"
                )
            out[key] = _build(value_node, child, issues, constructor)
            issues.lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, SequenceNode):
        return [_build(item, (*path, i), issues, constructor) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    return constructor.construct_object(node)
