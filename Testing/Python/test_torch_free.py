"""What only lists or configures loads without torch: the command line's import, ``--help`` and ``models``, and the
adaptation's settings that the Slicer panel reads. A fresh Slicer has no torch until the user agrees to install it,
and importing it costs seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "LDCTDenoise"

SCRIPT = """
import contextlib, io, json, sys
import LDCTDenoiseLib.cli as cli
after_import = 'torch' in sys.modules
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    status = cli.main(["models"])
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
    try:
        cli.main(["adapt", "--help"])
    except SystemExit:
        pass
from LDCTDenoiseLib.adaptation import ADAPTATION_METHODS, DEFAULT_METHOD, AdaptationConfig, method_settings
configs = {name: AdaptationConfig(**method_settings(name)).match_target_noise for name in ADAPTATION_METHODS}
print(json.dumps({"after_import": after_import, "status": status, "listing": listing.getvalue(),
                  "help": help_text.getvalue(), "methods": list(ADAPTATION_METHODS), "default": DEFAULT_METHOD,
                  "configs": configs, "torch": sorted(name for name in sys.modules if name.split(".")[0] == "torch")}))
"""


def test_cli_models_help_and_adaptation_settings_do_not_import_torch(tmp_path):
    """Run in a fresh interpreter: in this one, other tests have loaded torch already."""
    env = dict(os.environ, LDCTDENOISE_PROFILES_DIR=str(tmp_path / "profiles"),
               PYTHONPATH=os.pathsep.join([str(ENGINE), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["after_import"] is False, "importing LDCTDenoiseLib.cli imported torch"
    assert out["torch"] == [], f"listing models, --help or the adaptation settings imported {out['torch']}"
    assert out["status"] == 0 and "cpce2d" in out["listing"].lower()
    assert out["default"] in out["methods"] and set(out["methods"]) == {"noise-matching", "alignment",
                                                                                          "recorruption"}
    assert all(name in out["help"] for name in out["methods"])  # --method's choices come from the one table
    assert out["configs"] == {"noise-matching": True, "alignment": False, "recorruption": False}


def test_adaptation_names_are_one_table(tmp_path):
    """The package, ``adapt.py`` and the torch modules give the settings module's objects, so nothing holds a copy;
    and the package's ``adapt`` stays the function when ``adapt.py`` was imported first (a fresh interpreter, as in
    the adaptation job and the command line)."""
    script = (
        "from LDCTDenoiseLib.adaptation.adapt import ADAPTATION_METHODS, AdaptationConfig, checked_target_volumes\n"
        "from LDCTDenoiseLib.adaptation import adapt\n"
        "from LDCTDenoiseLib import adaptation\n"
        "from LDCTDenoiseLib.adaptation import settings\n"
        "from LDCTDenoiseLib.adaptation.discriminator import GAN_LOSSES\n"
        "from LDCTDenoiseLib.adaptation.frequency_mask import MASK_KINDS\n"
        "assert callable(adapt) and adaptation.adapt is adapt, adapt\n"
        "assert adaptation.ADAPTATION_METHODS is ADAPTATION_METHODS is settings.ADAPTATION_METHODS\n"
        "assert adaptation.AdaptationConfig is AdaptationConfig is settings.AdaptationConfig\n"
        "assert MASK_KINDS is settings.MASK_KINDS and GAN_LOSSES is settings.GAN_LOSSES\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ENGINE), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
