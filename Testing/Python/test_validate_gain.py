"""The judgement of the product's own runs (training/product_runs.py, summarised by training/validate_gain.py and
the report): what the control is, what the product delivers after its gain gate, the bars each direction is held
to, and the cache names that keep a changed setting from reusing a stale run. The runs themselves are hours of CPU
(docs/evaluation)."""

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the research code in training/ is not an installed package

from LDCTDenoiseLib.adaptation import AdaptationConfig, method_settings  # noqa: E402
from LDCTDenoiseLib.adaptation.settings import DEFAULT_METHOD  # noqa: E402
from training import product_runs, validate_gain  # noqa: E402
from training.report_jobs import job_path  # noqa: E402


def row(direction: str, method: str, gain: float, kept: str) -> dict:
    return {"direction": direction, "method": method, "window_psnr_gain_db": gain, "kept": kept}


def test_the_control_is_the_default_method_without_the_targets_noise_and_without_a_gate():
    control = AdaptationConfig(**product_runs.run_settings(product_runs.CONTROL))
    default = AdaptationConfig(**product_runs.run_settings(DEFAULT_METHOD))
    assert default.match_target_noise and not control.match_target_noise
    assert control.holdout_share == 0.0 and default.holdout_share > 0.0
    # everything else is the product's: the same source pairs, anchor, rate and length
    same = {key: value for key, value in vars(default).items() if key not in ("match_target_noise", "holdout_share")}
    assert same == {key: value for key, value in vars(control).items() if key in same}
    assert product_runs.run_settings("recorruption", 1.5)["recorruption_alpha"] == 1.5
    assert product_runs.run_settings("recorruption", 1.5)["learning_rate"] == method_settings("recorruption")[
        "learning_rate"]


def test_the_product_delivers_the_start_when_the_gate_kept_it_and_is_judged_by_its_bar():
    small, large = "D45→B30", "D45→VL (large shift: 5 % dose)"
    rows = [row(small, "noise-matching", -0.6, "start"), row(small, "noise-matching", -0.5, "adapted"),
            row(small, product_runs.CONTROL, -0.3, "adapted"), row(small, product_runs.CONTROL, -0.5, "adapted"),
            row(large, "noise-matching", 2.6, "adapted"), row(large, "noise-matching", 2.3, "adapted")]
    lines = validate_gain.summary_lines(rows)
    small_line, large_line = lines[2:]
    # the gate let one of two runs through: the product delivers (0 - 0.5) / 2, against the control's -0.4
    assert "| 1/2 | -0.25 | -0.40 | +0.15 | no harm" in small_line
    assert "| 2/2 | +2.45 | – | – | misses the bar (≥ +2.5 dB)" in large_line
    assert product_runs.verdict(small, -0.55, -0.4).startswith("harm")
    assert product_runs.verdict(large, 2.5, None).startswith("meets")


def test_the_gate_is_wrong_only_where_the_gain_was_clear():
    assert product_runs.gate_verdict(row("x", "m", 0.5, "start")) == "**wrong**"
    assert product_runs.gate_verdict(row("x", "m", -0.5, "adapted")) == "**wrong**"
    assert product_runs.gate_verdict(row("x", "m", -0.5, "start")) == "right"
    assert product_runs.gate_verdict(row("x", "m", 0.1, "start")) == "either"


def test_a_product_run_is_named_by_its_start_targets_and_settings():
    direction = {"name": "D45→B30", "target": ["b30/L143"]}
    job = product_runs.product_job(direction, "cpce2d-mayo-d45", True, "recorruption", 0, 300)
    assert job["settings"]["recorruption_alpha"] == method_settings("recorruption")["recorruption_alpha"]
    path = job_path(Path("runs"), job)
    assert path.parent == Path("runs/models")
    assert path.name.startswith("product__d45-b30__recorruption__300steps__seed0__")
    assert job_path(Path("runs"), product_runs.product_job(direction, "cpce2d-mayo-d45", True, "recorruption", 0,
                                                           300)) == path
    others = [product_runs.product_job(direction, "cpce2d-mayo-d45", True, "recorruption", 0, 300, alpha=1.0),
              product_runs.product_job(direction, "cpce2d-mayo-general", True, "recorruption", 0, 300),
              product_runs.product_job(dict(direction, target=["b30/L192"]), "cpce2d-mayo-d45", True, "recorruption",
                                       0, 300),
              product_runs.product_job(direction, "cpce2d-mayo-d45", True, "recorruption", 1, 300)]
    assert len({job_path(Path("runs"), other) for other in others} | {path}) == 5


def test_each_run_shows_the_interval_the_gate_acted_on_and_render_rewrites_the_markdown(tmp_path):
    run = dict(row("D45→B30", "noise-matching", -0.58, "start"), seed=0, true_gain_db=-0.65, estimated_gain_db=1.04,
               interval_db=[float("nan"), float("nan")], difference_interval_hu2=[-20.5, 31.25],
               predicted_gain_vs_reference_db=-0.8, held_out_estimate_db=1.01,
               held_out_difference_interval_hu2=[-3.0, 12.0])
    older = dict(run, seed=1)  # a row from before the held-out interval was kept
    del older["held_out_difference_interval_hu2"]
    results = {"command": "python -m training.validate_gain", "git_commit": "abc", "seconds": 1, "device": "cpu",
               "adaptations": [run, older], "model_choice": [], "training_seconds": 2.0}
    out = tmp_path / "gain.json"
    out.write_text(json.dumps(results), encoding="utf-8")
    validate_gain.main(["--render", "--out", str(out)])
    lines = out.with_suffix(".md").read_text(encoding="utf-8").splitlines()
    first, second = (next(line for line in lines if line.startswith(f"| D45→B30 | noise-matching | {seed} |"))
                     for seed in (0, 1))
    assert "| +1.04 [-20.5, +31.2] | -0.80 | +1.01 [-3.0, +12.0] | start |" in first
    assert "| +1.04 [-20.5, +31.2] | -0.80 | +1.01 | start |" in second
