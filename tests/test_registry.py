"""One registry mechanism for tasks and models: names, aliases, families, globs, errors."""

from __future__ import annotations

import pytest

from gradbench.errors import UsageError
from gradbench.registry import MODELS, TASKS, Registry


@pytest.fixture
def widgets() -> Registry:
    registry = Registry("widget")

    @registry.register("gear", aliases=("cog",), tags=("round",))
    def gear(*, teeth: int = 12, size: float = 1.0) -> dict:
        """A gear with teeth.

        Longer text that is not the description.
        """
        return {"kind": "gear", "teeth": teeth, "size": size}

    @registry.register("chain", suffix_param="links", description="A chain of N links")
    def chain(*, links: int = 3, metal: str = "steel") -> dict:
        return {"kind": "chain", "links": links, "metal": metal}

    registry.register("lever")(lambda **kw: {"kind": "lever", **kw})
    return registry


def test_create_by_name_and_alias_passes_options(widgets: Registry) -> None:
    assert widgets.create("gear") == {"kind": "gear", "teeth": 12, "size": 1.0}
    assert widgets.create("cog", teeth=30) == {"kind": "gear", "teeth": 30, "size": 1.0}
    assert widgets.entry("cog").name == "gear"


def test_description_defaults_to_first_docstring_line(widgets: Registry) -> None:
    assert widgets.entry("gear").description == "A gear with teeth."
    assert widgets.entry("chain").description == "A chain of N links"


def test_numeric_suffix_fills_the_family_keyword(widgets: Registry) -> None:
    assert widgets.create("chain-56") == {"kind": "chain", "links": 56, "metal": "steel"}
    entry, implied = widgets.resolve("chain-7")
    assert entry.name == "chain" and implied == {"links": 7}
    # An explicit keyword wins over the suffix (create's documented precedence).
    assert widgets.create("chain-5", links=9)["links"] == 9


def test_suffix_on_a_name_without_a_family_is_unknown(widgets: Registry) -> None:
    with pytest.raises(UsageError, match="unknown widget 'gear-3'"):
        widgets.resolve("gear-3")


def test_duplicate_name_or_alias_raises_and_leaves_registry_unchanged(widgets: Registry) -> None:
    with pytest.raises(ValueError, match="'gear' is already registered"):
        widgets.register("gear")(lambda: None)
    with pytest.raises(ValueError, match="'cog' is already registered \\(by 'gear'\\)"):
        widgets.register("sprocket", aliases=("cog",))(lambda: None)
    # The failed registration must not have half-registered "sprocket".
    assert "sprocket" not in widgets
    assert widgets.list() == ["chain", "gear", "lever"]


def test_unknown_name_is_one_line_with_closest_names(widgets: Registry) -> None:
    with pytest.raises(UsageError) as caught:
        widgets.resolve("gaer")
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown widget 'gaer'" in message
    assert "did you mean gear" in message
    assert "gradbench list widgets" in message


def test_unknown_family_member_suggests_the_family_with_its_suffix(widgets: Registry) -> None:
    with pytest.raises(UsageError, match="did you mean chain-20"):
        widgets.resolve("chian-20")


def test_nothing_close_gives_no_hint(widgets: Registry) -> None:
    with pytest.raises(UsageError) as caught:
        widgets.resolve("zzzzzz")
    assert "did you mean" not in str(caught.value)


def test_list_with_glob_patterns(widgets: Registry) -> None:
    assert widgets.list() == ["chain", "gear", "lever"]
    assert widgets.list("g*") == ["gear"]
    assert widgets.list("co?") == ["gear"]  # aliases match, the canonical name is listed
    assert widgets.list("chain-*") == ["chain"]  # a family matches as chain-{links}
    assert widgets.list("x*") == []
    assert [e.name for e in widgets.entries("*e*")] == ["gear", "lever"]


def test_canonical_names(widgets: Registry) -> None:
    assert widgets.canonical("cog") == "gear"  # an alias is the same thing
    assert widgets.canonical("chain-12") == "chain-12"  # a family member is not
    assert widgets.canonical("chain") == "chain"
    with pytest.raises(UsageError):
        widgets.canonical("cogs")


def test_contains(widgets: Registry) -> None:
    assert "cog" in widgets and "chain-9" in widgets
    assert "chain-" not in widgets and "nope" not in widgets


def test_builtin_model_families() -> None:
    import gradbench.models  # noqa: F401  (registration)

    entry, implied = MODELS.resolve("resnet-56")
    assert entry.name == "resnet" and implied == {"depth": 56}
    assert MODELS.resolve("plain-20")[1] == {"depth": 20}
    assert MODELS.resolve("mlp-3")[1] == {"depth": 3}
    assert {"plain", "resnet", "mlp"} <= set(MODELS.list())
    assert "resnet" in MODELS.list("res*") and "plain" not in MODELS.list("res*")
    with pytest.raises(UsageError, match="did you mean resnet-20"):
        MODELS.resolve("resnt-20")


def test_builtin_tasks_after_loading_plugins() -> None:
    from gradbench.plugins import load_plugins

    load_plugins()
    assert TASKS.entry("fashion-mnist").name == "image"
    with pytest.raises(UsageError, match="unknown task 'imagee'; did you mean image"):
        TASKS.resolve("imagee")


def test_a_variant_builds_the_same_name_for_another_input_kind(monkeypatch) -> None:
    import gradbench.models.build as build
    from gradbench.models.build import (
        ModelSpec,
        any_kind_options,
        build_model,
        model_options,
        resolve_options,
    )
    from gradbench.task import InputSpec

    models = Registry("model")

    @models.register("cell")
    def cell(spec, *, width: int = 4):
        return ("classifier", width)

    @models.register_variant("cell", kind="seq2seq")
    def cell_seq2seq(spec, *, width: int = 4, attention: str = "none"):
        return ("encoder-decoder", width, attention)

    assert models.factory_for("cell") is cell
    assert models.factory_for("cell", "image") is cell
    assert models.factory_for("cell", "seq2seq") is cell_seq2seq
    assert models.variants("cell") == {"seq2seq": cell_seq2seq}
    with pytest.raises(ValueError, match="already has a variant"):
        models.register_variant("cell", kind="seq2seq")(cell_seq2seq)
    with pytest.raises(ValueError, match="before a variant"):
        models.register_variant("nothing", kind="seq2seq")(cell_seq2seq)

    # Through model building: options are checked against the task's kind.
    monkeypatch.setattr(build, "MODELS", models)
    monkeypatch.setattr(build, "init_weights", lambda *a, **k: None)  # fakes, not modules
    assert "attention" in any_kind_options("cell")  # no kind yet: the union, for early parsing
    assert "attention" not in model_options("cell")  # no kind: the own factory
    assert "attention" not in model_options("cell", "image")
    assert model_options("cell", "seq2seq")["attention"] == "none"
    with pytest.raises(UsageError, match="no option 'attention' on a task whose input"):
        resolve_options(ModelSpec("cell", {"attention": "dot"}), {}, "image")
    options = resolve_options(ModelSpec("cell", {"attention": "dot"}), {}, "seq2seq")
    spec = InputSpec(kind="seq2seq", shape=(3,), num_outputs=2)  # type: ignore[arg-type]
    assert build_model("cell", spec, options) == ("encoder-decoder", 4, "dot")
