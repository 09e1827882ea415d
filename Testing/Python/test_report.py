"""The evaluation report command end to end on the team's real Mayo data, with tiny budgets.

Real runs, no mocks: the domains are read from DICOM and simulated, real CPCEs are trained for a few iterations, the
adaptation and its control run, NLM filters the held-out slices, and the report is written. The numbers mean nothing
at these budgets; the test checks the pipeline and the scoring: the low-dose row must equal the engine's metrics
computed here independently, every table cell must be filled, and a second run must reuse every cached model.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the research code in training/ is not an installed package

from LDCTDenoiseLib.metrics import per_slice_metrics  # noqa: E402
from training import report, report_writer  # noqa: E402
from training.report_domains import load_domains  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.data]


@pytest.fixture(scope="module")
def small_report(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two directions (a real kernel shift and the simulated large shift), one seed, NLM only, a few iterations."""
    root = tmp_path_factory.mktemp("report")
    with open(report.DEFAULT_CONFIG, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    names = ("D45→B30", "D45→VL (large shift: 5 % dose)")
    config.update(data_root=str(shared_data), output_dir=str(root / "runs"), report_dir=str(root / "report"),
                  normal_dose_every=55, seeds=[0], classical=["nlm"],
                  directions=[d for d in config["directions"] if d["name"] in names],
                  ablation={"directions": ["D45→B30"],
                            "runs": [{"label": "mask none", "overrides": {"mask": "none"}}]})
    config["supervised"]["iterations"] = config["self_supervised"]["iterations"] = 3
    config["supervised"]["fine_tune_iterations"] = 3
    config["adaptation"]["steps"] = config["product_steps"] = 2
    config["product_methods"] = ["noise-matching"]  # the default; its gain estimate alone takes minutes on a CPU
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    report.main(["--config", str(path), "--device", "cpu"])
    return root, config


def test_report_tables_and_files(small_report: tuple[Path, dict]) -> None:
    root, config = small_report
    text = (root / "report" / "report.md").read_text(encoding="utf-8")
    for section in ("## Table 1", "## What the adaptation adds", "## As the product runs it",
                    "## The label-free gain estimate against the truth", "## Ablation"):
        assert section in text, section
    table = text.split("## Table 1")[1].split("##")[0]
    for label in ("Low-dose input", "NLM", "CPCE source-only", "CPCE + alignment (ours)",
                  "CPCE + extra source training (control)", "CPCE + target-noise matching (ours)",
                  "CPCE target-supervised (upper bound)", "CPCE source-only fine-tuned on the target pairs",
                  "Self-supervised, target scans only", "Product control", "Product default: target-noise matching"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {label}"))
        assert "–" not in row and "nan" not in row, row
    for direction in ("d45-b30", "d45-vl-large-shift-5-dose"):
        assert (root / "report" / f"nps-{direction}.png").stat().st_size > 10_000
        assert (root / "runs" / "figures" / f"examples-{direction}.png").stat().st_size > 10_000
        assert not (root / "report" / f"examples-{direction}.png").exists()  # Mayo images stay out of the report


def test_low_dose_row_matches_the_engine_metrics(small_report: tuple[Path, dict]) -> None:
    root, config = small_report
    results = json.loads((root / "report" / "results.json").read_text(encoding="utf-8"))
    domains = load_domains(Path(config["output_dir"]), Path(config["data_root"]), config["normal_dose_every"])
    held_out = domains["b30/L192"]
    expected = [row["psnr_display"] for row in per_slice_metrics(held_out.low_dose, held_out.reference)]
    summary = results["summaries"]["D45→B30"]["Low-dose input"]["psnr_display"]
    assert summary["mean"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert summary["sd"] == pytest.approx(np.std(expected, ddof=1), abs=1e-9)
    gains = results["gains"]["D45→B30"]["alignment"]
    ours = results["summaries"]["D45→B30"]["CPCE + alignment (ours)"]["psnr_display"]["mean"]
    source = results["summaries"]["D45→B30"]["CPCE source-only"]["psnr_display"]["mean"]
    assert gains["over_source"] == pytest.approx(ours - source)


def test_second_run_reuses_every_model(small_report: tuple[Path, dict]) -> None:
    root, config = small_report
    models = sorted((root / "runs" / "models").glob("*.pt"))
    # the shipped source model (copied once), 2 upper bounds from scratch, 2 fine-tuned, 2 self-supervised, per
    # direction the alignment, the control and the noise matching, and the product's default method and its control,
    # 1 ablation run, the shipped general model
    assert len(models) == 1 + 2 + 2 + 2 + (3 + 2) * 2 + 1 + 1
    stamps = {path: path.stat().st_mtime_ns for path in models}
    report.main(["--config", str(root / "config.yaml"), "--device", "cpu"])
    assert {path: path.stat().st_mtime_ns for path in models} == stamps


def test_product_rows_score_what_the_gate_hands_the_user(small_report: tuple[Path, dict]) -> None:
    """Table 1's product rows score the start where the gain gate kept it and the adapted model elsewhere, and the
    estimate table's gains belong to the same runs."""
    root, _ = small_report
    results = json.loads((root / "report" / "results.json").read_text(encoding="utf-8"))
    for name in ("D45→B30", "D45→VL (large shift: 5 % dose)"):
        runs = results["runs"][name]
        source = [row["psnr_display"] for row in runs["CPCE source-only"][0]["slices"]]
        rows = results["product"][name]
        assert [row["method"] for row in rows] == ["noise-matching"]
        for row in rows:
            label = report_writer.PRODUCT_METHODS[row["method"]]
            assert len(runs[label]) == len(row["runs"]) == 1
            for scored, estimate in zip(runs[label], row["runs"]):
                delivered = [slice_row["psnr_display"] for slice_row in scored["slices"]]
                if estimate["kept"] == "start":
                    assert delivered == source
                else:
                    assert np.mean(delivered) - np.mean(source) == pytest.approx(estimate["window_psnr_gain_db"],
                                                                                 abs=1e-3)
            assert row["delivered_db"] == pytest.approx(
                results["summaries"][name][label]["psnr_display"]["mean"]
                - results["summaries"][name]["CPCE source-only"]["psnr_display"]["mean"])
