"""Installing what the engine needs beside Slicer's bundled packages, on first use and only after the user agreed.

PyTorch comes from the PyTorch extension (``PyTorchUtils``, which picks the CUDA build for the computer); the other
packages are the module's ``Resources/requirements.txt``. Slicer 5.12 and later check and install them with
``slicer.packaging.pip_ensure``, which asks first; Slicer 5.8 and 5.10 have only ``slicer.util.pip_install``, which
installs at once, so the question is asked here.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Optional

import slicer
import slicer.util
from slicer.i18n import tr as _

MINIMUM_TORCH_VERSION = "2.1"  # the oldest PyTorch the engine runs on (pyproject.toml says the same)
REQUESTER = "LDCTDenoise"


def ensureDependencies(requirementsPath: str) -> None:
    """Make PyTorch and the requirements importable, asking the user before anything is installed; raises with a
    message for the user when they declined or the installed PyTorch is too old."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(_("This module needs the PyTorch extension: install it from the Extensions Manager "
                             "and restart Slicer.")) from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        if torchLogic.installTorch(askConfirmation=True,
                                   torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}") is None:
            raise RuntimeError(_("PyTorch is required to denoise. Install it and try again."))
    problem = torchVersionProblem()
    if problem:
        raise RuntimeError(problem)
    try:  # Slicer 5.12 and later; "import slicer.packaging" would make "slicer" a local name of this function
        from slicer import packaging as slicerPackaging
    except ImportError:
        slicerPackaging = None
    if slicerPackaging is not None:  # it lists what is missing, asks, and raises if the user declines
        slicerPackaging.pip_ensure(slicerPackaging.load_requirements(requirementsPath), requester=REQUESTER)
        return
    missing = missingRequirements(requirementsPath)
    if not missing:
        return
    if not slicer.util.confirmOkCancelDisplay(
            _("LDCT Denoise needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
              "Install them now? This can take a few minutes.").format(packages="\n".join(missing)),
            windowTitle=_("Install Python packages")):
        raise RuntimeError(_("LDCT Denoise cannot run without these packages: {packages}.").format(
            packages=", ".join(missing)))
    slicer.util.pip_install(missing)


def torchVersionProblem() -> Optional[str]:
    """Why the installed PyTorch cannot run the engine (too old), or None; read from its metadata, without
    importing it."""
    from packaging.version import Version  # bundled with Slicer

    installed = importlib.metadata.version("torch")
    if Version(installed) < Version(MINIMUM_TORCH_VERSION):
        return _("PyTorch {installed} is installed, but LDCT Denoise needs {minimum} or later. Update it in the "
                 "PyTorch Utils module (or with pip), restart Slicer, and try again.").format(
            installed=installed, minimum=MINIMUM_TORCH_VERSION)
    return None


def missingRequirements(requirementsPath: str) -> list[str]:
    """The requirements (one per line of a requirements file) that the installed packages do not meet."""
    from packaging.requirements import Requirement  # bundled with Slicer

    missing = []
    for line in Path(requirementsPath).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing
