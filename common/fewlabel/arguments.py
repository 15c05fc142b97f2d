"""Command-line values as users type them: booleans, ``None``, lists, and override keys.

``fire`` (behind ``fewlabel`` and ``python -m monai.bundle``) reads ``--x False`` as ``False`` but
``--x false`` as the string ``"false"`` (which Python takes as true), ``--x None`` as ``None`` but
``--x null`` as the string ``"null"``, ``--x 0,1,2`` as a tuple and ``--x 3`` as an int. The functions
here give every spelling the one meaning a user expects and fail with a message that names the option
and the accepted spellings. Bundle configs call :func:`as_bool` / :func:`as_optional` (re-exported by
:mod:`fewlabel.bundle`) where a component receives a value; ``fewlabel`` commands check and convert
their own arguments and the config overrides they pass on (:func:`check_overrides`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from fewlabel.errors import FewLabelError

__all__ = [
    "FALSE_SPELLINGS", "NONE_SPELLINGS", "TRUE_SPELLINGS", "ArgumentError", "as_bool", "as_int", "as_list",
    "as_optional", "as_optional_bool", "check_overrides", "cli_command", "closest", "coerce_kwargs", "config_ids",
]

T = TypeVar("T")

TRUE_SPELLINGS = ("true", "yes", "1")
FALSE_SPELLINGS = ("false", "no", "0")
NONE_SPELLINGS = ("none", "null")
_BOOL_HELP = "True/False (also true/false, yes/no, 1/0)"


class ArgumentError(FewLabelError, ValueError):
    """A command-line value or key that cannot be used; the message names the option and the fix."""


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_SPELLINGS)


def as_bool(value: Any, key: str = "value") -> bool:
    """``value`` as a boolean: ``True``/``False``, ``1``/``0`` or the strings ``true``/``false``, ``yes``/``no``,
    ``1``/``0`` (any case).

    Raises:
        ArgumentError: anything else (``None`` too); the message names ``key`` and the accepted spellings.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in TRUE_SPELLINGS:
            return True
        if low in FALSE_SPELLINGS:
            return False
    raise ArgumentError(f"{key}: expected a boolean, {_BOOL_HELP}; got {value!r}")


def as_optional(value: Any, key: str = "value", convert: Callable[[Any, str], Any] | None = None) -> Any:
    """``None`` for ``None`` or the strings ``none``/``null`` (any case); else ``value``, or ``convert(value, key)``.

    ``convert`` is e.g. :func:`as_bool` or :func:`as_int`, so ``as_optional(v, "max_frames", as_int)``
    accepts ``100``, ``"100"``, ``None`` and ``"null"``.
    """
    if _is_none(value):
        return None
    return convert(value, key) if convert is not None else value


def as_optional_bool(value: Any, key: str = "value") -> bool | None:
    """:func:`as_bool` that also accepts ``None`` / ``none`` / ``null``."""
    return as_optional(value, key, as_bool)


