"""The one YAML reader of the project (data, hyp, model, opt files): safe types only, and aliases
bounded, so a "billion laughs" file (nine aliases of nine aliases ...) is refused in milliseconds
instead of expanding to gigabytes when a list is printed or copied.
"""
from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from utils.core.errors import UserError

# A document may repeat at most this many values through aliases (counting every alias as the size of
# what it expands to); real config files use a few anchors at most.
MAX_ALIAS_VALUES = 10_000


class YamlFileError(UserError):
    """A YAML file that cannot be read; the message is one line that starts with the file's name."""


class _Refused(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts the values aliases stand for and, when asked, refuses a key given twice."""

    key_word: str | None = None  # set: a key given twice is refused, named "<key_word> 'x'"

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_alias_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if self.key_word:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if not isinstance(key, Hashable):  # a list as a key: SafeLoader's own error names the line
                    break
                if key in seen:
                    raise _Refused(f"{self.key_word} '{key}' is given twice (lines {seen[key]} and {line}); keep one")
                seen[key] = line
        return super().construct_mapping(node, deep)


def _check_alias_expansion(root: yaml.Node | None) -> None:
    """Refuse a document whose aliases stand for more than MAX_ALIAS_VALUES values (or refer to
    themselves); each node is sized once, so the check is linear in the file, not in its expansion."""
    sizes: dict[int, int] = {}
    aliased = 0

    def size(node: yaml.Node) -> int:
        nonlocal aliased
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:
                raise _Refused("an alias refers to the value that contains it")
            aliased += sizes[key]
            if aliased > MAX_ALIAS_VALUES:
                raise _Refused(f"aliases repeat more than {MAX_ALIAS_VALUES} values (an alias bomb?); "
                               "write the values out")
            return sizes[key]
        sizes[key] = -1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        sizes[key] = 1 + sum(size(c) for c in children)
        return sizes[key]

    if root is not None:
        size(root)


def load_yaml(path: str | Path, *, unique_keys: str | None = None) -> Any:
    """The content of the YAML file ``path`` (None when empty). ``unique_keys`` (the word for a key in
    messages, e.g. "hyp key") refuses a mapping that gives a key twice, which plain YAML would keep
    silently as the last. Raises YamlFileError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise YamlFileError(f"{path}: cannot be read ({e})") from None
    try:
        loader = _BoundedLoader(text)
        loader.key_word = unique_keys
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as e:
        raise YamlFileError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise YamlFileError(f"{path}: not valid YAML{line} ({problem})") from None
    except RecursionError:
        raise YamlFileError(f"{path}: nested too deeply to be a config file") from None
