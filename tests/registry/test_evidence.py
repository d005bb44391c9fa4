"""The evidence a reviewer sees before approving a model version (scenario S1: abalone).

Metric comparison by direction, the markdown summary and its length limit, the self-contained
HTML page (escaping, no external URL, inline PNGs), deterministic plots, the cases without a
champion or without predictions, and, where Chromium is installed, the page in a real browser.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import ArtifactError, ConfigError, MissingDependency
from modelyard.registry.evidence import (
    MARKDOWN_LIMIT,
    SCATTER_LIMIT,
    Evidence,
    MetricRow,
    VersionEvidence,
    compare_metrics,
    render_html,
    render_markdown,
    render_plots,
    write_report,
)

CANDIDATE_URL = "http://127.0.0.1:5000/#/experiments/1/runs/0a1b2c3d"
CHAMPION_URL = "https://mlflow.example.org/#/experiments/1/runs/9f8e7d6c"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rings(n: int, seed: int = 7) -> tuple[list[float], list[float], list[float]]:
    """Abalone-like actual rings and two models' predictions, without numpy."""
    import random

    rng = random.Random(seed)
    actual = [float(max(1, min(29, round(rng.gammavariate(9, 1.1))))) for _ in range(n)]
    candidate = [a * 0.8 + 2.0 + rng.gauss(0, 1.9) for a in actual]
    champion = [a * 0.7 + 3.0 + rng.gauss(0, 2.2) for a in actual]
    return actual, candidate, champion


def _evidence(
    *,
    n: int = 200,
    champion: bool = True,
    predictions: bool = True,
    candidate_label: str = "candidate abalone/4",
    **changes: Any,
) -> Evidence:
    actual, cand_pred, champ_pred = _rings(n)
    cand = VersionEvidence(
        label=candidate_label,
        metrics={"mse": 4.512, "r2": 0.561, "mse_std": 0.41},
        params={"num_round": 50, "max_depth": 5, "eta": 0.2},
        lineage={
            "run_id": 42,
            "pipeline": "abalone",
            "git_commit": "9c6f667d1e2a3b4c5d6e7f8091a2b3c4d5e6f708",
            "git_dirty": False,
            "data_versions": {"abalone": "sha256:" + "5d41402a" * 8},
            "parents": ["preprocess#41"],
        },
        mlflow_run_url=CANDIDATE_URL,
        predictions=cand_pred if predictions else None,
    )
    champ = VersionEvidence(
        label="champion abalone/3 (@champion)",
        metrics={"mse": 4.873, "r2": 0.532, "mse_std": 0.39},
        params={"num_round": 50, "max_depth": 4, "eta": 0.3},
        lineage={  # the shape the registry records (the candidate's above is the flat form)
            "run_id": 37,
            "project": "abalone",
            "pipeline": "abalone",
            "step": "register",
            "git": {
                "commit": "5724fc91aa22bb33cc44dd55ee66ff7788990011",
                "dirty": True,
                "branch": "main",
            },
            "data": {"abalone": "sha256:" + "aa11bb22" * 8},
            "inputs": {"mlflow_model": "sha256:" + "cc33dd44" * 8},
            "parents": [{"model": "abalone", "version": 2, "alias": "champion"}],
        },
        mlflow_run_url=CHAMPION_URL,
        predictions=champ_pred if predictions else None,
    )
    values: dict[str, Any] = {
        "model": "abalone",
        "candidate": cand,
        "champion": champ if champion else None,
        "actuals": actual if predictions else None,
        "metric_directions": {"mse": "lower", "r2": "higher"},
    }
    values.update(changes)
    return Evidence(**values)


def _rows(candidate: dict[str, float], champion: dict[str, float] | None) -> list[MetricRow]:
    evidence = Evidence(
        "m",
        VersionEvidence("c", candidate),
        VersionEvidence("p", champion) if champion is not None else None,
        metric_directions={"mse": "lower", "accuracy": "higher", "loss": "min"},
    )
    return compare_metrics(evidence)


def _by_name(rows: Sequence[MetricRow]) -> dict[str, MetricRow]:
    return {row.name: row for row in rows}


# -- import cost ---------------------------------------------------------------------------------