def as_int(value: Any, key: str = "value") -> int:
    """``value`` as an integer: an int, an integral float, or a string of one (``"3"``); not a boolean."""
    if isinstance(value, bool):
        raise ArgumentError(f"{key}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ArgumentError(f"{key}: expected an integer, got {value!r}")


def _split(text: str) -> list[str]:
    text = text.strip()
    if len(text) >= 2 and text[0] + text[-1] in ("[]", "()"):
        text = text[1:-1]
    return [p.strip().strip("'\"") for p in text.split(",") if p.strip()]


def as_list(value: Any, key: str = "value", item: Callable[[Any, str], T] | None = None,
            allow_empty: bool = False) -> list[T]:
    """A list from any way a list is typed on the command line.

    Accepts a comma-separated string (``"0,1,2"``), one written with brackets (``"[0,1,2]"``), a tuple
    or list (what fire makes of ``0,1,2`` and ``[0,1,2]``) and a single value (``3``, ``"3"``). Each item
    goes through ``item(value, key)`` (e.g. :func:`as_int`); by default it is kept as a stripped string.

    Raises:
        ArgumentError: an item ``item`` refuses, or no item at all (unless ``allow_empty``); the message
            names ``key`` and the item.
    """
    if isinstance(value, str):
        raw: list[Any] = _split(value)
    elif isinstance(value, (list, tuple)):
        raw = [p for v in value for p in (_split(v) if isinstance(v, str) else [v])]
    elif value is None:
        raw = []
    else:
        raw = [value]
    if not raw and not allow_empty:
        raise ArgumentError(f"{key}: expected a list such as 0,1,2 or [0,1,2], got {value!r}")
    convert = item or (lambda v, k: str(v).strip())
    out = []
    for v in raw:
        try:
            out.append(convert(v, key))
        except ArgumentError as e:
            raise ArgumentError(f"{e}, an item of {value!r}") from None
    return out


def closest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to ``name``, or an empty string."""
    candidates = list(candidates)
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not match:  # a '#' path: compare its last part (``--skeletn`` for ``postprocess#skeleton``)
        tails = {c.rsplit("#", 1)[-1]: c for c in candidates}
        match = [tails[m] for m in difflib.get_close_matches(name.rsplit("#", 1)[-1], list(tails), n=1, cutoff=0.6)]
    return f" (did you mean '{match[0]}'?)" if match else ""


def config_ids(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every id of a parsed config (``key``, ``key#sub``, ``key#0#sub``) mapped to its value."""
    out: dict[str, Any] = {}
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for k, v in items:
        cid = f"{prefix}#{k}" if prefix else str(k)
        out[cid] = v
        out.update(config_ids(v, cid))
    return out


def check_overrides(overrides: Mapping[str, Any], ids: Mapping[str, Any], where: str,
                    own: Iterable[str] = (), reserved: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check config overrides given to a ``fewlabel`` command and convert their values, before any work starts.

    Args:
        overrides: ``{config id: value}`` as typed (``--epochs 50``, ``--postprocess#skeleton false``).
        ids: every id of the merged configs the command loads (:func:`config_ids`) with its value there. An
            id under one holding an empty mapping (``demo_kwargs: {}``, a bag of keyword arguments) is accepted.
        where: what loads them (named in the message, e.g. ``"medsass_binary_segmentation (train.json, ...)"``).
        own: the command's own options (suggested too when closest).
        reserved: ids the command sets itself, each with the reason (given ones are refused).

    Returns:
        The overrides, where the configs hold a boolean converted by :func:`as_bool` and where they hold
        ``None`` mapped through ``none``/``null`` to ``None``.

    Raises:
        ArgumentError: a key the configs do not have (naming the closest one), a reserved key, or a bad value.
    """
    out = {}
    for key, value in overrides.items():
        if reserved and key in reserved:
            raise ArgumentError(f"--{key} cannot be given here: {reserved[key]}")
        parent = key.rpartition("#")[0]
        if key not in ids and not (parent in ids and ids[parent] == {}):  # an empty mapping takes new keys
            raise ArgumentError(
                f"unknown option --{key}{closest(key, [*own, *ids])}: it is neither an option of the command nor a "
                f"config id of {where}. Config ids nest with '#', e.g. --train#trainer#max_epochs.")
        default = ids.get(key)
        if isinstance(default, bool):
            value = as_bool(value, key)
        elif default is None and key in ids and _is_none(value):
            value = None
        out[key] = value
    return out


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that does not resolve: no conversion, only the name check
        return {}


def _converter(hint: Any) -> Callable[[Any, str], Any] | None:
    """How to convert a command-line value for a parameter annotated ``hint`` (``None``: keep it)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)] if args else [hint]
    if hint is bool or (optional and inner == [bool]):
        return as_optional_bool if optional else as_bool
    if optional:
        return as_optional
    return None


def coerce_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check ``kwargs`` against ``fn``'s parameters and convert booleans and ``None`` by its annotations.

    Raises:
        ArgumentError: a name ``fn`` does not take (naming the closest) or a bad boolean.
    """
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = _hints(fn)
    out = {}
    for name, value in kwargs.items():
        if name not in params and not takes_any:
            known = [p for p in params if params[p].kind not in (params[p].VAR_POSITIONAL, params[p].VAR_KEYWORD)]
            raise ArgumentError(f"{where} has no option --{name}{closest(name, known)}; its options: "
                                f"{', '.join('--' + k for k in known)}")
        convert = _converter(hints.get(name)) if name in params else None
        out[name] = convert(value, name) if convert else value
    return out


def cli_command(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a ``fewlabel`` command: its boolean and optional arguments accept every spelling
    (``--force false``, ``--run_dir null``) and a bad one fails before the command starts."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        bound = sig.bind(*args, **kwargs)
        var_kw = [k for k, p in sig.parameters.items() if p.kind is p.VAR_KEYWORD]
        named = {k: v for k, v in bound.arguments.items() if k not in var_kw}
        extra = bound.arguments.get(var_kw[0], {}) if var_kw else {}
        named = coerce_kwargs(fn, named, f"fewlabel {fn.__name__.replace('_', '-')}")
        return fn(**named, **extra)

    return wrapper
