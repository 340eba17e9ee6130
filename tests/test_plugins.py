"""Finding tasks: built-ins (checkout and wheel), a tasks directory, entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest
from cli_helpers import cli

from gradbench import plugins
from gradbench.errors import GradbenchError
from gradbench.plugins import load_plugins
from gradbench.records import ResultsStore
from gradbench.registry import TASKS

REPO = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent(
    '''
    """A tiny task plugin: two Gaussian blobs in 4 dimensions."""
    import torch
    import torch.nn.functional as F

    from gradbench.evaluation import classification_metrics
    from gradbench.registry import TASKS
    from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec


    class Blobs:
        metrics = (MetricSpec("test_accuracy", True), MetricSpec("test_loss", False))

        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            y = torch.randint(0, 2, (n,), generator=g)
            self.data = (torch.randn(n, 4, generator=g) + 3.0 * y[:, None], y)
            self.name = "NAME"

        def input_spec(self):
            return InputSpec(kind="sequence", shape=(1, 4), num_outputs=2)

        def batches(self, split, batch_size, seed):
            x, y = self.data
            for start in range(0, len(y) - batch_size + 1, batch_size):
                yield Batch(x[start : start + batch_size, None], y[start : start + batch_size])

        def loss(self, output, batch):
            return F.cross_entropy(output, batch.y)

        def evaluate(self, model, device, batch_size):
            return classification_metrics(model, self.batches("test", 8, 0), device, "test")

        def fake_batch(self, batch_size=4, seed=0):
            return next(self.batches("train", batch_size, seed))

        def dataset_id(self, split):
            return DatasetId("blobs", split, "v0", "synthetic", len(self.data[1]))


    @TASKS.register("NAME", description="two blobs (plugin test)")
    def make(data, *, n: int = 32):
        return Blobs(n)
    '''
)


def write_plugin(folder: Path, task_name: str, source: str = PLUGIN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"plugin_{uuid.uuid4().hex[:8]}.py"
    path.write_text(source.replace("NAME", task_name))
    return path


def test_builtin_tasks_come_from_the_gradbench_tasks_package() -> None:
    import gradbench_tasks

    load_plugins()
    assert Path(gradbench_tasks.__file__).parent == REPO / "tasks"
    assert TASKS.entry("image").factory.__module__ == "gradbench_tasks.image"


def test_a_tasks_directory_plugin_registers_and_runs(
    restore_registries, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "plugins"
    write_plugin(folder, "blobs-dir")
    results = tmp_path / "res"
    code, _, err = cli(
        ["run", "blobs-dir", "-m", "mlp-3:width=4", "--steps", "2", "--batch-size", "8"]
        + ["--probes", "off", "--tasks-dir", str(folder), "--results", str(results)],
        capsys,
    )
    assert code == 0, err
    (record,) = ResultsStore(results).load()
    assert record["task"] == "blobs-dir" and record["dataset"]["name"] == "blobs"
    assert record["steps"] == 2 and record["diverged"] is False


def test_the_tasks_directory_environment_variable(
    restore_registries, tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = tmp_path / "env-plugins"
    write_plugin(folder, "blobs-env")
    monkeypatch.setenv("GRADBENCH_TASKS_DIR", str(folder))
    code, out, _ = cli(["list", "tasks", "--json", "-p", "blobs*"], capsys)
    assert code == 0
    assert json.loads(out) == [
        {
            "name": "blobs-env",
            "aliases": [],
            "family": None,
            "description": "two blobs (plugin test)",
            "tags": [],
        }
    ]


def test_loading_twice_registers_once(restore_registries, tmp_path: Path) -> None:
    folder = tmp_path / "twice"
    write_plugin(folder, "blobs-twice")
    load_plugins(folder)
    load_plugins(folder)  # a duplicate registration would raise
    assert TASKS.list("blobs-twice") == ["blobs-twice"]


def test_a_broken_plugin_is_one_line(restore_registries, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "broken"
    path = write_plugin(folder, "x", source="1 / 0\n")
    code, _, err = cli(["list", "tasks", "--tasks-dir", str(folder)], capsys)
    assert code == 1
    assert err.strip().splitlines() == [
        f"gradbench: error: task plugin {str(path)!r} failed to load: "
        "ZeroDivisionError: division by zero"
    ]


def test_a_missing_tasks_directory_is_a_usage_error(tmp_path: Path, capsys) -> None:
    code, _, err = cli(["list", "tasks", "--tasks-dir", str(tmp_path / "none")], capsys)
    assert code == 2 and "tasks directory" in err and len(err.strip().splitlines()) == 1


def make_distribution(site: Path, module: str, entry: str) -> None:
    """An installed distribution as importlib.metadata sees it: a dist-info on sys.path."""
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[gradbench.tasks]\n{module} = {entry}\n")


def test_an_entry_point_module_is_imported(restore_registries, tmp_path: Path, monkeypatch) -> None:
    module = f"gb_ep_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(PLUGIN.replace("NAME", "blobs-ep"))
    make_distribution(site, module, module)
    monkeypatch.syspath_prepend(str(site))
    assert "blobs-ep" not in TASKS
    load_plugins()
    assert "blobs-ep" in TASKS
    assert f"ep:gradbench.tasks:{module}" in plugins._loaded


def test_an_entry_point_callable_is_called(restore_registries, tmp_path: Path, monkeypatch) -> None:
    module = f"gb_ep_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    body = PLUGIN.replace("NAME", "blobs-call").replace(
        '@TASKS.register("blobs-call", description="two blobs (plugin test)")\n', ""
    )
    (site / f"{module}.py").write_text(
        body + '\n\ndef register():\n    TASKS.register("blobs-call")(make)\n'
    )
    make_distribution(site, module, f"{module}:register")
    monkeypatch.syspath_prepend(str(site))
    load_plugins()
    assert TASKS.entry("blobs-call").name == "blobs-call"


def test_a_failing_entry_point_names_itself(
    restore_registries, tmp_path: Path, monkeypatch
) -> None:
    module = f"gb_ep_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text("import no_such_module_anywhere\n")
    make_distribution(site, module, module)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(GradbenchError, match=f"plugin '{module}' .* failed to load: "):
        load_plugins()


def _copy_sources(destination: Path) -> None:
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, destination / name)
    for name in ("gradbench", "tasks"):
        shutil.copytree(REPO / name, destination / name, ignore=ignore)


@pytest.mark.slow
def test_a_built_wheel_holds_every_package_and_finds_the_builtin_tasks(tmp_path: Path) -> None:
    source, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    _copy_sources(source)
    build_wheel = f"from setuptools import build_meta; build_meta.build_wheel({str(dist)!r})"
    build = subprocess.run(
        [sys.executable, "-c", build_wheel],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(
        str(p.parent.relative_to(REPO)) for p in (REPO / "gradbench").rglob("__init__.py")
    )
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"packages left out of the wheel (pyproject packages list): {missing}"
    assert "gradbench_tasks/image.py" in names
    # Installed from the wheel alone (a pure-Python wheel is a zip to unpack), away from the
    # checkout, the built-in tasks are found and the runner imports.
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "import gradbench_tasks, gradbench.runner;"
        "from gradbench.plugins import load_plugins; load_plugins();"
        "from gradbench.registry import TASKS;"
        "print(json.dumps([gradbench_tasks.__file__, TASKS.list()]))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe, str(site)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, tasks = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(site)
    assert "image" in tasks


DOCS = REPO / "docs" / "plugins.md"


def docs_plugins() -> dict[str, str]:
    """The code blocks of docs/plugins.md marked ``<!-- plugin: FILE -->``, by file name."""
    import re

    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- plugin: (\S+) -->\n```python\n(.*?)```", text, re.S)
    return {name: code for name, code in blocks}


@pytest.mark.slow  # three tiny training runs
def test_the_documented_plugins_load_list_and_run(
    restore_registries, tmp_path: Path, capsys
) -> None:
    import numpy as np

    plugins_dir = tmp_path / "my-plugins"
    plugins_dir.mkdir()
    documented = docs_plugins()
    assert set(documented) == {"reviews.py", "my_digits.py", "blobs.py", "tiny_mlp.py"}
    for name, code in documented.items():
        (plugins_dir / name).write_text(code, encoding="utf-8")
    # The helpers' data sets are 15 lines or fewer of code, as the docs promise.
    for name in ("reviews.py", "my_digits.py"):
        lines = [line for line in documented[name].splitlines() if line.strip()]
        assert len(lines) <= 15, (name, len(lines))

    data = tmp_path / "data"
    (data / "reviews").mkdir(parents=True)
    rows = ["1\ta fine film", "0\ta dull film", "1\tfine fun", "0\tdull dull"] * 4
    (data / "reviews" / "train.tsv").write_text("label\tsentence\n" + "\n".join(rows) + "\n")
    (data / "reviews" / "test.tsv").write_text("1\tfine\n0\tdull\n")
    (data / "my-digits").mkdir()
    generator = np.random.default_rng(0)
    np.savez(
        data / "my-digits" / "digits.npz",
        x_train=generator.integers(0, 255, (40, 8, 8), dtype=np.uint8),
        y_train=np.arange(40) % 10,
        x_test=generator.integers(0, 255, (10, 8, 8), dtype=np.uint8),
        y_test=np.arange(10),
    )
    common = ["--tasks-dir", str(plugins_dir), "--data-dir", str(data), "--no-download"]
    code, out, err = cli(["list", "tasks", "--json", "-v", "--tasks-dir", str(plugins_dir)], capsys)
    assert code == 0, err
    listed = {t["name"]: t for t in json.loads(out)}
    assert {"reviews", "my-digits", "blobs"} <= set(listed)
    assert {"name": "size", "type": "int", "default": 256} in listed["blobs"]["options"]
    code, out, _ = cli(["list", "models", "--json", "-p", "tiny*", *common[:2]], capsys)
    assert [m["name"] for m in json.loads(out)] == ["tiny-mlp"]

    results = tmp_path / "results"
    runs = [
        ("blobs", "tiny-mlp:width=8", []),
        ("my-digits", "tiny-mlp", ["--batch-size", "8"]),
        ("reviews", "gru:width=4", ["--batch-size", "4", "--threads", "1"]),
    ]
    for task, model, extra in runs:
        args = ["run", task, "-m", model, "--steps", "2", "--probes", "off", *extra]
        code, _, err = cli(args + common + ["--results", str(results)], capsys)
        assert code == 0, err
    records = {r["task"]: r for r in ResultsStore(results).load()}
    assert records["blobs"]["dataset"]["name"] == "blobs"
    # The helpers name the data set after the plugin, with a content hash as version.
    assert records["my-digits"]["dataset"]["name"] == "my-digits"
    assert records["my-digits"]["dataset"]["version"].startswith("sha256:")
    assert records["reviews"]["dataset"]["name"] == "reviews"
    assert records["reviews"]["dataset"]["num_examples"] == 16
    assert 0.0 <= records["reviews"]["metrics"]["test_accuracy"] <= 1.0  # a rate, not NaN


def test_a_documented_option_is_typed_from_its_annotation(
    restore_registries, tmp_path: Path, capsys
) -> None:
    plugins_dir = tmp_path / "p"
    plugins_dir.mkdir()
    (plugins_dir / "blobs.py").write_text(docs_plugins()["blobs.py"], encoding="utf-8")
    args = ["run", "blobs", "-m", "mlp-3", "--steps", "1", "-O", "size=many"]
    code, _, err = cli(args + ["--tasks-dir", str(plugins_dir)], capsys)
    assert code == 2 and "size='many'" in err and len(err.strip().splitlines()) == 1


def test_options_are_typed_even_when_another_annotation_cannot_be_resolved() -> None:
    """A return type imported only for type checkers must not untype the options."""
    from gradbench.errors import UsageError
    from gradbench.options import coerce_options, describe_options

    namespace: dict = {}
    exec(  # a factory as a plugin file with `from __future__ import annotations` has it
        "from __future__ import annotations\n"
        "from gradbench.options import Count\n"
        "def make(data, *, size: Count = 8, flag: bool = False, name=None) -> NotImported:\n"
        "    ...\n",
        namespace,
    )
    make = namespace["make"]
    assert coerce_options("task t", make, {"size": "3", "flag": "yes", "name": "x"}) == {
        "size": 3,
        "flag": True,
        "name": "x",
    }
    with pytest.raises(UsageError, match="size='0': input should be greater than or equal to 1"):
        coerce_options("task t", make, {"size": "0"})
    with pytest.raises(UsageError, match="has no option 'sise'; it takes size, flag, name"):
        coerce_options("task t", make, {"sise": "3"})
    assert [(n, d) for n, _, d in describe_options(make)] == [
        ("size", 8),
        ("flag", False),
        ("name", None),
    ]