def test_import_loads_no_plotting_or_tracking_library() -> None:
    code = (
        "import sys, modelyard.registry.evidence; "
        "print(','.join(m for m in ('matplotlib', 'numpy', 'mlflow', 'pandas') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


# -- metrics -------------------------------------------------------------------------------------


def test_deltas_and_better_follow_the_direction() -> None:
    rows = _by_name(
        _rows(
            {"mse": 4.0, "accuracy": 0.90, "loss": 0.5, "extra": 2.0},
            {"mse": 5.0, "accuracy": 0.95, "loss": 0.4, "extra": 1.0},
        )
    )
    mse = rows["mse"]  # lower is better, and it went down
    assert (mse.delta, mse.better, mse.status) == (-1.0, True, "better")
    assert mse.relative_delta == pytest.approx(-0.2)
    accuracy = rows["accuracy"]  # higher is better, and it went down
    assert accuracy.better is False and accuracy.status == "worse"
    assert accuracy.delta == pytest.approx(-0.05)
    assert accuracy.relative_delta == pytest.approx(-0.05 / 0.95)
    assert rows["loss"].direction == "lower" and rows["loss"].better is False  # "min" alias
    extra = rows["extra"]  # no direction: a delta, but no judgement
    assert (extra.delta, extra.better, extra.status) == (1.0, None, "no_direction")
    assert [r.alarming for r in (mse, accuracy, extra)] == [False, True, False]
    assert mse.verdict.startswith("✅") and accuracy.verdict.startswith("⚠️")


def test_rows_put_directed_metrics_first_in_their_given_order() -> None:
    rows = _rows({"zeta": 1, "accuracy": 1, "alpha": 1, "mse": 1}, {"loss": 1})
    assert [r.name for r in rows] == ["mse", "accuracy", "loss", "alpha", "zeta"]


def test_equal_values_and_float_noise_are_the_same_not_better() -> None:
    rows = _by_name(_rows({"mse": 4.5 + 1e-13, "accuracy": 0.9}, {"mse": 4.5, "accuracy": 0.9}))
    assert rows["mse"].status == rows["accuracy"].status == "same"
    assert rows["mse"].better is None


def test_metrics_on_one_side_only() -> None:
    rows = _by_name(_rows({"mse": 4.0, "new_metric": 1.0}, {"mse": 5.0, "accuracy": 0.9}))
    assert rows["new_metric"].status == "candidate_only" and rows["new_metric"].delta is None
    missing = rows["accuracy"]
    assert missing.status == "champion_only" and missing.candidate is None
    assert missing.alarming and missing.verdict == "⚠️ missing"


def test_nan_and_infinite_metrics() -> None:
    rows = _by_name(
        _rows(
            {"mse": math.nan, "accuracy": 0.9, "loss": math.inf, "x": 1.0},
            {"mse": 4.0, "accuracy": math.nan, "loss": 2.0, "x": math.inf},
        )
    )
    assert rows["mse"].status == "not_comparable" and rows["mse"].verdict == "⚠️ NaN"
    assert rows["accuracy"].status == "not_comparable" and not rows["accuracy"].alarming
    loss = rows["loss"]  # inf compares: lower is better, so it is worse, without a delta
    assert (loss.status, loss.delta, loss.relative_delta) == ("worse", None, None)
    assert rows["x"].delta is None and not rows["x"].alarming
    md = render_markdown(
        Evidence(
            "m",
            VersionEvidence("c", {"mse": math.nan, "loss": -math.inf}),
            VersionEvidence("p", {"mse": 1.0, "loss": 1.0}),
            metric_directions={"mse": "lower", "loss": "lower"},
        )
    )
    assert "NaN" in md and "-∞" in md and "Needs a closer look" in md


def test_a_zero_champion_gives_no_relative_delta() -> None:
    row = _by_name(_rows({"loss": 0.5}, {"loss": 0.0}))["loss"]
    assert row.delta == 0.5 and row.relative_delta is None and row.status == "worse"


def test_invalid_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="direction 'smaller'") as info:
        Evidence("m", VersionEvidence("c", {"mse": 1}), metric_directions={"mse": "smaller"})
    assert "lower" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="not a number") as info:
        VersionEvidence("candidate m/2", {"mse": "low"})  # type: ignore[dict-item]
    assert info.value.where == "candidate m/2"
    with pytest.raises(ConfigError, match="3 predictions but 2 actual values"):
        Evidence("m", VersionEvidence("c", predictions=[1, 2, 3]), actuals=[1, 2])


