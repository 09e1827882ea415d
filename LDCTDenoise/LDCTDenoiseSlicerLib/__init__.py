"""The Slicer side of LDCTDenoise: what needs ``slicer``, ``qt`` or MRML (the MRML bridge, installing the engine's
packages on first use), kept out of the engine (``LDCTDenoiseLib``) so the engine stays usable without Slicer.

Everything here imports only what a fresh Slicer bundles, because the module loads it at Slicer's start-up.
"""
