"""The report without a browser: reading inputs, refusing bad ones, what the page carries."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import provex
from provex.cli import main as cli_main
from provex.reporting import write_report
from provex.reporting.sources import load_inputs
from provex.reporting.store import read_run
from report_fixtures import METHODS, concept_results, small_run

ORDERING = Path(__file__).resolve().parents[1] / "benchmarks" / "relevance_ordering" / "results"

INDICES = [40, 3, 17, 8, 25, 11, 30]  # shuffled dataset indices: the reader must sort them


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_model, mnist_samples) -> tuple[Path, dict]:
    x, y = mnist_samples
    folder = tmp_path_factory.mktemp("run") / "run"
    exps = small_run(folder, mnist_model, x[:7], y[:7], INDICES)
    return folder, exps


def _page_data(path: Path) -> dict:
    html = path.read_text()
    m = re.search(r'<script id="provex-data" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    return json.loads(m.group(1).replace("<\\/", "</"))


def _decode(q: dict) -> np.ndarray:
    codes = np.frombuffer(base64.b64decode(q["b"]), dtype="<u2").reshape(q["h"], q["w"]).astype(float)
    v = q["lo"] + codes * (q["hi"] - q["lo"]) / 65534
    v[codes == 65535] = np.nan
    return v


def test_run_reader_returns_dataset_order(run_dir, mnist_samples) -> None:
    folder, exps = run_dir
    run = read_run(folder)
    order = np.argsort(INDICES)
    assert run.index.tolist() == sorted(INDICES)
    assert torch.equal(run.inputs, mnist_samples[0][:7][order])
    assert torch.equal(run.maps["rc-rde"], exps["rc-rde"].relevance[order])
    assert set(run.extra_maps["rc-rde"]) == {"k=50", "k=100"}
    assert run.methods == list(METHODS)
    assert len(run.table) == 7 * 3 and run.table["index"].is_monotonic_increasing


def test_unfinished_shard_is_not_read(run_dir, tmp_path) -> None:
    import shutil

    folder, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    (copy / "shards" / "shard-000001.parquet").unlink()  # shard 1 (images 4..6) not finished
    run = read_run(copy)
    assert run.index.tolist() == sorted(INDICES[:4])


def test_report_of_a_run_carries_maps_values_and_areas(run_dir, tmp_path) -> None:
    folder, exps = run_dir
    out = write_report([folder], tmp_path / "r.html")
    data = _page_data(out)
    (g,) = data["galleries"].values()
    assert g["n"] == 7 and [m["name"] for m in g["methods"]] == list(METHODS)
    order = np.argsort(INDICES)
    item = g["items"][2]
    assert item["index"] == sorted(INDICES)[2]
    truth = exps["sensitivity"].relevance[order[2], 0].double().numpy()
    got = _decode(item["vals"]["sensitivity"])
    assert np.abs(got - truth).max() <= (truth.max() - truth.min()) / 65534 + 1e-9
    assert set(item["extra"]["rc-rde"]) == {"k=50", "k=100"}
    run = read_run(folder)
    table = run.table[(run.table["method"] == "rc-rde")]
    assert item["auc"]["rc-rde"]["d"] == pytest.approx(float(table["auc_distortion"].iloc[2]), rel=1e-3)
    curves = data["figures"]["ordering-run-0-distortion"]["data"]
    assert sorted(t["name"].split(" (")[0] for t in curves if t.get("meta") == "curve") == sorted(METHODS)
    assert g["classes"][0]["name"].startswith("digit ")  # the manifest's class names


def test_report_of_ordering_results_has_one_curve_per_method_and_a_class_table(tmp_path) -> None:
    out = write_report([ORDERING], tmp_path / "o.html")
    data = _page_data(out)
    saved = json.loads((ORDERING / "results.json").read_text())
    fig = data["figures"]["ordering-0-distortion"]
    names = [t["name"] for t in fig["data"] if t.get("meta") == "curve"]
    assert len(names) == len(saved["methods"]) == 10
    for m, r in saved["methods"].items():
        line = next(t for t in fig["data"] if t.get("meta") == "curve" and t["name"].startswith(m + " "))
        assert f"{r['auc_distortion']:.3f}" in line["name"]
        assert line["y"][-1] == pytest.approx(r["curve"]["distortion"][-1], abs=1e-5)
    html = out.read_text()
    classes = sorted(set(saved["methods"]["mr-rde"]["curve"]["settings"]["target"]))
    table = html.split('class="per-class"')[1].split("</table>")[0]
    assert table.count("<tr>") == len(classes) + 1
    mr = saved["methods"]["mr-rde"]["curve"]
    c0 = [v for t, v in zip(mr["settings"]["target"], mr["per_image_auc_distortion"]) if t == classes[0]]
    assert f"{np.mean(c0):.3f} ({len(c0)})" in table


def test_concept_section_before_and_after_fdr_and_wealth(tmp_path) -> None:
    plain = concept_results(tmp_path / "c1", wealth=False)
    (plain / "class3-cskit.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    data = _page_data(write_report([plain], tmp_path / "c1.html"))
    rate = data["figures"]["concepts-0-rate-3"]["data"]
    assert [t["name"] for t in rate] == ["rejection rate", "after e-BH (FDR)"]
    assert rate[0]["y"] == [0.9, 0.1] and rate[1]["y"] == [0.8, 0.0]
    assert data["figures"]["concepts-0-tau-8"]["data"][0]["x"] == [0.3, 0.95]
    html = (tmp_path / "c1.html").read_text()
    assert "class3-cskit.png" in html  # its PNG is embedded where no paths are stored
    with_paths = concept_results(tmp_path / "c2", wealth=True)
    data = _page_data(write_report([with_paths], tmp_path / "c2.html"))
    wealth = data["figures"]["concepts-0-wealth-3"]
    assert len(wealth["data"]) == 3 and wealth["layout"]["shapes"][0]["y0"] == pytest.approx(20.0)


def test_self_contained(run_dir, tmp_path) -> None:
    folder, _ = run_dir
    html = write_report([folder, ORDERING], tmp_path / "s.html").read_text()
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=\"?(https?:)?//", html)
    assert html.count("<script") == 3  # data, plotly.js, glue


def test_bad_inputs_are_named_in_one_line(tmp_path, run_dir) -> None:
    folder, _ = run_dir
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, foreign)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "results.json").write_text('{"a": 1}')
    cases = [
        (junk, "junk.txt: not an explanation"),
        (foreign, "weights.pt: not a provex explanation file"),
        (broken, "results.json: unreadable JSON"),
        (unknown, "results.json: not a results file the report knows"),
        (tmp_path / "missing", "missing: no such file or folder"),
    ]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=re.escape(msg)) as err:
            write_report([folder, bad], tmp_path / "bad.html")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.html").exists()


def test_cli_one_line_error_and_exit_code(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01")
    assert cli_main(["report", str(junk), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "junk.bin" in err and err.startswith("provex report: error:")


def test_different_models_refused_unless_allowed(tmp_path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    d = json.loads((ORDERING / "results.json").read_text())
    d["settings"]["model"] = "crosses-cnn"
    (other / "results.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"explains model 'crosses-cnn'.*--allow-mixed"):
        load_inputs([ORDERING, other])
    inputs = load_inputs([ORDERING, other], allow_mixed=True)
    assert len(inputs.results_of("ordering")) == 2


def test_explanations_with_images_and_xrt_regions(tmp_path, mnist_model, mnist_samples) -> None:
    x = mnist_samples[0][:3]
    sens = provex.explain(mnist_model, x, "sensitivity")
    xrt = provex.explain(mnist_model, x, "shap-xrt", K=9)  # the four quadrants
    sens.save(tmp_path / "a.pt")
    xrt.save(tmp_path / "b.pt")
    torch.save(x.clone(), tmp_path / "x.pt")
    data = _page_data(
        write_report([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "e.html", images=tmp_path / "x.pt")
    )
    (g,) = data["galleries"].values()
    meta = {m["name"]: m for m in g["methods"]}
    assert meta["shap-xrt"]["kind"] == "p-value" and len(meta["shap-xrt"]["boxes"]) == 4
    p = xrt.info["p_values"]
    assert g["items"][1]["p"]["shap-xrt"] == pytest.approx(p[1].tolist(), rel=1e-3)
    grid = _decode(g["items"][1]["vals"]["shap-xrt"])
    assert grid[0, 0] == pytest.approx(float(p[1, 0]), rel=1e-3) and grid[27, 27] == pytest.approx(
        float(p[1, 3]), rel=1e-3
    )
    assert g["hasImages"] and g["items"][0]["img"].startswith("data:image/png;base64,")
    with pytest.raises(ValueError, match=r"^images: shape \(3, 1, 20, 28\)"):
        write_report([tmp_path / "a.pt"], tmp_path / "f.html", images=torch.zeros(3, 1, 20, 28))


def test_library_does_not_import_the_report() -> None:
    import subprocess
    import sys

    code = (
        "import sys, provex, provex.viz.heatmap, provex.explanation; provex.explain; provex.stats; "
        "assert not any(m.startswith('provex.reporting') for m in sys.modules), 'imported'; "
        "assert provex.report.__module__ == 'provex.reporting.render'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_report_after_names_the_page(run_dir, tmp_path) -> None:
    from provex.reporting import report_after

    folder, _ = run_dir
    line = report_after([folder], tmp_path / "after.html")
    size = (tmp_path / "after.html").stat().st_size
    assert line == f"report: {tmp_path / 'after.html'} ({size / 1e6:.1f} MB)"


def test_explain_and_run_write_a_report_with_report(tmp_path, capsys) -> None:
    """``--report`` on ``provex explain`` and ``provex run``: the page exists and carries the maps."""
    out = tmp_path / "o"
    assert cli_main(["explain", "--index", "0", "1", "--report", "--no-progress", "--out", str(out)]) == 0
    page = out / "mnist-samples-sensitivity.html"
    assert page.is_file() and f"report: {page}" in capsys.readouterr().out
    assert [g["n"] for g in _page_data(page)["galleries"].values()] == [2]
    assert cli_main(["explain", "--index", "0", "--report", "--out", str(out)]) == 2  # the page counts as an output
    run = tmp_path / "r"
    argv = ["run", "--model", "mnist-cnn", "--data", "samples:mnist", "--limit", "3", "--methods", "sensitivity"]
    assert cli_main([*argv, "--out", str(run), "--report", "--no-progress"]) == 0
    assert [g["n"] for g in _page_data(run / "report.html")["galleries"].values()] == [3]


def test_region_tests_section_counts_what_the_result_says(tmp_path) -> None:
    """A ``provex test-regions`` folder: the section's table and scatter agree with its JSON."""
    out = tmp_path / "tr"
    argv = ["test-regions", "--index", "0", "1", "--method", "sensitivity", "--K", "19", "--out", str(out)]
    assert cli_main(argv) == 0
    (result,) = out.glob("*-xrt.json")
    truth = json.loads(result.read_text())
    page = write_report([out], tmp_path / "p.html")
    html = page.read_text()
    assert f"Region tests: {result.name} (xrt, alpha 0.05)" in html
    data = _page_data(page)
    (fig,) = [f for k, f in data["figures"].items() if k.endswith("-scatter")]
    significant = [r for img in truth["images"] for r in img["regions"] if r["rejected"]]
    assert len(fig["data"][0]["x"]) == len(significant) == truth["summary"]["rejected"]
    assert fig["data"][0]["y"] == pytest.approx([-np.log10(r["p_value"]) for r in significant])