def test_numpy_metrics_and_predictions_are_accepted() -> None:
    import numpy as np

    actual = np.arange(10, dtype=float)
    # numpy scalars from a caller that did not convert them: normalised to floats on the way in.
    metrics: Any = {"mse": np.float32(1.5), "n": np.int64(3)}
    evidence = Evidence("m", VersionEvidence("c", metrics, predictions=actual + 1), actuals=actual)
    assert evidence.candidate.metrics == {"mse": 1.5, "n": 3.0}
    assert len(render_plots(evidence)) == 2


# -- markdown ------------------------------------------------------------------------------------


def test_markdown_has_the_numbers_lineage_and_links() -> None:
    md = render_markdown(_evidence())
    for text in ("4.512", "4.873", "-0.361", "-7.4%", "0.561", "+0.029", "+5.5%"):
        assert text in md
    assert "| `mse` ↓ | 4.512 | 4.873 | -0.361 | -7.4% | ✅ better |" in md
    assert "✅ 2 better · ⚠️ 0 worse" in md
    assert "git commit `9c6f667d1e2a`" in md  # short commit
    assert "`5724fc91aa22 on main` ⚠️ dirty" in md  # the champion came from a dirty tree
    assert "input: mlflow\\_model `sha256:cc33dd44cc33`" in md
    assert "parents `abalone/2 @champion`" in md
    assert "`sha256:5d41402a5d41`" in md  # short data version
    assert "`eta` 0.3 → 0.2" in md  # changed params, champion -> candidate
    assert f"[candidate run]({CANDIDATE_URL})" in md and f"[champion run]({CHAMPION_URL})" in md
    assert "<img" not in md and "data:image" not in md  # no images
    assert len(md) <= MARKDOWN_LIMIT


def test_markdown_stays_under_the_limit_with_many_metrics() -> None:
    cand = {f"metric_with_a_rather_long_name_{i:03d}": (i + 1) * 1.2345 for i in range(400)}
    champ = {name: value * 0.99 for name, value in cand.items()}
    cand["mse"], champ["mse"] = 5.0, 4.0  # the gate's metric: worse
    cand["zz_worse"], champ["zz_worse"] = 0.5, 0.9  # directed, sorted last among the directed
    lineage = {f"key_{i}": "x" * 300 for i in range(30)}
    evidence = Evidence(
        "abalone",
        VersionEvidence("candidate " + "x" * 5000, cand, lineage=lineage),
        VersionEvidence("champion", champ, lineage=lineage),
        metric_directions={"mse": "lower", "zz_worse": "higher"},
    )
    md = render_markdown(evidence)
    assert len(md) <= MARKDOWN_LIMIT
    assert "| `mse` ↓ | 5 | 4 | +1 | +25.0% | ⚠️ worse |" in md  # the decisive rows survive
    assert "`zz_worse` ↑" in md
    assert re.search(r"_… and \d+ more metrics in the full report\._", md)
    assert "✅ 0 better · ⚠️ 2 worse · 400 without a direction" in md  # counts cover all
    assert "**Candidate lineage:** key\\_0 `" in md and "… (+" in md
    assert all(line.count("`") % 2 == 0 for line in md.splitlines())  # no code span cut open
    for limit in (500, 1200):
        assert len(render_markdown(evidence, limit=limit)) <= limit


def test_markdown_escapes_markup_and_html() -> None:
    evidence = _evidence(candidate_label="<script>alert(1)</script> | **x** [y](javascript:z)")
    md = render_markdown(evidence)
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert r"\| \*\*x\*\* \[y\](javascript:z)" in md
    hostile = Evidence(
        "m",
        VersionEvidence(
            "c",
            {"a|b": 1.0},
            lineage={"run_id": "<!channel> `x`"},
            mlflow_run_url="javascript:alert(1)",
        ),
    )
    md = render_markdown(hostile)
    assert "`a\\|b`" in md  # a pipe in a metric name does not split the table row
    assert "<!channel>" not in md and "&lt;!channel&gt; 'x'" in md
    assert "javascript:" not in md and "MLflow" not in md  # no link for a non-web URL


def test_markdown_without_a_champion() -> None:
    md = render_markdown(_evidence(champion=False))
    assert "no champion yet" in md.lower()
    assert "| metric | candidate | |" in md and "champion run" not in md
    assert "| `mse` ↓ | 4.512 |  |" in md  # no verdict where there is nothing to compare
    assert "**Params:**" in md


