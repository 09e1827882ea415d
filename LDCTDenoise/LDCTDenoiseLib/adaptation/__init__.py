"""Cross-domain adaptation of a denoiser to unlabeled target scans: the paper's semantic information alignment and
our target-noise matching (``ADAPTATION_METHODS``).

One entry point, :func:`adapt`, used by ``training/``, the command line and the Slicer module alike.
"""

from __future__ import annotations

from .adapt import (ADAPTATION_METHODS, DEFAULT_METHOD, AdaptationConfig, AdaptationResult, adapt,
                    method_settings)
from .frequency_mask import MASK_KINDS, FrequencyMask, apply_mask, dct2, idct2, radius_map
from .perceptual import PerceptualLoss
from .source import SourcePairs, phantom_source_bank, user_cache_dir

__all__ = ["ADAPTATION_METHODS", "DEFAULT_METHOD", "method_settings", "AdaptationConfig", "AdaptationResult", "adapt",
           "MASK_KINDS", "FrequencyMask", "apply_mask", "dct2", "idct2", "radius_map", "PerceptualLoss", "SourcePairs",
           "phantom_source_bank", "user_cache_dir"]
