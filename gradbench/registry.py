"""One registry mechanism for tasks and models.

Names may carry a numeric suffix that the factory receives as a keyword (``resnet-56``
-> ``resnet(depth=56)``), so families of depths need one registration, as in timm.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradbench.errors import UsageError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    # For a family such as "resnet-{depth}": the keyword the numeric suffix fills.
    suffix_param: str | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._names: dict[str, str] = {}  # name or alias -> canonical name
        # (canonical name, input kind) -> factory: what the same name builds for tasks of
        # another input kind (``lstm`` on a translation task is an LSTM encoder-decoder).
        self._variants: dict[tuple[str, str], Callable[..., Any]] = {}

    def register(
        self,
        name: str,
        *,
        aliases: tuple[str, ...] | list[str] = (),
        suffix_param: str | None = None,
        description: str = "",
        tags: tuple[str, ...] | list[str] = (),
        **defaults: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register ``factory`` under ``name`` and ``aliases``; duplicates raise."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(
                Entry(
                    name,
                    factory,
                    tuple(aliases),
                    suffix_param,
                    description or (factory.__doc__ or "").strip().split("\n")[0],
                    tuple(tags),
                    dict(defaults),
                )
            )
            return factory

        return decorate

    def add(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            if key in self._names:
                raise ValueError(
                    f"{self.kind} name {key!r} is already registered (by {self._names[key]!r})"
                )
        self._entries[entry.name] = entry
        for key in (entry.name, *entry.aliases):
            self._names[key] = entry.name

    def register_variant(
        self, name: str, *, kind: str
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``factory`` builds the registered ``name`` for tasks whose input is
        ``kind``, so one name means one cell on every task (as the ``lstm`` row of a
        classification table and of a translation table). Register ``name`` first."""

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name not in self._entries:
                raise ValueError(f"register {self.kind} {name!r} before a variant of it")
            if (name, kind) in self._variants:
                raise ValueError(f"{self.kind} {name!r} already has a variant for {kind!r}")
            self._variants[(name, kind)] = factory
            return factory

        return decorate

    def factory_for(self, name: str, kind: str | None = None) -> Callable[..., Any]:
        """The factory that builds ``name`` (any spelling) for input ``kind``; the entry's
        own factory where no variant is registered for that kind."""
        entry = self.resolve(name)[0]
        if kind is None:
            return entry.factory
        return self._variants.get((entry.name, kind), entry.factory)

    def variants(self, name: str) -> dict[str, Callable[..., Any]]:
        """Input kind -> factory, for the kinds that have a variant of ``name``."""
        entry = self.resolve(name)[0]
        return {k: f for (n, k), f in self._variants.items() if n == entry.name}

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except UsageError:
            return False
        return True

    def resolve(self, name: str) -> tuple[Entry, dict[str, Any]]:
        """Canonical entry and the keywords a suffixed name implies; unknown names raise."""
        if name in self._names:
            entry = self._entries[self._names[name]]
            return entry, dict(entry.defaults)
        match = re.fullmatch(r"(.+?)-(\d+)", name)
        if match and match.group(1) in self._names:
            entry = self._entries[self._names[match.group(1)]]
            if entry.suffix_param:
                return entry, {**entry.defaults, entry.suffix_param: int(match.group(2))}
        raise UsageError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        candidates = sorted(self._names)
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        # A misspelt family member ("resnt-20") is compared without its suffix and
        # answered with the suffix kept ("resnet-20"), so the hint can be pasted back.
        match = re.fullmatch(r"(.+?)-(\d+)", name)
        if match:
            families = [k for k in candidates if self._entries[self._names[k]].suffix_param]
            close = [
                f"{k}-{match.group(2)}"
                for k in difflib.get_close_matches(match.group(1), families, n=3, cutoff=0.5)
            ] + [c for c in close if c not in families]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (see `gradbench list {self.kind}s`)"

    def canonical(self, name: str) -> str:
        """The name under which ``name`` is registered, suffix kept: an alias is not a new
        task (``fashion-mnist`` -> ``image``), a family member is (``resnet-56``)."""
        entry, implied = self.resolve(name)
        if entry.suffix_param and entry.suffix_param in implied and name not in self._names:
            return f"{entry.name}-{implied[entry.suffix_param]}"
        return entry.name

    def create(self, name: str, **options: Any) -> Any:
        entry, implied = self.resolve(name)
        return entry.factory(**{**implied, **options})

    def entry(self, name: str) -> Entry:
        return self.resolve(name)[0]

    def list(self, pattern: str = "*") -> list[str]:
        """Canonical names (aliases match too) that fit a glob pattern, sorted.

        A family also matches as ``name-{suffix}`` (``resnet-{depth}``), so ``resnet-*``
        finds the family its members are built from.
        """
        hits = set()
        for key, canonical in self._names.items():
            suffix = self._entries[canonical].suffix_param
            forms = (key, f"{key}-{{{suffix}}}") if suffix else (key,)
            if any(fnmatch.fnmatchcase(form, pattern) for form in forms):
                hits.add(canonical)
        return sorted(hits)

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[n] for n in self.list(pattern)]


TASKS = Registry("task")
MODELS = Registry("model")
