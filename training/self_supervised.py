"""Self-supervised CPCE-2D denoising from low-dose scans alone: a blind spot with a structured (box) mask.

Noise2Void / Noise2Self train a network to predict each pixel from its neighbours; where the noise is independent from
pixel to pixel the prediction can only learn the signal. CT noise is not independent: the reconstruction kernel
correlates it over a few pixels, so through a one-pixel blind spot the network can read part of the centre's noise off
its neighbours. Following structN2V (Broaddus et al., ISBI 2020, "Removing structured noise with self-supervised
blind-spot networks"), the blind spot is widened to the region in which the noise is correlated: every pixel of a
(2r+1)x(2r+1) box around each training centre is hidden from the network, and the loss compares the output with the
original noisy value at the centre only.

- :func:`noise_correlation_radius` measures r on the scans themselves, so one method fits smooth and sharp kernels.
- :func:`blind_spot_batch` builds the masked network input and the loss mask, :func:`blind_spot_loss` the loss;
  :func:`train_blind_spot` trains.

Denoise afterwards with ``LDCTDenoiseLib.inference.denoise_volume(model, hu_volume, device=...)``.

Measured on Mayo B30 3 mm (trained on L143 quarter dose, 4000 iterations on an H100, scored on L192; low-dose input
27.97 dB display-window PSNR): radius 0 (plain N2V) 28.39 / 28.36 dB (seeds 0 / 1), radius 1 28.14 / 28.39, radius 2
22.9 / 22.6, radius 3 20.6 / 21.0, radius 4 (the estimate) 19.5 / 19.3. At this resolution the anatomy varies on the
same 2-3 px scale as the noise correlation: hiding a box of radius >= 2 removes the signal the centre is predicted
from, and the network regresses to a blurred, contrast-reduced image. A least-squares linear blind-spot predictor
shows the same numbers (27.1, 23.1, 20.5, 18.9 dB for radius 1-4), so it is the data, not the training.
"""

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.adaptation.patches import BODY_THRESHOLD_HU, BodyPatchSampler
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.inference import select_device
from LDCTDenoiseLib.normalization import HU_RANGE, hu_to_model

from .run_files import CHECKPOINT_EVERY, save_checkpoint

METHOD_NAME = "structured blind spot (structN2V-style box mask), CPCE-2D"
TILE = 32  # px: small enough that many tiles lie wholly in soft tissue, large enough for lags up to 9 px
KEEP_QUIETEST = 0.1  # fraction of body tiles (lowest residual variance) that the noise correlation is measured on
MIN_TILES = 16
MAX_TILES = 4000  # caps the memory of the estimate on long series; tiles are taken evenly spaced
BASE_SPACING = 8  # one blind-spot centre per 8x8 cell: 1/64 = 1.6 % of the pixels, structN2V's order of magnitude
REPLACEMENT = "local"  # see blind_spot_batch; on Mayo B30 "local" beat "patch" by 0.7-2 dB at radius 1-3, lost 0.3 at 0
REPLACEMENT_NOTES = {
    "local": "each box pixel: an original pixel r+1 to 2r+2 px from the centre, outside every box",
    "patch": "each box pixel: an original pixel anywhere in the patch, outside every box",
}
MAX_DRAWS = 64  # rejection rounds for the replacement pixels; a round rejects well under half of them
MIN_JITTER = 4  # positions per axis a centre can take inside its cell, so the mask is never a fixed grid


