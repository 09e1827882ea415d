"""How much an adapted model helps on scans without a normal-dose reference: Stein's unbiased risk estimate (SURE)
for correlated Gaussian noise, on held-out target slices.

For a scan y = x + n with n ~ N(0, Σ) and a denoiser f, E‖f(y) - x‖² = E‖f(y) - y‖² - tr Σ + 2 E tr(Σ J_f(y)), with
J_f the Jacobian of f at y. The trace is estimated with probes b drawn with covariance Σ (the target's own noise
model, ``target_noise.py``): E[bᵀ J_f(y) b] = tr(J_f Σ), J_f b computed exactly by forward-mode differentiation.
Unlike the recorruption loss, which ranks models at the recorrupted noise level (1 + α²)Σ, SURE estimates the error
at the scan's own noise level, the one the user denoises. Its one assumption is the noise model: an error k in the
noise variance moves each model's estimate by 2(k - 1) tr(ΣJ), so two models are compared with the same probes and
the same noise model, and the estimate is validated against the Mayo references (``training/validate_gain.py``).

The error is taken where the display window shows tissue: pixels whose smoothed HU lie in the window W/L 400/40,
inside the body, the region that the report's window PSNR weighs. Its confidence interval is a bootstrap over
32² blocks of held-out slices (noise is independent between distant blocks; the anatomy differs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..body import BODY_HU
from ..errors import LDCTDenoiseError
from ..metrics import WINDOW_CENTER, WINDOW_WIDTH
from ..normalization import HU_RANGE, hu_to_model, model_to_hu
from ..progress import CancelCheck, check_cancel
from .target_noise import TargetNoise

BLOCK_PX = 32
PROBES = 2
BOOTSTRAP = 2000
CONFIDENCE = 0.95
SMOOTH_MM = 2.0
# The noise variance the decision allows for. SURE's difference between two models moves by
# 2 (k - 1) (tr ΣJ_adapted - tr ΣJ_start) when the true variance is k times the estimate, so a model is only kept
# when it wins at both ends of the band. The noise estimate's SD read 0.97-1.06 times the truth on the six Mayo
# quarter-dose series, 0.98-1.05 on the simulator's, and 0.87-1.04 on the reliable full-dose ones
# (docs/evaluation/noise-estimate.md): +-10 % covers every low-dose series measured.
NOISE_VARIANCE_BAND = (0.9 ** 2, 1.1 ** 2)
# Wider dB intervals are not stated to the user: an error estimate near zero at one end of the band makes the dB
# bound run away (+11 dB on Mayo L109 where the error difference was -112 to +44 HU²)
MAX_STATED_DB_WIDTH = 3.0


def scored_mask(image: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Tissue the display window shows: smoothed HU within W/L 400/40, inside the filled body outline."""
    smooth = ndimage.gaussian_filter(np.asarray(image, np.float64), SMOOTH_MM / pixel_mm)
    body = ndimage.binary_fill_holes(ndimage.binary_opening(smooth > BODY_HU, iterations=3))
    low, high = WINDOW_CENTER - WINDOW_WIDTH / 2.0, WINDOW_CENTER + WINDOW_WIDTH / 2.0
    return body & (smooth >= low) & (smooth <= high)


