"""Build a registered model from a name and options, with validation and initialisation.

A model argument is ``NAME`` or ``NAME:key=value,key=value`` (``rnn:init=orthogonal``), so
one command can compare mitigations of the same architecture. Options given for every
model (``--activation``) apply to the models whose factory takes them; options given to
one model must exist for it.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gradbench.errors import UsageError
from gradbench.mitigations import init_weights, parse_init, settle_norm
from gradbench.registry import MODELS
from gradbench.task import InputSpec

# Applied by build_model itself rather than by the factory.
GENERIC_OPTIONS = {"init": "default"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))


def model_options(name: str, kind: str | None = None) -> dict[str, Any]:
    """The options a model takes, with their defaults (the name's suffix applied).

    ``kind`` is the task's input kind: a name may be built by another factory for it
    (``MODELS.register_variant``), with options of its own. Without a kind: the name's
    own factory, the one ``build_model`` uses for every kind that has no variant.
    """
    return _options_of(name, [MODELS.factory_for(name, kind)])


def any_kind_options(name: str) -> dict[str, Any]:
    """The options of the name's own factory and of every variant: what a model argument
    may carry before the task is known (``resolve_options`` checks it again for the
    task's kind once it is)."""
    return _options_of(name, [MODELS.factory_for(name), *MODELS.variants(name).values()])


def _options_of(name: str, factories: list[Any]) -> dict[str, Any]:
    _, implied = MODELS.resolve(name)
    options: dict[str, Any] = {}
    for factory in factories:
        for key, param in inspect.signature(factory).parameters.items():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                options.setdefault(key, param.default)
    options.update(implied)
    options.update(GENERIC_OPTIONS)
    return options


def convert(model: str, key: str, value: Any, default: Any) -> Any:
    """Coerce a command-line string to the type of the option's default.

    An option whose default is None (``dropout: float | None = None``) has no type to
    copy; its string is read as a number when it looks like one, as "none" -> None.
    """
    if isinstance(value, str) and default is None:
        return _literal(value)
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            number = float(value)
            if not math.isfinite(number):  # dropout=nan is a typo, not a setting
                raise ValueError(value)
            return number
    except ValueError:
        wanted = {bool: "true or false", int: "an integer", float: "a finite number"}[type(default)]
        raise UsageError(f"model {model}: option {key}={value!r} is not {wanted}") from None
    return value


def _literal(value: str) -> Any:
    if value.lower() == "none":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_model_arg(text: str) -> ModelSpec:
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"model argument {text!r} has no name")
    MODELS.resolve(name)  # unknown names fail here, with "did you mean"
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"model {name}: option {item!r} must be written key=value")
        options[key.strip().replace("-", "_")] = value.strip()
    known = any_kind_options(name)
    entry, implied = MODELS.resolve(name)
    for key in options:
        # "plain-8:depth=14" would build a plain-14 labelled plain-8.
        if key in implied and key == entry.suffix_param:
            raise UsageError(f"model {name}: {key} is set by the name; write {entry.name}-N")
        if key not in known:
            raise UsageError(
                f"model {name} has no option {key!r}; it takes {', '.join(sorted(known))}"
            )
        options[key] = convert(name, key, options[key], known[key])
    return ModelSpec(name, options)


def resolve_options(
    spec: ModelSpec, shared: dict[str, Any], kind: str | None = None
) -> dict[str, Any]:
    """Every option the model will be built with: defaults < shared options < its own.

    ``kind``: the task's input kind, which picks the factory (see ``model_options``);
    without one, the name's own factory (the one ``build_model`` uses for the kinds
    that have no variant).
    """
    known = model_options(spec.name, kind)
    # Before the task is known, an option of any variant (``lstm:encoder=resnet-8`` for a
    # video task) is allowed: ``prepare_models`` checks it again for the task's kind.
    allowed = known if kind is not None else any_kind_options(spec.name)
    foreign = [key for key in spec.options if key not in allowed]
    if foreign:
        raise UsageError(
            f"model {spec.name} has no option {foreign[0]!r} on a task whose input is {kind}; "
            f"there it takes {', '.join(sorted(known))}"
        )
    # What the user set (spec.options are converted already, by parse_model_arg).
    given = {
        key: convert(spec.name, key, value, known[key])
        for key, value in shared.items()
        if value is not None and key in known
    } | spec.options
    resolved = known | given
    parse_init(resolved["init"])
    settle_norm(resolved, given)
    return resolved


def build_model(name: str, input_spec: InputSpec, options: dict[str, Any]) -> nn.Module:
    """Construct and initialise the model; ``options`` as from ``resolve_options``."""
    factory_options = {k: v for k, v in options.items() if k not in GENERIC_OPTIONS}
    _, implied = MODELS.resolve(name)
    factory = MODELS.factory_for(name, input_spec.kind)
    try:
        model = factory(input_spec, **{**implied, **factory_options})
    except (ValueError, RuntimeError) as error:
        # torch's own complaint about an impossible size (width=0, say), as one line.
        shown = ", ".join(f"{k}={v}" for k, v in sorted(factory_options.items()))
        raise UsageError(f"model {name} cannot be built with {shown}: {error}") from None
    init_weights(model, options.get("init", "default"), options.get("activation"))
    return model
