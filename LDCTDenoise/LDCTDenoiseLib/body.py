"""What of a CT slice is the patient (with the table): the one body test of the engine.

The denoiser sends only the body to the network (air far from it carries no anatomy), the adaptation centres its
patches in it, and the gain estimate and the noise estimate score inside it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

AIR_HU = -1000.0
BODY_HU = -500.0  # smoothed HU above this is the patient or the table (air is about -1000, lung -900 to -500 inside)
SMOOTH_PX = 2.0  # noise in air never reaches BODY_HU after this smoothing, even at 5 % dose with a sharp kernel
NETWORK_BLOCK_PX = 8  # the network mask is decided per 8 x 8 block: far cheaper than per pixel; air needs no finer
# A block of air averages -1000 +- 15 HU even at 5 % dose (64 pixels); one fifth of soft tissue lifts it above -800.
NETWORK_BLOCK_HU = -800.0
NETWORK_MARGIN_BLOCKS = 2  # the denoised region reaches 2 blocks beyond such blocks: at least 8 px past any tissue


def body_outline(volume: np.ndarray) -> np.ndarray:
    """Everything denser than air in each slice (z, y, x), filled (the patient with lungs and bowel gas, and the
    table), from the image smoothed by 2 px."""
    return np.stack([ndimage.binary_fill_holes(ndimage.gaussian_filter(np.asarray(image, np.float32), SMOOTH_PX)
                                               > BODY_HU) for image in volume]) if len(volume) else \
        np.zeros(np.shape(volume), dtype=bool)


def network_mask(volume: np.ndarray) -> np.ndarray:
    """The pixels the denoiser computes (z, y, x): 8 x 8 blocks whose mean is above :data:`NETWORK_BLOCK_HU` (a
    fifth of tissue or more: thin structures, the skin, the table count), filled, and grown by 2 blocks; elsewhere
    (air far from the body, outside the reconstruction circle) the output is the input.

    Any pixel denser than air is within 8 px of such a block's edge or in it, so the mask holds every body pixel
    and at least 8 px around it. A partial block at the right or bottom edge is completed with air.
    """
    volume = np.asarray(volume, dtype=np.float32)
    n_slices, height, width = volume.shape
    block = NETWORK_BLOCK_PX
    rows, columns = -(-height // block), -(-width // block)
    padded = np.full((n_slices, rows * block, columns * block), AIR_HU, dtype=np.float32)
    padded[:, :height, :width] = volume
    means = padded.reshape(n_slices, rows, block, columns, block).mean(axis=(2, 4))
    grow = ndimage.generate_binary_structure(2, 2)  # square growth: whole blocks around the corners too
    blocks = np.stack([ndimage.binary_dilation(ndimage.binary_fill_holes(mean > NETWORK_BLOCK_HU), grow,
                                               iterations=NETWORK_MARGIN_BLOCKS) for mean in means]) \
        if n_slices else np.zeros((0, rows, columns), dtype=bool)
    return blocks.repeat(block, axis=1).repeat(block, axis=2)[:, :height, :width]