def _body_tiles(volumes: Sequence[np.ndarray], tile: int) -> np.ndarray:
    """Non-overlapping tile x tile blocks lying wholly inside the body (every pixel above -500 HU), as float64."""
    kept = []
    for volume in volumes:
        array = np.asarray(volume)
        array = array[None] if array.ndim == 2 else array
        if array.ndim != 3:
            raise LDCTDenoiseError(f"Expected (z, y, x) volumes or (y, x) slices, got shape {array.shape}.")
        rows, columns = array.shape[1] // tile, array.shape[2] // tile
        for image in array:
            blocks = image[:rows * tile, :columns * tile].reshape(rows, tile, columns, tile).swapaxes(1, 2)
            blocks = blocks.reshape(-1, tile, tile)
            kept.append(blocks[(blocks > BODY_THRESHOLD_HU).all(axis=(1, 2))])
    tiles = np.concatenate(kept) if kept else np.empty((0, tile, tile))
    if len(tiles) > MAX_TILES:
        tiles = tiles[np.linspace(0, len(tiles) - 1, MAX_TILES).astype(int)]
    return tiles.astype(np.float64)


def noise_autocorrelation(volumes: Sequence[np.ndarray], max_lag: int = 9, tile: int = TILE,
                          keep: float = KEEP_QUIETEST) -> np.ndarray:
    """Normalised noise autocorrelation rho(dy, dx) for lags -max_lag..max_lag, shape (2 max_lag + 1,) * 2.

    With no clean image the noise is estimated as what a least-squares quadratic surface does not explain inside
    small tiles that lie wholly in the body: the surface removes the smooth anatomy while hardly touching the noise's
    own correlation (a Gaussian high-pass would shorten it, smoothing across edges would lengthen it). Anatomy left in
    a tile (edges, vessels, organ texture) only adds variance and long-range correlation, so only the ``keep``
    fraction of tiles with the smallest residual variance (at least MIN_TILES; fewer body tiles than that is an error,
    as the median of a handful is too noisy) is used, and the median over them is taken lag by lag. Each tile's
    autocorrelation is computed without wrap-around (zero-padded FFT, divided by the number of overlapping pixel pairs
    of each lag) and normalised by its own variance, so regions of different noise level weigh alike.

    Checked against the true noise (quarter minus full dose, Mayo 3 mm): the radius it gives is 4 for B30 L143 (true
    2), 4 for B30 L192 (true 3 to 5 depending on how the truth is detrended) and 2 for D45 L143 (true 1): anatomy left
    in the tiles lengthens the estimate by one or two pixels. On synthetic Gaussian-filtered noise (sigma 0.7, 1, 1.5
    px; true radius 2, 3, 4) it gives 1, 2, 3: fitting the surface and keeping the quietest tiles shorten it by one.
    """
    if not 1 <= max_lag < tile // 2:
        raise LDCTDenoiseError(f"max_lag must be between 1 and {tile // 2 - 1} for {tile} px tiles, got {max_lag}.")
    tiles = _body_tiles(volumes, tile)
    rows, columns = np.mgrid[0:tile, 0:tile].reshape(2, -1) / float(tile)
    design = np.stack([np.ones_like(rows), rows, columns, rows**2, rows * columns, columns**2], axis=1)
    residual = tiles.reshape(len(tiles), tile * tile)
    residual = (residual - residual @ np.linalg.pinv(design).T @ design.T).reshape(tiles.shape)
    variance = residual.var(axis=(1, 2))
    usable = variance > 1e-6 * max(float(variance.max(initial=0.0)), 1e-12)  # a constant tile has no noise
    if np.count_nonzero(usable) < MIN_TILES:
        raise LDCTDenoiseError(f"Only {np.count_nonzero(usable)} {tile}x{tile} px tiles lie wholly inside the body "
                               f"(above {BODY_THRESHOLD_HU:g} HU) with noise in them; at least {MIN_TILES} are needed "
                               f"to measure the noise correlation. Give the blind-spot radius explicitly.")
    residual, variance = residual[usable], variance[usable]
    count = min(len(residual), max(MIN_TILES, int(round(keep * len(residual)))))
    residual = residual[np.argsort(variance, kind="stable")[:count]]
    spectrum = np.fft.rfft2(residual, s=(2 * tile, 2 * tile))
    products = np.fft.irfft2(np.abs(spectrum) ** 2, s=(2 * tile, 2 * tile))
    pairs = np.fft.irfft2(np.abs(np.fft.rfft2(np.ones((tile, tile)), s=(2 * tile, 2 * tile))) ** 2)
    lags = np.r_[0:max_lag + 1, -max_lag:0]  # FFT order: 0, 1, ..., max_lag, -max_lag, ..., -1
    covariance = products[:, lags][:, :, lags] / np.round(pairs[lags][:, lags])
    rho = np.median(covariance / covariance[:, :1, :1], axis=0)
    return np.fft.fftshift(rho)


