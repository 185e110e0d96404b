"""Reading the files a user names (a config JSON, a space YAML): one clear error per way they can be wrong.

A folder, binary data or a key given twice in one mapping (which JSON and YAML loaders silently
resolve by keeping the last one) is refused with the file, what was expected and, for a repeated
key, both lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["read_text", "repeated_key", "loads_json"]


def read_text(path: Union[str, Path], expected: str) -> str:
    """The UTF-8 text of ``path``; FileNotFoundError/ValueError naming the file and ``expected`` (``a config JSON
    file``) when it is missing, a folder or not text."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected {expected}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a text file (byte {e.start} is binary data, not UTF-8): expected "
                         f"{expected}") from None


def repeated_key(text: str) -> Optional[tuple[str, int, int]]:
    """The first key given twice inside one mapping of a YAML or JSON text: (dotted path, its first line, the
    repeated line; 1-based), or None. The text must parse as YAML (JSON does, but for tab indentation)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    found: list[tuple[int, str, int]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key, line = str(k.value), k.start_mark.line + 1
                if key in seen:
                    found.append((line, where + key, seen[key]))
                seen.setdefault(key, line)
                walk(v, f"{where}{key}.")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{where}[{i}].")

    walk(root, "")
    if not found:
        return None
    line, key, first = min(found)
    return key, first, line


def _repeated_json_key(text: str) -> Optional[str]:
    """A key given twice inside one JSON object (what ``json.loads`` would silently drop), or None."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        repeated.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return repeated[0] if repeated else None


def loads_json(text: str) -> Any:
    """``json.loads``, refusing a key given twice in one object (ValueError with the key and its lines)."""
    data = json.loads(text)
    key = _repeated_json_key(text)
    if key is None:
        return data
    where = repeated_key(text)
    if where is not None:
        raise ValueError(f"key {where[0]!r} is given twice (lines {where[1]} and {where[2]}); JSON keeps only the "
                         f"last one: remove one")
    lines = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
    at = f" (lines {', '.join(map(str, lines))})" if len(lines) > 1 else ""
    raise ValueError(f"key {key!r} is given twice{at}; JSON keeps only the last one: remove one")
