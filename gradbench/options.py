"""Typing ``-O key=value`` options from the factory's own signature, before any data is read.

A task factory's keyword-only parameters are its options; their annotations say what a
value must be (``int``, ``bool``, ``float | None``, ``Literal["word", "char"]``) and,
with ``annotated_types`` constraints, its range (``Count`` is an ``int >= 1``). The
command-line text is validated against that annotation with pydantic, so
``train_size=10.5``, ``pixels=maybe``, ``train_limit=abc`` and ``lr=nan`` are one-line
errors naming the option, not a value a factory later misreads.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

from annotated_types import Ge

from gradbench.errors import UsageError

# Constraint aliases for factory signatures (``*, train_size: Count = 20_000``).
Count = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]


def keyword_options(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The factory's keyword-only parameters: its ``-O`` options."""
    params = inspect.signature(factory).parameters
    return {k: p for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def takes_any_option(factory: Callable[..., Any]) -> bool:
    params = inspect.signature(factory).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def option_annotations(factory: Callable[..., Any]) -> dict[str, Any]:
    """Each option's annotation resolved (constraints kept), one by one: an unresolvable
    one elsewhere in the signature (a return type imported only for type checkers) must
    not cost the others their types. An option whose annotation cannot be resolved is
    left out, and is typed from its default."""
    target = inspect.unwrap(factory)
    namespace = getattr(target, "__globals__", {})  # the names the plugin's file defines
    resolved: dict[str, Any] = {}
    for key, param in keyword_options(factory).items():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):  # from __future__ import annotations
            try:
                # What typing.get_type_hints does for each name, without its all-or-nothing.
                annotation = eval(annotation, namespace)  # noqa: S307 (the plugin's own source)
            except Exception:
                continue
        resolved[key] = annotation
    return resolved


def describe_options(factory: Callable[..., Any]) -> list[tuple[str, str, Any]]:
    """(name, type as text, default) of each option, for ``list tasks --verbose``."""
    hints = option_annotations(factory)
    rows = []
    for key, param in keyword_options(factory).items():
        annotation = hints.get(key, param.annotation)
        rows.append((key, _type_text(annotation), param.default))
    return rows


def _type_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        limits = [_limit_text(e) for e in extras]
        return f"{_type_text(base)} ({', '.join(limits)})" if limits else _type_text(base)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _limit_text(constraint: Any) -> str:
    """``Ge(ge=1)`` -> ">= 1"; other constraints as their repr."""
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for attr, symbol in symbols.items():
        if hasattr(constraint, attr):
            return f"{symbol} {getattr(constraint, attr)}"
    return repr(constraint)


@functools.cache
def _adapter(annotation: Any):
    from pydantic import ConfigDict, TypeAdapter

    # Finite numbers only: an option of inf or nan is a typo, never a setting.
    return TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False))


def coerce_value(owner: str, key: str, value: Any, annotation: Any, default: Any) -> Any:
    """``value`` (text from the command line, or already typed) as ``annotation`` says."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        if default is inspect.Parameter.empty or default is None:
            return value
        annotation = type(default)
    if isinstance(value, str) and value.strip().lower() == "none" and _allows_none(annotation):
        return None
    from pydantic import ValidationError

    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as error:
        problem = error.errors()[0]["msg"]
        raise UsageError(
            f"{owner}: option {key}={value!r}: {problem[0].lower()}{problem[1:]}"
        ) from None
    except TypeError:  # an annotation pydantic cannot build a validator for
        return value


def _allows_none(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation is None or type(None) in typing.get_args(annotation)


def coerce_options(owner: str, factory: Callable[..., Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Every ``raw`` option checked to exist and typed; unknown keys name what is taken."""
    known = keyword_options(factory)
    hints = option_annotations(factory)
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            if takes_any_option(factory):
                typed[key] = value
                continue
            takes = ", ".join(known) or "no options"
            raise UsageError(f"{owner} has no option {key!r}; it takes {takes}")
        param = known[key]
        annotation = hints.get(key, inspect.Parameter.empty)
        typed[key] = coerce_value(owner, key, value, annotation, param.default)
    return typed