def ring_maxima(rho: np.ndarray) -> np.ndarray:
    """max |rho| over the lags at Chebyshev distance k from the centre, for k = 0 .. max_lag.

    Chebyshev rings because the blind spot is a square: the pixels just outside a box of radius r are those at
    Chebyshev distance r + 1. Absolute values because a negative correlation predicts the noise as well as a
    positive one (B30 noise has a -0.15 lobe two rows away).
    """
    centre = rho.shape[0] // 2
    lag = np.abs(np.mgrid[-centre:centre + 1, -centre:centre + 1]).max(axis=0)
    return np.array([np.abs(rho[lag == k]).max() for k in range(centre + 1)])


def noise_correlation_radius(volumes: Sequence[np.ndarray], threshold: float = 0.1, max_radius: int = 8) -> int:
    """Radius r of the blind-spot box: the smallest r at which the noise correlation has fallen below ``threshold``
    just outside the (2r+1)^2 box, i.e. max |rho| over the lags at Chebyshev distance r + 1 (:func:`ring_maxima`) is
    below ``threshold``; at most ``max_radius``.

    White noise gives 0, a one-pixel blind spot (plain Noise2Void). The first crossing is taken rather than the last
    lag above the threshold because the estimate of weak far correlations is noisy and anatomy left in the tiles
    adds some. CPCE-2D sees 8 px around a pixel, so a box of radius 8 would leave it nothing to predict from.
    """
    if not 0.0 < threshold < 1.0:
        raise LDCTDenoiseError(f"threshold must lie between 0 and 1, got {threshold}.")
    if max_radius < 0:
        raise LDCTDenoiseError(f"max_radius must be >= 0, got {max_radius}.")
    rings = ring_maxima(noise_autocorrelation(volumes, max_lag=max_radius + 1))
    below = np.flatnonzero(rings[1:] < threshold)  # below[0] = r means the ring at distance r + 1 is uncorrelated
    return int(below[0]) if below.size else max_radius


def mask_spacing(radius: int) -> int:
    """Side of the grid cell holding one blind-spot centre: 8 px (1.6 % of the pixels are centres) unless the box
    needs more room; the box then still fits with MIN_JITTER positions per axis, so boxes never overlap."""
    return max(BASE_SPACING, 2 * radius + MIN_JITTER)


