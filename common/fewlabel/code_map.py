"""Each bundle's "Where the code is" section: the modules of ``fewlabel`` its configs use.

A bundle's configs name shared code as ``fewlabel.<module>.<Name>`` in ``_target_`` values and in ``$``
expressions. :func:`code_map` imports each name, asks it for the module that defines it (a re-export in a
package ``__init__`` is followed to the defining module) and groups the names by that module's file, so a
newcomer reading a config knows which file to open. :func:`update_docs` writes that table into the
bundle's ``docs/README.md``; ``fewlabel code-map --check`` (run by ``make lint``) fails when a doc is stale.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from fewlabel.errors import FewLabelError

__all__ = ["SECTION_TITLE", "config_references", "code_map", "render_section", "update_docs"]

SECTION_TITLE = "## Where the code is"
_NOTE = "<!-- written by `fewlabel code-map` from the configs; edit the configs, then run it again -->"
_NAME = re.compile(r"\bfewlabel(?:\.[A-Za-z_]\w*)+")
_PACKAGE_ROOT = Path(__file__).resolve().parent


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def config_references(bundle_dir: str | Path) -> dict[str, set[str]]:
    """``{dotted name: {config file, ...}}`` for every ``fewlabel.`` name in the bundle's JSON configs.

    Config files are named relative to ``configs/`` (e.g. ``train.json``, ``variants/accurate.json``).
    """
    configs = Path(bundle_dir) / "configs"
    if not configs.is_dir():
        raise FewLabelError(f"{configs} is not a folder: pass a bundle folder (one that holds configs/)")
    found: dict[str, set[str]] = {}
    for path in sorted(configs.rglob("*.json")):
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise FewLabelError(f"{path} is not valid JSON ({err}); fix the file and run again") from err
        for text in _strings(content):
            for name in _NAME.findall(text):
                found.setdefault(name, set()).add(path.relative_to(configs).as_posix())
    return found


def _holder(obj: object, package: str, attr: str) -> object | None:
    """The deepest imported module under ``fewlabel`` holding ``obj`` as ``attr`` (for data such as dicts)."""
    holders = [m for n, m in list(sys.modules.items())
               if n.startswith("fewlabel.") and getattr(m, attr, None) is obj]
    return max(holders, key=lambda m: m.__name__.count("."), default=None)


def _defining_file(dotted: str) -> tuple[str, str] | None:
    """``(file relative to the repository's common/, short name)`` of the object ``dotted`` names, or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return None
            obj = getattr(obj, attr)
        module = inspect.getmodule(obj) or _holder(obj, parts[cut - 1], parts[-1])
        file = getattr(module, "__file__", None)
        if file is None or not Path(file).resolve().is_relative_to(_PACKAGE_ROOT):
            return None
        rel = Path(file).resolve().relative_to(_PACKAGE_ROOT.parent).as_posix()
        return rel, (parts[cut] if cut < len(parts) else parts[-1])
    return None


def code_map(bundle_dir: str | Path) -> dict[str, dict[str, set[str]]]:
    """``{defining file: {"names": {...}, "configs": {...}}}`` for the bundle's configs, files sorted.

    Raises:
        FewLabelError: a config names a ``fewlabel`` object that does not exist (a stale path after a move).
    """
    table: dict[str, dict[str, set[str]]] = {}
    missing = []
    for dotted, configs in sorted(config_references(bundle_dir).items()):
        where = _defining_file(dotted)
        if where is None:
            missing.append(f"{dotted} (in {', '.join(sorted(configs))})")
            continue
        entry = table.setdefault(where[0], {"names": set(), "configs": set()})
        entry["names"].add(where[1])
        entry["configs"] |= configs
    if missing:
        raise FewLabelError(
            f"configs of {bundle_dir} name objects that do not exist: {'; '.join(missing)}. "
            "Correct the dotted paths in those configs."
        )
    return dict(sorted(table.items()))


def render_section(bundle_dir: str | Path) -> str:
    """The markdown section (title, note, table), ending with one newline."""
    lines = [
        SECTION_TITLE,
        _NOTE,
        "",
        "The shared package lives in `common/fewlabel/`; this bundle's configs use these modules of it:",
        "",
        "| module | names | used in |",
        "|---|---|---|",
    ]
    for file, entry in code_map(bundle_dir).items():
        names = ", ".join(f"`{n}`" for n in sorted(entry["names"]))
        configs = ", ".join(f"`{c}`" for c in sorted(entry["configs"]))
        lines.append(f"| `common/{file}` | {names} | {configs} |")
    return "\n".join(lines) + "\n"


def _replace_section(text: str, section: str) -> str:
    start = text.find("\n" + SECTION_TITLE + "\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    start += 1
    nxt = text.find("\n## ", start + len(SECTION_TITLE))
    rest = "" if nxt < 0 else "\n" + text[nxt + 1 :]
    return text[:start] + section + rest


def update_docs(bundle_dir: str | Path, check: bool = False) -> bool:
    """Write (or with ``check``, compare) the section in ``<bundle_dir>/docs/README.md``.

    Returns:
        True when the doc was already current; False when it was rewritten (or, with ``check``, is stale).
    """
    doc = Path(bundle_dir) / "docs" / "README.md"
    if not doc.is_file():
        raise FewLabelError(f"{doc} does not exist: every bundle has docs/README.md (DESIGN.md, bundle contract)")
    text = doc.read_text()
    new = _replace_section(text, render_section(bundle_dir))
    if new == text:
        return True
    if not check:
        doc.write_text(new)
    return False