# -- HTML ----------------------------------------------------------------------------------------


def _images(page: str) -> list[bytes]:
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)
    assert all(src.startswith("data:image/png;base64,") for src in sources), sources
    return [base64.b64decode(src.split(",", 1)[1], validate=True) for src in sources]


def test_html_is_self_contained() -> None:
    page = render_html(_evidence())
    # The only web addresses are the two MLflow run links (each in the header and the lineage).
    urls = set(re.findall(r"https?://[^\"'<>\s]*", page))
    assert urls == {CANDIDATE_URL, CHAMPION_URL}
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.IGNORECASE)
    assert not re.search(r"\b(src|href)=\"(?!data:image/png;base64,|https?://)", page)
    assert "@import" not in page and "url(" not in page
    images = _images(page)
    assert len(images) == 2 and all(png.startswith(PNG_SIGNATURE) for png in images)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for text in ("Predicted vs actual", "Residuals", "4.512", "-0.361", "-7.4%", "Lineage"):
        assert text in page
    assert "dirty: uncommitted changes" in page
    assert "5724fc91aa22bb33cc44dd55ee66ff7788990011 on main" in page
    assert "<code>abalone/2 @champion</code>" in page


def test_html_escapes_injected_text() -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    evidence = Evidence(
        model=evil,
        candidate=VersionEvidence(
            evil,
            {evil: 1.0},
            params={evil: evil},
            lineage={evil: evil, "data_versions": {evil: evil}},
            mlflow_run_url="javascript:alert(1)",
        ),
        champion=VersionEvidence(
            "champion",
            {evil: 2.0},
            mlflow_run_url='https://mlflow.example.org/x"onmouseover="alert(1)',
        ),
        title=evil,
    )
    page = render_html(evidence)
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "javascript:" not in re.sub(r'title="[^"]*"', "", page)  # shown as text, never a link
    assert "not a web link" in page
    # A quote in a web link stays inside the attribute.
    assert 'href="https://mlflow.example.org/x&quot;onmouseover=&quot;alert(1)"' in page
    assert 'onmouseover="' not in page


def test_html_without_a_champion() -> None:
    page = render_html(_evidence(champion=False))
    assert "No champion yet" in page and "first approved version of abalone" in page
    assert len(_images(page)) == 2  # the candidate alone is still plotted
    assert '<th class="champ">' not in page and 'class="num champ"' not in page
    assert CHAMPION_URL not in page


def test_without_predictions_there_are_metrics_and_no_plots() -> None:
    evidence = _evidence(predictions=False)
    assert render_plots(evidence) == []
    page = render_html(evidence)
    assert "<img" not in page
    assert "No predictions on an evaluation set were recorded for the candidate" in page
    assert "4.512" in page
    no_actuals = _evidence(actuals=None)
    assert render_plots(no_actuals) == []
    assert "No actual values" in render_html(no_actuals)


def test_champion_without_predictions_plots_the_candidate_alone() -> None:
    evidence = _evidence()
    champion = evidence.champion
    assert champion is not None
    evidence = dataclasses.replace(
        evidence, champion=VersionEvidence(champion.label, champion.metrics, predictions=None)
    )
    page = render_html(evidence)
    assert "The champion has no predictions on this evaluation set" in page
    assert len(_images(page)) == 2


def test_non_finite_predictions_are_left_out_and_said() -> None:
    evidence = _evidence()
    predictions = list(evidence.candidate.predictions or [])
    predictions[:3] = [math.nan, math.inf, -math.inf]
    candidate = VersionEvidence("candidate", evidence.candidate.metrics, predictions=predictions)
    page = render_html(_evidence(candidate=candidate))
    assert "3 rows where candidate or the actual value is NaN or infinite" in page
    assert len(_images(page)) == 2


def test_plots_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail, as in an environment without matplotlib.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    evidence = _evidence()
    with pytest.raises(MissingDependency) as info:
        render_plots(evidence)
    assert info.value.hint == "pip install matplotlib"
    page = render_html(evidence)  # metrics and lineage are still worth showing
    assert "<img" not in page and "Plots are not available" in page and "4.512" in page


# -- plots ---------------------------------------------------------------------------------------


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    return width, height


