"""Reading topology YAML: strict parsing, `--set key=value` overrides and `path:line` locations of fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from testbed.errors import SpecError

M = TypeVar("M", bound=BaseModel)


def read_yaml(
    path: Path, what: str = "topology file", example: str = "name, nodes, links, ..."
) -> tuple[dict[str, Any], yaml.Node | None]:
    """The document as data and as a node tree (for line numbers)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(str(path), f"cannot read {what}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise SpecError(
            f"{path}:{line}", f"not a text file: a {what} is UTF-8 YAML (byte {e.start} is not UTF-8; binary file?)"
        ) from None
    try:
        node, data = _parse(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(where, f"invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}:1", f"a {what} must be a YAML mapping ({example})")
    return data, node


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: ~10x faster


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """One parse: the node tree (for line numbers) and the data constructed from it."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest existing element of `loc` in the composed YAML tree."""
    line = None
    cur = node
    for key in loc:
        if cur is None:
            break
        nxt = None
        if isinstance(cur, yaml.MappingNode):
            for k, v in cur.value:
                if k.value == str(key):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(cur, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(cur.value):
            nxt = cur.value[key]
            line = nxt.start_mark.line + 1
        cur = nxt
    if line is None and node is not None:
        return node.start_mark.line + 1
    return line


def locator(tree: yaml.Node | None, path: Path) -> Callable[[tuple[Any, ...]], str]:
    """loc -> 'path:line' of that field in the file (just 'path' when it cannot be found)."""

    def where(loc: tuple[Any, ...]) -> str:
        line = line_of(tree, loc)
        return f"{path}:{line}" if line else str(path)

    return where


def validate(model: type[M], data: dict[str, Any], where: Callable[[tuple[Any, ...]], str], schema: str) -> M:
    """model.model_validate(data); its first error as a SpecError at the field's line (`schema`: where the
    fields are documented, named for unknown keys)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        # a union reports the branch it tried ("list[str]", "literal[...]"): keep the parts that are in the file
        loc = tuple(
            x
            for x in err["loc"]
            if not (
                isinstance(x, str)
                and (x.startswith(("list[", "dict[", "literal[")) or x in ("str", "int", "float", "bool"))
            )
        )
        msg = f"unknown key (not part of the schema; see {schema})" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        raise SpecError(where(loc), f"{format_loc(loc)}: {msg}") from None


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply 'a.b.c=value' overrides (value parsed as YAML; list items by index: nodes.0.profile=x)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError(source, f"{item!r}: expected key=value, e.g. policy.window=static:4")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        cur: Any = data
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(cur, list):
                if not p.isdigit() or int(p) >= len(cur):
                    raise SpecError(
                        source,
                        f"{key}: {'.'.join(parts[:i]) or 'top level'} is a list; '{p}' is not an index below "
                        f"{len(cur)}",
                    )
                if last:
                    cur[int(p)] = value
                else:
                    cur = cur[int(p)]
            elif isinstance(cur, dict):
                if last:
                    cur[p] = value
                else:
                    if cur.get(p) is None:
                        cur[p] = {}
                    cur = cur[p]
            else:
                raise SpecError(source, f"{key}: '{'.'.join(parts[:i])}' is a value, not a section")
    return data
