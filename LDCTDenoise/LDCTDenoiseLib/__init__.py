"""LDCTDenoise engine: DICOM series in, denoised DICOM series out, with CPCE-2D, baselines, metrics and a simulator.

The engine never imports ``slicer`` or ``qt``; the Slicer module, the command line and ``training/`` all call it.
"""

from __future__ import annotations

__version__ = "0.1.0"