def blind_spot_batch(patches: np.ndarray, radius: int, rng: np.random.Generator, spacing: int | None = None,
                     replacement: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masked network input and loss mask for a batch (B, 1, P, P): one centre per ``spacing`` x ``spacing`` cell.

    Each centre sits at a random position of its cell (a jittered grid with a random offset per patch), far enough
    from the cell's borders that its (2r+1)^2 box stays inside the cell, so boxes never overlap. Every pixel of a box
    is replaced by an independent copy of an original pixel that lies outside every box of the patch and more than r
    px (Chebyshev) from the box's centre, so its noise is uncorrelated with the centre's and is not hidden anywhere
    else either. ``replacement`` says where that pixel is drawn:

    - "local": uniformly from the ring of pixels r + 1 to 2r + 2 px from the centre (Noise2Void's neighbour
      replacement, widened). The box keeps the local grey level, so the masked input looks like the images seen at
      inference, only with the fine noise texture shuffled.
    - "patch": uniformly from the whole patch. Values from air or bone land in soft tissue.

    The loss mask is True at the centres only. Returns (masked copy of ``patches``, boolean mask of the same shape).
    """
    replacement = REPLACEMENT if replacement is None else replacement
    batch, channels, height, width = patches.shape
    spacing = mask_spacing(radius) if spacing is None else int(spacing)
    box = 2 * radius + 1
    if channels != 1 or radius < 0 or spacing < box or min(height, width) < spacing:
        raise LDCTDenoiseError(f"Cannot place {box}x{box} blind spots on a {spacing} px grid in patches of shape "
                               f"{patches.shape}.")
    if replacement not in ("local", "patch"):
        raise LDCTDenoiseError(f"replacement must be 'local' or 'patch', got {replacement!r}.")
    cells_y, cells_x = height // spacing, width // spacing
    shape = (batch, cells_y, cells_x)
    origin_y = rng.integers(0, height - cells_y * spacing + 1, size=(batch, 1, 1))
    origin_x = rng.integers(0, width - cells_x * spacing + 1, size=(batch, 1, 1))
    centre_y = origin_y + spacing * np.arange(cells_y)[:, None] + radius + rng.integers(0, spacing - box + 1, shape)
    centre_x = origin_x + spacing * np.arange(cells_x)[None, :] + radius + rng.integers(0, spacing - box + 1, shape)
    offsets = np.arange(-radius, radius + 1)
    box_shape = shape + (box, box)
    box_y = np.broadcast_to(centre_y[..., None, None] + offsets[:, None], box_shape)
    box_x = np.broadcast_to(centre_x[..., None, None] + offsets[None, :], box_shape)
    index = np.broadcast_to(np.arange(batch)[:, None, None, None, None], box_shape)
    hidden = np.zeros((batch, height, width), dtype=bool)
    hidden[index, box_y, box_x] = True
    source_y, source_x = np.empty(box_shape, np.int64), np.empty(box_shape, np.int64)
    todo = np.ones(box_shape, dtype=bool)
    reach = 2 * radius + 2
    around_y, around_x = np.broadcast_to(centre_y[..., None, None], box_shape), np.broadcast_to(
        centre_x[..., None, None], box_shape)
    for attempt in range(MAX_DRAWS):
        count = int(todo.sum())
        if replacement == "local" and attempt < MAX_DRAWS // 2:
            source_y[todo] = around_y[todo] + rng.integers(-reach, reach + 1, count)
            source_x[todo] = around_x[todo] + rng.integers(-reach, reach + 1, count)
        else:  # "patch", or the rare local ring that is all hidden or outside the patch
            source_y[todo], source_x[todo] = rng.integers(0, height, count), rng.integers(0, width, count)
        inside_patch = (source_y >= 0) & (source_y < height) & (source_x >= 0) & (source_x < width)
        clipped_y, clipped_x = np.clip(source_y, 0, height - 1), np.clip(source_x, 0, width - 1)
        near = np.maximum(np.abs(source_y - around_y), np.abs(source_x - around_x)) <= radius
        todo = ~inside_patch | near | hidden[index, clipped_y, clipped_x]
        if not todo.any():
            break
    else:
        raise LDCTDenoiseError("Could not draw replacement pixels outside the blind spots.")  # needs P ~ 2r + 1
    masked = np.array(patches, copy=True)
    masked[index, 0, box_y, box_x] = patches[index, 0, source_y, source_x]
    centres = np.zeros(patches.shape, dtype=bool)
    centres[np.broadcast_to(np.arange(batch)[:, None, None], shape), 0, centre_y, centre_x] = True
    return masked, centres


def blind_spot_loss(output: torch.Tensor, original: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """MSE between the output and the original (unmasked) noisy input at the blind-spot centres only: elsewhere the
    network saw the pixel it is asked for, so the loss there would teach it the identity."""
    return (output - original).square()[centres].mean()


def train_blind_spot(volumes: Sequence[np.ndarray], iterations: int, device: str = "auto", seed: int = 0,
                     batch_size: int = 32, patch_size: int = 64, radius: int | None = None,
                     learning_rate: float = 3e-4,
                     progress: Callable[[int, int], None] | None = None,
                     checkpoint: Path | None = None) -> tuple[CPCE2D, dict]:
    """Train CPCE-2D with the structured blind spot on low-dose HU volumes (z, y, x) alone.

    Patches are centred inside the body (:class:`BodyPatchSampler`, with flips and rotations); the radius is
    measured on ``volumes`` when not given. Adam with a cosine decay of the learning rate to 0; the loss is the MSE
    in model units (:func:`hu_to_model`) at the blind-spot centres. Weights and patches come from ``seed``, so a CPU
    run is reproducible. Returns the network on the CPU in eval mode and a description of the run for the report.
    With ``checkpoint``, the state (weights, optimiser, schedule, the numpy generator that draws patches and masks,
    the losses) is saved there every ``CHECKPOINT_EVERY`` iterations and a run resumes from it, ending with the
    weights an uninterrupted run would have: 4,000 iterations take hours on a CPU.
    """
    if iterations < 1 or batch_size < 1:
        raise LDCTDenoiseError(f"iterations and batch_size must be >= 1, got {iterations} and {batch_size}.")
    stacks = [(np.asarray(volume, dtype=np.float32),) for volume in volumes]
    if radius is None:
        radius, estimated = noise_correlation_radius([stack[0] for stack in stacks]), True
    else:
        estimated = False
    spacing = mask_spacing(radius)
    if patch_size < max(spacing, 9):
        raise LDCTDenoiseError(f"patch_size {patch_size} is smaller than the {spacing} px blind-spot grid cell.")
    target = select_device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = CPCE2D().to(target).train()  # initialised on the CPU first, so the weights do not depend on the device
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations)
    sampler = BodyPatchSampler(stacks, patch_size, rng)
    losses, first, elapsed = [], 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["numpy_rng"]
        losses = list(state["losses"])
        first, elapsed = state["iteration"], state["elapsed_s"]
        print(f"Resuming {checkpoint.stem} at iteration {first}.", flush=True)
    started = time.perf_counter()
    for iteration in range(first, iterations):
        (patches,) = sampler.sample(batch_size)
        clean_input = hu_to_model(patches)
        masked, centres = blind_spot_batch(clean_input, radius, rng, spacing)
        inputs = torch.from_numpy(masked).to(target, non_blocking=True)
        targets = torch.from_numpy(clean_input).to(target, non_blocking=True)
        weights = torch.from_numpy(centres).to(target, non_blocking=True)
        loss = blind_spot_loss(model(inputs), targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.detach().cpu())
        if progress is not None:
            progress(iteration + 1, iterations)
        done = iteration + 1
        if checkpoint is not None and done % CHECKPOINT_EVERY == 0 and done < iterations:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "schedule": schedule.state_dict(), "numpy_rng": rng.bit_generator.state,
                             "losses": losses, "iteration": done,
                             "elapsed_s": elapsed + time.perf_counter() - started}, checkpoint)
    final = torch.stack(losses[-max(1, iterations // 10):]).mean().item()
    seconds = elapsed + time.perf_counter() - started
    info = {
        "method": METHOD_NAME,
        "radius": int(radius),
        "radius_estimated": estimated,
        "mask_spacing": spacing,
        "mask_fraction": 1.0 / spacing**2,
        "masked_input_fraction": (2 * radius + 1) ** 2 / spacing**2,
        "replacement": REPLACEMENT_NOTES[REPLACEMENT],
        "iterations": int(iterations),
        "batch_size": int(batch_size),
        "patch_size": int(patch_size),
        "learning_rate": float(learning_rate),
        "seed": int(seed),
        "device": str(target),
        "final_loss_rmse_hu": math.sqrt(final) * HU_RANGE,
        "seconds": seconds,
        "seconds_per_iteration": seconds / iterations,
    }
    return model.cpu().eval(), info
