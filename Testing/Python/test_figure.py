"""Comparison figure, metrics tables and loss curve: real PNG/CSV/JSON files read back, figures inspected."""

import csv
import json
import math

import matplotlib.image
import numpy as np
import pytest

from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.figure import LOSS_TERM_NAMES, comparison_figure, loss_curve, loss_curve_figure, write_metrics
from LDCTDenoiseLib.metrics import Roi, per_slice_metrics


def synthetic_slice(seed: int, noise_sd: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96] - 48
    image = np.where(xx**2 + yy**2 < 40**2, 40.0, -1000.0)
    image[(xx - 12) ** 2 + yy**2 < 8**2] = 140.0
    return (image + rng.normal(0.0, noise_sd, image.shape)).astype(np.float32)


ROI = Roi(x=40, y=30, width=32, height=24)


@pytest.fixture
def slices() -> dict[str, np.ndarray]:
    return {
        "Low dose": synthetic_slice(1, 40.0),
        "CPCE": synthetic_slice(2, 10.0),
        "NLM": synthetic_slice(3, 15.0),
        "Normal dose": synthetic_slice(4, 0.0),
    }


def test_figure_is_written_non_blank_and_scales_with_the_methods(tmp_path, slices) -> None:
    metrics = {name: per_slice_metrics(image, slices["Normal dose"])[0] for name, image in slices.items()}
    four = comparison_figure(slices, tmp_path / "four.png", roi=ROI, reference="Normal dose", metrics=metrics,
                             title="Synthetic comparison")
    two = comparison_figure(dict(list(slices.items())[:2]), tmp_path / "two.png", roi=ROI)
    one_row = comparison_figure(dict(list(slices.items())[:2]), tmp_path / "one_row.png")
    assert four == tmp_path / "four.png" and four.is_file()

    pixels = {path.stem: matplotlib.image.imread(path) for path in (four, two, one_row)}
    assert pixels["four"].shape[1] > pixels["two"].shape[1]
    assert pixels["two"].shape[0] > pixels["one_row"].shape[0]  # the zoomed ROI adds a row
    grey = pixels["four"][..., :3].mean(axis=2)
    assert grey.std() > 0.1 and grey.min() < 0.1 and grey.max() > 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.png", "one_row.png", "two.png"]  # no temp files


def test_figure_leaves_no_pyplot_state(tmp_path, slices) -> None:
    import matplotlib.pyplot as plt

    comparison_figure(slices, tmp_path / "figure.png", roi=ROI)
    assert plt.get_fignums() == []


def test_figure_errors(tmp_path, slices) -> None:
    with pytest.raises(LDCTDenoiseError, match="Reference 'Full dose' is not one of the images"):
        comparison_figure(slices, tmp_path / "x.png", reference="Full dose")
    with pytest.raises(LDCTDenoiseError, match="does not fit inside the 96x96"):
        comparison_figure(slices, tmp_path / "x.png", roi=Roi(x=80, y=0, width=32, height=8))
    with pytest.raises(ValueError, match="'bad' must be a 2-D slice"):
        comparison_figure({"bad": np.zeros((2, 8, 8))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one image"):
        comparison_figure({}, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_metrics_round_trip_through_csv_and_json(tmp_path) -> None:
    metrics = {
        "Low dose": {"psnr_display": 28.5, "ssim_display": 0.81, "rmse": 31.25},
        "CPCE": {"psnr_display": 33.125, "ssim_display": 0.905, "rmse": 18.0, "roi_sd": 9.5},
        "Normal dose": {"psnr_display": math.inf},
    }
    csv_path, json_path = write_metrics(metrics, tmp_path / "results" / "slice_12.metrics")
    assert csv_path.name == "slice_12.metrics.csv" and json_path.name == "slice_12.metrics.json"

    with csv_path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["method"] for row in rows] == list(metrics)
    assert list(rows[0]) == ["method", "psnr_display", "ssim_display", "rmse", "roi_sd"]
    for row in rows:
        for key, value in metrics[row["method"]].items():
            assert float(row[key]) == value
    assert rows[0]["roi_sd"] == ""

    document = json.loads(json_path.read_text())
    assert document["CPCE"] == metrics["CPCE"]
    assert document["Normal dose"] == {"psnr_display": None}  # strict JSON has no inf
    assert sorted(p.name for p in csv_path.parent.iterdir()) == [csv_path.name, json_path.name]


def adaptation_rows(terms: tuple[str, ...], steps: int = 40) -> list[dict]:
    """Step rows as the adaptation job reports them: the used terms, falling, the anchor 0 at step 1 (the model has
    not moved yet), plus numbers that are no losses."""
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, **{term: (index + 1) * 1e-3 / step for index, term in enumerate(terms)}}
        if "anchor" in row:
            row["anchor"] = 0.0 if step == 1 else 1e-5 * step
        row["mask_keep"] = 0.6
        if step % 10 == 0:
            row["target_psnr"] = 30.0
        rows.append(row)
    return rows


def legend_texts(figure) -> list[str]:
    axis, = figure.axes
    return [text.get_text() for text in axis.get_legend().get_texts()]


def named_lines(figure) -> dict:
    """The smoothed line of each term by its legend name (the raw lines beneath carry no label)."""
    axis, = figure.axes
    return {line.get_label(): line for line in axis.get_lines() if not line.get_label().startswith("_")}


def test_loss_curve_draws_every_reported_term_by_name_and_nothing_else() -> None:
    noise_matching = loss_curve(adaptation_rows(("loss", "reconstruction", "anchor")))
    assert legend_texts(noise_matching) == ["total", "reconstruction (MSE)", "anchor"]
    axis, = noise_matching.axes
    assert axis.get_xlabel() == "adaptation step" and axis.get_ylabel() == "loss (log scale)"
    assert axis.get_yscale() == "log"
    assert all(np.isfinite(line.get_ydata()).any() for line in named_lines(noise_matching).values())
    anchor = named_lines(noise_matching)["anchor"]
    raw_anchor, = (line for line in axis.get_lines() if line.get_color() == anchor.get_color() and line is not anchor)
    assert np.isnan(raw_anchor.get_ydata()[0]) and np.isfinite(raw_anchor.get_ydata()[1:]).all()  # a gap at step 1

    everything = loss_curve(adaptation_rows(tuple(LOSS_TERM_NAMES)), title="all terms")
    assert legend_texts(everything) == list(LOSS_TERM_NAMES.values())
    assert everything.axes[0].get_title() == "all terms"
    assert len(set(LOSS_TERM_NAMES.values())) == len(LOSS_TERM_NAMES)
    colours = {name: line.get_color() for name, line in named_lines(everything).items()}
    assert all(colours[name] == line.get_color() for name, line in named_lines(noise_matching).items())


def test_loss_curve_figure_writes_a_png_and_refuses_a_history_without_losses(tmp_path) -> None:
    import matplotlib.pyplot as plt

    png = loss_curve_figure(adaptation_rows(("loss", "reconstruction"), steps=1), tmp_path / "loss.png", "one step")
    assert png == tmp_path / "loss.png" and matplotlib.image.imread(png).shape[1] > 500
    assert plt.get_fignums() == [] and [p.name for p in tmp_path.iterdir()] == ["loss.png"]
    with pytest.raises(LDCTDenoiseError, match="no loss history"):
        loss_curve_figure([], tmp_path / "empty.png")
    with pytest.raises(LDCTDenoiseError, match="none of the loss terms"):
        loss_curve_figure([{"step": 1, "mask_keep": 0.5}], tmp_path / "none.png")
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]
