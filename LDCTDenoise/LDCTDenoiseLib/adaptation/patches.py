"""Random training patches centred inside the body, with flips and 90-degree rotations, for any aligned volumes.

Air around the patient teaches nothing about noise in tissue, so patch centres are drawn from pixels above -500 HU.
Memory stays O(slices): instead of listing every body pixel (hundreds of MB for a 100-slice series), each slice
keeps only its count of valid centres; a slice is drawn in proportion to it and a centre inside it by rejection.
The same sampler serves source pairs (body taken from the normal-dose image), unlabeled target scans and supervised
training; a caller may give its own masks of allowed centres instead (recorruption: the filled body outline, lungs
included).

``listed=True`` draws from a list of every centre instead (32 bytes per body pixel): the shipped models were trained
with that draw, and their reproduction commands keep it so that they draw the same patches. It also keeps that
draw's border: centres at most H - 1 - half, which for an even patch size leaves out the last row and column of
valid centres (a patch ending at the slice's edge).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    all of them. Every valid centre is equally likely, so a stack counts by its body's size; with
    ``balance_stacks`` each stack is equally likely first (a few real pairs are not drowned by a large simulated
    series in a mixed training set).
    """

    def __init__(self, stacks: Sequence[tuple[np.ndarray, ...]], patch_size: int, rng: np.random.Generator,
                 body_from: int = -1, centre_masks: Optional[Sequence[np.ndarray]] = None, *,
                 balance_stacks: bool = False, listed: bool = False) -> None:
        self.stacks = [tuple(stack) for stack in stacks]
        self.patch_size = int(patch_size)
        self.rng = rng
        self.body_from = body_from
        self.centre_masks = None if centre_masks is None else [np.asarray(mask, bool) for mask in centre_masks]
        if self.centre_masks is not None and [mask.shape for mask in self.centre_masks] != [
                stack[0].shape for stack in self.stacks]:
            raise LDCTDenoiseError("Patch sampling needs one centre mask per stack, shaped like its volumes.")
        half = self.patch_size // 2
        weights, slices, stack_counts = [], [], [0] * len(self.stacks)
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
                    stack_counts[stack_index] += count
        if not slices or (balance_stacks and not all(stack_counts)):
            empty = [str(index) for index, count in enumerate(stack_counts) if not count]
            raise LDCTDenoiseError(f"No pixel above {BODY_THRESHOLD_HU:g} HU at least {half} px from the edge in "
                                   f"stack {', '.join(empty)} of {len(self.stacks)}: there is no body to sample "
                                   f"patches from.")
        self.slices = slices
        self.balance_stacks = balance_stacks
        if balance_stacks:  # each stack's slices share an equal part
            weights = [count / stack_counts[stack_index] for count, (stack_index, _) in zip(weights, slices)]
        self.probabilities = np.asarray(weights, np.float64) / float(sum(weights))
        self.listed = None
        if listed:  # per stack: (z, y, x) of every centre, in scan order, up to H - 1 - half (see the module doc)
            self.listed = []
            for stack_index, stack in enumerate(self.stacks):
                height, width = stack[0].shape[1:]
                window = self._centre_window(stack_index)[:, :height - 2 * half, :width - 2 * half]
                self.listed.append(np.stack(np.nonzero(window), axis=1) + (0, half, half))

    def _centre_window(self, stack_index: int, z: int | slice = slice(None)) -> np.ndarray:
        """Which pixels of slice ``z`` (or of all slices) can be a patch centre, offset by half a patch: the body,
        and the patch stays inside the slice."""
        half, size = self.patch_size // 2, self.patch_size
        body = (self.stacks[stack_index][self.body_from] if self.centre_masks is None
                else self.centre_masks[stack_index])
        window = body[z, half:body.shape[1] - size + half + 1, half:body.shape[2] - size + half + 1]
        return window > BODY_THRESHOLD_HU if self.centre_masks is None else window

    def _centres(self, batch_size: int) -> Iterator[tuple[int, int, int, int]]:
        """(stack, z, y, x) of ``batch_size`` patch centres. Listed centres are drawn all at once; by slice, the
        slices at once and each centre when it is reached (after the previous patch's rotation and flip): the order
        of the draws from ``rng`` is part of what a seed reproduces."""
        if self.listed is None:
            for pick in self.rng.choice(len(self.slices), size=batch_size, p=self.probabilities):
                yield (*self.slices[pick], *self._draw_centre(*self.slices[pick]))
            return
        if self.balance_stacks:
            stacks = self.rng.integers(0, len(self.listed), batch_size)
            rows = [self.rng.integers(0, len(self.listed[stack])) for stack in stacks]
        else:
            counts = np.cumsum([len(centres) for centres in self.listed])
            picks = self.rng.integers(0, counts[-1], batch_size)
            stacks = np.searchsorted(counts, picks, side="right")
            rows = picks - np.concatenate([[0], counts])[stacks]
        for stack, row in zip(stacks, rows):
            yield (int(stack), *map(int, self.listed[stack][row]))

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
        width = len(self.stacks[self.slices[0][0]])
        patches = tuple(np.empty((batch_size, 1, size, size), np.float32) for _ in range(width))
        stacks = np.empty(batch_size, dtype=int)
        for index, (stack_index, z, y, x) in enumerate(self._centres(batch_size)):
            stacks[index] = stack_index
            rotations, flip = int(self.rng.integers(0, 4)), bool(self.rng.integers(0, 2))
            for volume, target in zip(self.stacks[stack_index], patches):
                patch = np.rot90(volume[z, y - half:y - half + size, x - half:x - half + size], rotations)
                target[index, 0] = patch[:, ::-1] if flip else patch
        return patches, stacks
