"""Finding a python handler in its module's source without running any of the user's code.

Importing a module runs it, and ``importlib.util.find_spec("a.b")`` imports the package ``a``
first. So this walks the import system's path hooks itself, one name part at a time, the way
``import`` searches (``sys.path``, then the extra folders the worker adds), reads the module's
source and looks for the name among its top-level statements. Decorators, star imports and a
module ``__getattr__`` can only be settled by importing: those come back with a doubt.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from typing import Any, Literal, NoReturn

Binding = Literal["def", "async def", "class", "assignment", "import", "unknown"]
_VALUES = (ast.Constant, ast.JoinedStr, ast.List, ast.Tuple, ast.Dict, ast.Set)


class HandlerNotFound(Exception):
    """The handler certainly does not exist as named; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class HandlerSource:
    """Where a handler is defined. It fills a spec's ``handler`` slot in a config checked without
    importing, which is never run: calling it is a programming error, not a user's."""

    name: str  # module:function
    file: str
    line: int
    binding: Binding
    doubt: str | None = None  # why the source alone cannot settle it

    @property
    def is_async(self) -> bool:
        return self.binding == "async def"

    def __call__(self, *_: Any) -> NoReturn:
        raise RuntimeError(
            f"handler {self.name} was checked from its source and never imported; "
            "load the config with import_handlers=True to run it"
        )


def find_handler(module: str, function: str, extra_path: Sequence[str]) -> HandlerSource:
    """Locate ``module:function`` by reading files only; raise ``HandlerNotFound``."""
    spec = _find_module(module, extra_path)
    if spec.loader is None or spec.origin is None:
        raise HandlerNotFound(
            f"{module!r} is a namespace package (a folder without __init__.py)",
            "name a module inside it, like package.module:function",
        )
    name, file = f"{module}:{function}", spec.origin
    try:
        source = _source(spec)
    except (ImportError, OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise HandlerNotFound(f"cannot read {file}: {exc}", "check the file") from exc
    if source is None:
        return HandlerSource(
            name,
            file,
            0,
            "unknown",
            f"{module!r} is compiled ({file}): its names cannot be read without importing it",
        )
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:
        raise HandlerNotFound(
            f"{file}:{exc.lineno}: syntax error in the handler module: {exc.msg}",
            "fix the module: the worker cannot import it",
        ) from exc
    return _binding(tree, name, function, file)


def _binding(tree: ast.Module, name: str, function: str, file: str) -> HandlerSource:
    found: HandlerSource | None = None
    star: int | None = None
    getattr_line: int | None = None
    for node in _top_level(tree.body):
        if isinstance(node, ast.AsyncFunctionDef) and node.name == function:
            found = HandlerSource(name, file, node.lineno, "async def")
        elif isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == function:
            kind: Binding = "def" if isinstance(node, ast.FunctionDef) else "class"
            found = HandlerSource(name, file, node.lineno, kind)
        elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            getattr_line = node.lineno
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(function in _names(t) for t in targets):
                if isinstance(node.value, _VALUES):
                    raise HandlerNotFound(
                        f"{function!r} in {file} (line {node.lineno}) is not a function",
                        f"make {function} a def or async def taking the event",
                    )
                found = HandlerSource(name, file, node.lineno, "assignment")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    star = node.lineno
                elif (alias.asname or alias.name.split(".")[0]) == function:
                    found = HandlerSource(name, file, node.lineno, "import")
    if found is not None:
        return found
    if star is not None or getattr_line is not None:
        how = "'from … import *'" if star is not None else "a module __getattr__"
        line = star or getattr_line or 0
        doubt = f"{file} has no top-level {function!r}; {how} at line {line} may provide it"
        return HandlerSource(name, file, line, "unknown", doubt)
    raise HandlerNotFound(
        f"{file} has no function {function!r}",
        f"define def {function}(event) or async def {function}(event) at the top level of {file}",
    )


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: the module body and the blocks of its if/try/with."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.With | ast.AsyncWith):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level(block)
            for handler in node.handlers:
                yield from _top_level(handler.body)


def _names(target: ast.expr) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return {n for element in target.elts for n in _names(element)}
    return set()


def _find_module(module: str, extra_path: Sequence[str]) -> ModuleSpec:
    parts = module.split(".")
    spec = _find_in(parts[0], [*sys.path, *extra_path]) or _meta_path_spec(parts[0])
    for depth in range(1, len(parts)):
        if spec is None:
            break
        if spec.submodule_search_locations is None:
            parent = ".".join(parts[:depth])
            raise HandlerNotFound(
                f"{parent!r} is a module, not a package, so it has no {module!r}",
                "check the handler's module path",
            )
        spec = _find_in(".".join(parts[: depth + 1]), list(spec.submodule_search_locations))
    if spec is None:
        raise HandlerNotFound(
            f"cannot find module {module!r} on the Python path or next to the config",
            "put the module on PYTHONPATH or next to observers.yaml",
        )
    return spec


def _find_in(fullname: str, entries: Sequence[str]) -> ModuleSpec | None:
    """``PathFinder``'s search over ``entries``, without the parent lookups it makes in
    ``sys.modules`` for namespace packages (the parents were never imported)."""
    portions: list[str] = []
    for entry in entries:
        find_spec = getattr(_path_finder(entry or os.getcwd()), "find_spec", None)
        spec: ModuleSpec | None = find_spec(fullname) if find_spec is not None else None
        if spec is None:
            continue
        if spec.loader is not None:
            return spec
        portions.extend(spec.submodule_search_locations or [])
    if not portions:
        return None
    namespace = ModuleSpec(fullname, None, is_package=True)
    namespace.submodule_search_locations = portions
    return namespace


def _path_finder(entry: str) -> Any:
    for hook in sys.path_hooks:
        try:
            return hook(entry)
        except ImportError:
            continue
    return None


def _meta_path_spec(name: str) -> ModuleSpec | None:
    """Builtins, frozen modules and editable installs: finders that ``sys.path`` does not list.
    For a top-level name ``find_spec`` imports nothing."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _source(spec: ModuleSpec) -> str | None:
    get_source = getattr(spec.loader, "get_source", None)
    if get_source is None:
        return None
    source: str | None = get_source(spec.name)
    return source
