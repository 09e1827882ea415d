"""Cross-domain adaptation of a denoiser to unlabeled target scans: the paper's semantic information alignment and
our target-noise matching (``ADAPTATION_METHODS``).

One entry point, :func:`adapt`, used by ``training/``, the command line and the Slicer module alike.

The settings (``settings.py``) load with the package; the names that need torch load on first use, so that listing
the methods or configuring a run (the command line's ``--help``, the Slicer panel) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types

from .settings import (ADAPTATION_METHODS, DEFAULT_METHOD, MASK_KINDS, AdaptationConfig, describe_method,
                       method_settings, used_loss_terms)

# name -> submodule, for the names that import torch (or the simulator) when they load
_LAZY = {"AdaptationResult": "adapt", "adapt": "adapt", "FrequencyMask": "frequency_mask",
         "apply_mask": "frequency_mask", "dct2": "frequency_mask", "idct2": "frequency_mask",
         "radius_map": "frequency_mask", "PerceptualLoss": "perceptual", "SourcePairs": "source",
         "phantom_source_bank": "source", "user_cache_dir": "source"}

__all__ = ["ADAPTATION_METHODS", "DEFAULT_METHOD", "method_settings", "describe_method", "used_loss_terms",
           "AdaptationConfig", "AdaptationResult", "adapt", "MASK_KINDS", "FrequencyMask", "apply_mask", "dct2",
           "idct2", "radius_map", "PerceptualLoss", "SourcePairs", "phantom_source_bank", "user_cache_dir"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``adaptation.adapt`` the function: importing the submodule ``adaptation/adapt.py`` would otherwise set
    the package's ``adapt`` to the submodule (Python does so on a submodule's first import), and a later
    ``from LDCTDenoiseLib.adaptation import adapt`` would get a module instead of the function."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable through sys.modules and ``from .adapt import ...``
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
