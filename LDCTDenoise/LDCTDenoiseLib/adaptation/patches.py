"""Random training patches centred inside the body, with flips and 90-degree rotations, for any aligned volumes.

Air around the patient teaches nothing about noise in tissue, so patch centres are drawn from pixels above -500 HU.
Memory stays O(slices): instead of listing every body pixel (hundreds of MB for a 100-slice series), each slice
keeps only its count of valid centres; a slice is drawn in proportion to it and a centre inside it by rejection.
The same sampler serves source pairs (body taken from the normal-dose image) and unlabeled target scans; a caller
may give its own masks of allowed centres instead (recorruption: the filled body outline, lungs included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..errors import LDCTDenoiseError

BODY_THRESHOLD_HU = -500.0
REJECTION_TRIES = 32


class BodyPatchSampler:
    """Aligned patches from a list of stacks; each stack is a tuple of same-shape (z, y, x) HU volumes.

    ``body_from`` picks the volume of each stack that decides where the body is (pixels above
    ``BODY_THRESHOLD_HU``); ``centre_masks`` (one bool (z, y, x) array per stack) replaces that rule. :meth:`sample`
    returns one float32 (batch, 1, patch, patch) HU array per volume of a stack, the same crop, flip and rotation in
    all of them.
    """

    def __init__(self, stacks: Sequence[tuple[np.ndarray, ...]], patch_size: int, rng: np.random.Generator,
                 body_from: int = -1, centre_masks: Optional[Sequence[np.ndarray]] = None) -> None:
        self.stacks = [tuple(stack) for stack in stacks]
        self.patch_size = int(patch_size)
        self.rng = rng
        self.body_from = body_from
        self.centre_masks = None if centre_masks is None else [np.asarray(mask, bool) for mask in centre_masks]
        if self.centre_masks is not None and [mask.shape for mask in self.centre_masks] != [
                stack[0].shape for stack in self.stacks]:
            raise LDCTDenoiseError("Patch sampling needs one centre mask per stack, shaped like its volumes.")
        half = self.patch_size // 2
        weights, slices = [], []
        for stack_index, stack in enumerate(self.stacks):
            shape = stack[0].shape
            if any(volume.shape != shape for volume in stack) or len(shape) != 3:
                raise LDCTDenoiseError(f"Patch sampling needs aligned (z, y, x) volumes, got shapes "
                                       f"{[volume.shape for volume in stack]}.")
            if min(shape[1:]) < self.patch_size:
                raise LDCTDenoiseError(f"Slices of {shape[1]} x {shape[2]} px are smaller than the "
                                       f"{self.patch_size} px patches.")
            for z in range(shape[0]):
                count = int(np.count_nonzero(self._centre_window(stack_index, z)))
                if count:
                    weights.append(count)
                    slices.append((stack_index, z))
        if not slices:
            raise LDCTDenoiseError(f"No pixel above {BODY_THRESHOLD_HU:g} HU at least {half} px from the edge: "
                                   f"there is no body to sample patches from.")
        self.slices = slices
        self.probabilities = np.asarray(weights, np.float64) / float(sum(weights))

    def _centre_window(self, stack_index: int, z: int) -> np.ndarray:
        """Which pixels of slice ``z`` can be a patch centre (the body, and the patch stays inside the slice)."""
        half, size = self.patch_size // 2, self.patch_size
        body = (self.stacks[stack_index][self.body_from] if self.centre_masks is None
                else self.centre_masks[stack_index])
        window = body[z, half:body.shape[1] - size + half + 1, half:body.shape[2] - size + half + 1]
        return window > BODY_THRESHOLD_HU if self.centre_masks is None else window

    def _draw_centre(self, stack_index: int, z: int) -> tuple[int, int]:
        window = self._centre_window(stack_index, z)
        half = self.patch_size // 2
        for _ in range(REJECTION_TRIES):
            y, x = int(self.rng.integers(0, window.shape[0])), int(self.rng.integers(0, window.shape[1]))
            if window[y, x]:
                return y + half, x + half
        candidates = np.flatnonzero(window)  # a slice with little body: pick from the list
        y, x = np.unravel_index(int(candidates[self.rng.integers(0, len(candidates))]), window.shape)
        return int(y) + half, int(x) + half

    def sample(self, batch_size: int) -> tuple[np.ndarray, ...]:
        return self.sample_with_stacks(batch_size)[0]

    def sample_with_stacks(self, batch_size: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """:meth:`sample`, with the index of the stack each patch came from (e.g. to draw that series' noise)."""
        size, half = self.patch_size, self.patch_size // 2
        picks = self.rng.choice(len(self.slices), size=batch_size, p=self.probabilities)
        width = len(self.stacks[self.slices[0][0]])
        patches = tuple(np.empty((batch_size, 1, size, size), np.float32) for _ in range(width))
        for index, pick in enumerate(picks):
            stack_index, z = self.slices[pick]
            stack = self.stacks[stack_index]
            y, x = self._draw_centre(stack_index, z)
            rotations, flip = int(self.rng.integers(0, 4)), bool(self.rng.integers(0, 2))
            for volume, target in zip(stack, patches):
                patch = np.rot90(volume[z, y - half:y - half + size, x - half:x - half + size], rotations)
                target[index, 0] = patch[:, ::-1] if flip else patch
        return patches, np.asarray([self.slices[pick][0] for pick in picks])
