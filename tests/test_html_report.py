"""The HTML report: one self-contained file, a section per task, opened in a real browser."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from fake_records import rec, store_with
from typer.testing import CliRunner

from gradbench.cli import app
from gradbench.html_report import build_html
from gradbench.records import ResultsStore

# Where the browser test leaves its screenshot for a person to look at (CI artefact).
SCREENSHOT_ENV = "GRADBENCH_REPORT_SCREENSHOT"


def results(tmp_path: Path) -> Path:
    records = [
        rec("image", m, s, v)
        for m, vs in {"resnet-20": [0.9, 0.91, 0.92], "plain-20": [0.8, 0.84, 0.82]}.items()
        for s, v in enumerate(vs)
    ]
    records += [
        rec("adding-100", m, s, v, verdict="vanishing" if m == "rnn" else "healthy")
        for m, vs in {"rnn": [0.17, 0.16, 0.17], "lstm": [0.01, 0.02, 0.03]}.items()
        for s, v in enumerate(vs)
    ]
    store_with(tmp_path / "results", records)
    return tmp_path / "results"


def test_report_is_one_self_contained_file_with_a_section_per_task(tmp_path: Path) -> None:
    folder = results(tmp_path)
    output = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(app, ["report", "--results", str(folder), "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert text.count("<section") == 2
    assert "image | image train v1 (synthetic)" in text and "adding-100 | adding-100" in text
    # No external resource: every image is a data URI, no script or stylesheet link.
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    images = re.findall(r'<img src="data:image/png;base64,', text)
    # Per section: the loss band, the dL/dh_t overlay, one heatmap per row (2 rows).
    assert len(images) == 2 * (2 + 2)
    for expected in ("Leaderboard", "Paired comparisons", "verdicts", "vanishing", "0.91 ± "):
        assert expected in text
    assert not list(output.parent.glob(".*part"))


def test_report_without_records_is_a_usage_error_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--results", str(tmp_path), "-o", str(output)])
    assert result.exit_code == 2 and not output.exists()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.slow
def test_report_in_a_headless_browser(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on PATH (make test installs it with apt where it can)")
    output = tmp_path / "report.html"
    output.write_text(build_html(ResultsStore(results(tmp_path))))
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(output.as_uri())
        page.wait_for_load_state("load")
        tables = page.locator("table")
        assert tables.count() == 2 * 3  # leaderboard, comparisons, verdicts per section
        for i in range(tables.count()):
            assert tables.nth(i).locator("tbody tr").count() >= 1
        images = page.locator("img")
        assert images.count() == 8
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.alt)"
        )
        assert broken == []
        # Readable on a laptop: the page does not scroll sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "report.png")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000


def test_tensorboard_export_writes_every_runs_series(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = results(tmp_path)
    events = tmp_path / "tb"
    output = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["report", "--results", str(folder), "-o", str(output), "--tensorboard", str(events)]
    )
    assert result.exit_code == 0, result.output
    runs = sorted(p.relative_to(events).as_posix() for p in events.glob("*/*/seed*"))
    assert len(runs) == 12 and "image/resnet-20/seed0" in runs
    store = ResultsStore(folder)
    record = next(r for r in store.load() if r["model"] == "resnet-20" and r["seed"] == 0)
    loaded = EventAccumulator(str(events / "image" / "resnet-20" / "seed0")).Reload()
    tags = loaded.Tags()["scalars"]
    assert {"train/loss", "train/grad_norm", "eval/test_accuracy", "layers/layer0.weight"} <= set(
        tags
    )
    # Layers as the heatmaps show them: RMS gradient per element, at the probe steps.
    layer = loaded.Scalars("layers/layer0.weight")
    assert [event.step for event in layer] == list(store.series(record)["probe_steps"])
    expected = store.series(record)["layer_grad_rms"][:, 0]
    assert [event.value for event in layer] == pytest.approx(list(expected), rel=1e-6)
    loss = [event.value for event in loaded.Scalars("train/loss")]
    assert loss == pytest.approx(list(store.series(record)["loss"]), rel=1e-6)
    (accuracy,) = loaded.Scalars("eval/test_accuracy")
    assert accuracy.value == pytest.approx(0.9) and accuracy.step == 100