def test_pngs_are_deterministic_and_fixed_size() -> None:
    first, second = render_plots(_evidence()), render_plots(_evidence())
    assert [p.name for p in first] == ["predicted_vs_actual", "residuals"]
    assert [p.png for p in first] == [p.png for p in second]
    for plot in first:
        assert b"Software" not in plot.png and b"matplotlib" not in plot.png.lower()
        assert plot.title and plot.caption
    assert [_png_size(p.png) for p in first] == [(864, 777), (1584, 604)]
    # Other data: same size, other bytes.
    other = render_plots(_evidence(n=150))
    assert [_png_size(p.png) for p in other] == [(864, 777), (1584, 604)]
    assert other[0].png != first[0].png


def test_large_sets_are_sampled_deterministically() -> None:
    evidence = _evidence(n=SCATTER_LIMIT * 4)
    page = render_html(evidence)
    assert f"sample of {SCATTER_LIMIT:,} of the {SCATTER_LIMIT * 4:,} evaluation rows" in page
    assert f'<td class="num">{SCATTER_LIMIT * 4:,}</td>' in page  # error figures use all rows
    assert [p.png for p in render_plots(evidence)] == [p.png for p in render_plots(evidence)]
    small = render_html(_evidence(n=SCATTER_LIMIT))
    assert "sample of" not in small


# -- files ---------------------------------------------------------------------------------------


def test_write_report_writes_everything(tmp_path: Path) -> None:
    evidence = _evidence()
    paths = write_report(evidence, tmp_path / "evidence" / "abalone-4")
    assert sorted(paths) == ["html", "markdown", "predicted_vs_actual", "residuals"]
    folder = tmp_path / "evidence" / "abalone-4"
    assert paths["html"] == folder / "report.html" and paths["markdown"] == folder / "summary.md"
    assert paths["html"].read_text("utf-8") == render_html(evidence)
    assert paths["markdown"].read_text("utf-8") == render_markdown(evidence)
    assert paths["residuals"].read_bytes() == render_plots(evidence)[1].png
    # Evidence without predictions, written to the same folder, leaves no stale plot behind.
    again = write_report(_evidence(predictions=False), folder)
    assert sorted(again) == ["html", "markdown"]
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "summary.md"]


def test_write_report_to_an_unwritable_place_is_an_artifact_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError, match="cannot write the evidence report") as info:
        write_report(_evidence(predictions=False), blocker / "report")
    assert info.value.hint


# -- a real browser ------------------------------------------------------------------------------


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("MODELYARD_TEST_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # containers run tests as root, where the sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        # this machine has no network: without these, Chromium's background connections fail
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


_PROBE = """<script>
window.addEventListener("load", function () {
  var seen = Array.prototype.map.call(document.images, function (img) {
    return img.complete + ":" + img.naturalWidth + "x" + img.naturalHeight;
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = seen.join(" ");
  document.body.appendChild(out);
});
</script></body>"""


@pytest.mark.chromium
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "Chromium is not installed (apt-get install chromium, or MODELYARD_TEST_CHROMIUM)"
        )
    paths = write_report(_evidence(n=600), tmp_path / "report")
    page = paths["html"].read_text("utf-8")

    # The page as shipped, in a screenshot: it loads and draws plots (many distinct colours).
    shot = tmp_path / "screenshot.png"
    done = _run_chromium(
        browser,
        tmp_path / "profile",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        paths["html"].as_uri(),
    )
    assert shot.exists(), done.stderr[-2000:]
    assert shot.stat().st_size > 100_000
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
        assert len(colours) > 2000  # a blank or text-only page has a few hundred

    # A copy with a probe script reports that the browser decoded both images. The copy drops
    # the page's Content-Security-Policy, which would (rightly) block the probe.
    probe_page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    probe = tmp_path / "report" / "probe.html"
    probe.write_text(probe_page.replace("</body>", _PROBE), "utf-8")
    args = ("--virtual-time-budget=10000", "--dump-dom")
    dom = _run_chromium(browser, tmp_path / "profile", *args, probe.as_uri()).stdout
    found = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
    assert found, dom[-2000:]
    assert found.group(1).split() == ["true:864x777", "true:1584x604"]

    # The shipped page's policy is in force: the same probe does not run there.
    guarded = tmp_path / "report" / "guarded.html"
    guarded.write_text(page.replace("</body>", _PROBE), "utf-8")
    dom = _run_chromium(browser, tmp_path / "profile", *args, guarded.as_uri()).stdout
    assert "<body" in dom and 'id="probe"' not in dom