def _block_sums(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` over the mask and mask pixel counts, per BLOCK_PX² block (flattened)."""
    rows, columns = (size // BLOCK_PX * BLOCK_PX for size in mask.shape)
    shape = (rows // BLOCK_PX, BLOCK_PX, columns // BLOCK_PX, BLOCK_PX)
    masked = np.where(mask, values, 0.0)[:rows, :columns].reshape(shape).sum(axis=(1, 3))
    counts = mask[:rows, :columns].reshape(shape).sum(axis=(1, 3))
    return masked.ravel(), counts.ravel()


def sure_terms(models: Sequence[torch.nn.Module], image: np.ndarray, levels: np.ndarray, noise: TargetNoise,
               mask: np.ndarray, generator: torch.Generator, device: torch.device,
               probes: int = PROBES) -> dict[str, np.ndarray]:
    """Per BLOCK_PX² block, summed over the mask (the models in eval mode on ``device``): ``residual`` ‖f(y) - y‖²
    and ``divergence`` bᵀJ_f b (models x blocks, HU²), ``variance`` (the noise model's tr Σ, blocks) and
    ``pixels``. SURE = residual - variance + 2 divergence. Every model sees the same probes, so their difference
    carries no probe noise that they share.
    """
    y = torch.from_numpy(hu_to_model(np.asarray(image, np.float32)))[None, None].to(device)
    level = torch.from_numpy(np.asarray(levels, np.float32))[None, None].to(device)
    draws = [noise.draw(level, generator) for _ in range(probes)]
    inside = mask & (image >= -1024.0)  # outside the field of view the input is kept and carries no noise
    residuals, divergences = [], []
    for model in models:
        with torch.no_grad():
            output = model_to_hu(model(y)[0, 0].cpu().numpy().astype(np.float64))
            divergence = np.zeros(image.shape)
            for probe in draws:
                # J b in HU: the model maps (HU + 1024) / 4096 to the same scale, so the two scalings cancel
                _, tangent = torch.func.jvp(model, (y,), (probe / HU_RANGE,))
                divergence += (probe[0, 0] * tangent[0, 0] * HU_RANGE).double().cpu().numpy()
        residuals.append(_block_sums((output - image) ** 2, inside)[0])
        divergences.append(_block_sums(divergence / len(draws), inside)[0])
    variance, pixels = _block_sums(np.asarray(levels, np.float64) ** 2, inside)
    return {"residual": np.stack(residuals), "divergence": np.stack(divergences), "variance": variance,
            "pixels": pixels}


@dataclass
class GainEstimate:
    """The adapted model against the starting one on held-out slices, without a reference (SURE).

    ``mse_*`` and ``gain_db`` take the noise model as measured; the intervals hold for every noise variance within
    :data:`NOISE_VARIANCE_BAND` of it, each with its bootstrap interval.
    """

    mse_start: float  # HU², in the window's tissue
    mse_adapted: float
    gain_db: float
    interval_db: tuple[float, float]  # nan where an MSE estimate is not positive somewhere in the band
    difference_interval_hu2: tuple[float, float]  # MSE of the adapted minus the starting model
    slices: int
    pixels: int
    confidence: float = CONFIDENCE
    details: dict = field(default_factory=dict)

    @property
    def keep_adapted(self) -> bool:
        """The "no harm" rule: keep the adapted model only when it has the lower error with the whole interval,
        at every noise level the noise estimate allows."""
        return self.difference_interval_hu2[1] < 0.0

    @property
    def rmse_start_hu(self) -> float:
        return float(np.sqrt(max(self.mse_start, 0.0)))

    @property
    def rmse_adapted_hu(self) -> float:
        return float(np.sqrt(max(self.mse_adapted, 0.0)))

    def summary(self) -> dict:
        return {"method": "SURE for correlated Gaussian noise on held-out target slices (no reference)",
                "gain_db": round(self.gain_db, 3),
                "interval_db": [round(value, 3) for value in self.interval_db],
                "difference_interval_hu2": [round(value, 1) for value in self.difference_interval_hu2],
                "noise_variance_band": list(NOISE_VARIANCE_BAND), "confidence": self.confidence,
                "rmse_start_hu": round(self.rmse_start_hu, 2), "rmse_adapted_hu": round(self.rmse_adapted_hu, 2),
                "slices": self.slices, "pixels": self.pixels, "kept": "adapted" if self.keep_adapted else "start",
                **self.details}

    def sentence(self, start_name: str = "the starting model") -> str:
        """What the user is told: the intervals only. The point estimates move by several dB within the noise
        estimate's accuracy (measured against the references: docs/evaluation/gain-estimate.md)."""
        low, high = self.difference_interval_hu2
        slices = f"{self.slices} held-out slice{'s' if self.slices != 1 else ''}"
        text = (f"On {slices} (no reference), the adapted model's squared error in the "
                f"window's tissue differs from {start_name}'s by {low:+.0f} to {high:+.0f} HU²")
        db_low, db_high = self.interval_db
        if np.isfinite([db_low, db_high]).all() and db_high - db_low <= MAX_STATED_DB_WIDTH:
            text += f" (a gain of {db_low:+.2f} to {db_high:+.2f} dB)"
        else:
            text += " (too uncertain to state in dB)"
        band = np.sqrt(NOISE_VARIANCE_BAND[1]) - 1.0
        text += f" ({self.confidence:.0%} interval, for a noise level within its estimate's ±{band:.0%})."
        if self.keep_adapted:
            return text + " The adapted model is better: kept."
        return text + f" It is not clearly better: {start_name} is kept."


def _gain_db(start: np.ndarray, adapted: np.ndarray) -> np.ndarray:
    start, adapted = np.asarray(start, np.float64), np.asarray(adapted, np.float64)
    valid = (start > 0) & (adapted > 0)
    return np.where(valid, 10.0 * np.log10(np.where(valid, start, 1.0) / np.where(valid, adapted, 1.0)), np.nan)


def estimate_gain(start: torch.nn.Module, adapted: torch.nn.Module, volumes: Sequence[np.ndarray],
                  noises: Sequence[TargetNoise], pixel_mm: Sequence[float], device: torch.device, seed: int = 0,
                  cancel: Optional[CancelCheck] = None) -> GainEstimate:
    """SURE of both models on every slice of ``volumes`` (held-out HU slices, (z, y, x) each), with bootstrap
    intervals over blocks, at every noise variance of :data:`NOISE_VARIANCE_BAND`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    models = [copy.deepcopy(model).to(device).eval() for model in (start, adapted)]  # the callers' stay where they are
    terms, n_slices = [], 0
    for volume, noise, size in zip(volumes, noises, pixel_mm):
        for index, image in enumerate(volume):
            check_cancel(cancel)
            mask = scored_mask(image, size)
            if not mask.any():
                continue
            terms.append(sure_terms(models, image, noise.levels[index], noise, mask, generator, device))
            n_slices += 1
    if not n_slices:
        raise LDCTDenoiseError("The held-out slices show no tissue in the display window; the gain cannot be "
                               "estimated.")
    merged = {key: np.concatenate([term[key] for term in terms], axis=-1) for key in terms[0]}
    keep = merged["pixels"] > 0
    merged = {key: value[..., keep] for key, value in merged.items()}
    counts = merged["pixels"]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, counts.size, size=(BOOTSTRAP, counts.size))
    pixels = counts[picks].sum(axis=1)
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    differences, gains, point = [], [], {}
    for scale in (NOISE_VARIANCE_BAND[0], 1.0, NOISE_VARIANCE_BAND[1]):
        # SURE with the noise covariance scaled: residual - scale tr Σ + 2 scale tr(ΣJ)
        sums = merged["residual"] - scale * merged["variance"] + 2.0 * scale * merged["divergence"]
        resampled = sums[:, picks].sum(axis=2) / pixels
        differences.append(np.percentile(resampled[1] - resampled[0], [tail, 100.0 - tail]))
        gain = _gain_db(resampled[0], resampled[1])  # NaN where an MSE estimate is not positive
        gains.append(np.percentile(gain, [tail, 100.0 - tail]) if np.isfinite(gain).all() else (np.nan, np.nan))
        point[scale] = sums.sum(axis=1) / counts.sum()
    mse = point[1.0]
    per_pixel = {key: (value.sum(axis=-1) / counts.sum()).round(3).tolist() for key, value in merged.items()
                 if key != "pixels"}
    return GainEstimate(float(mse[0]), float(mse[1]), float(_gain_db(mse[0], mse[1])),
                        (float(np.min([low for low, _ in gains])), float(np.max([high for _, high in gains]))),
                        (float(min(low for low, _ in differences)), float(max(high for _, high in differences))),
                        n_slices, int(counts.sum()), details={"terms_hu2": per_pixel})
