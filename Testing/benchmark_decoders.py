"""Which decoder reads each compressed transfer syntax of CT archives, exactly, and how fast: the measurement behind
the product's default decoders (README, "Inputs").

    .venv/bin/python Testing/benchmark_decoders.py [--slice FILE.dcm] [--repeats 7] [--json runs/decoders.json]

One real 512² CT slice (a Mayo quarter-dose slice from ../shared/data when present, else pydicom's CT_small) is
encoded in each lossless syntax, then decoded by every pydicom plugin installed; each row says whether the stored
values came back exactly and the median decoding time. Measurements, never assertions: the tests check exactness
with the default install, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parent / "Python"))
from dicom_factory import jpeg_lossless_sv1  # noqa: E402  (the tests' own SV1 encoder: no package encodes SV1)

DATA_ROOT = Path(os.environ.get("LDCTDENOISE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MAYO_SLICE_GLOB = "mayo/target_unlabeled/L109_QD_3mm_B30/*.IMA"
SYNTAXES = (RLELossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless)


def source_dataset(path: Path | None) -> tuple[pydicom.Dataset, str]:
    """An uncompressed CT slice and where it came from."""
    if path is None:
        found = sorted(DATA_ROOT.glob(MAYO_SLICE_GLOB))
        path = found[len(found) // 2] if found else None
    if path is not None:
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        return ds, str(path)
    return pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")), "pydicom's CT_small (128², no real data)"


def encoded(ds: pydicom.Dataset, syntax: str) -> pydicom.Dataset:
    copy = pydicom.dcmread(_to_bytes(ds))
    stored = copy.pixel_array
    if syntax == JPEGLosslessSV1:
        copy.PixelData = encapsulate([jpeg_lossless_sv1(stored, int(copy.BitsStored))])
        copy["PixelData"].VR = "OB"
        copy.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    else:
        copy.compress(syntax, generate_instance_uid=False)
    return pydicom.dcmread(_to_bytes(copy))


def _to_bytes(ds: pydicom.Dataset):
    from io import BytesIO
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def measure(ds: pydicom.Dataset, syntax: str, repeats: int) -> list[dict]:
    from pydicom.pixels.decoders.base import get_decoder
    reference = ds.pixel_array
    compressed = encoded(ds, syntax)
    rows = []
    for plugin in sorted(get_decoder(syntax).available_plugins):
        times, exact, error = [], False, ""
        try:
            for _ in range(repeats):
                start = time.perf_counter()
                values = pixel_array(compressed, decoding_plugin=plugin)
                times.append(time.perf_counter() - start)
            exact = bool(np.array_equal(values, reference))
        except Exception as exc:  # a plugin that cannot read this variant: reported, not fatal
            error = f"{type(exc).__name__}: {exc}"[:120]
        rows.append({"syntax": syntax.name, "plugin": plugin, "exact": exact, "error": error,
                     "compressed_kib": round(len(compressed.PixelData) / 1024),
                     "median_ms": round(1000 * statistics.median(times), 1) if times and not error else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", type=Path, help="an uncompressed CT slice (default: a Mayo slice, or the phantom)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ds, origin = source_dataset(args.slice)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    print(f"slice: {origin} ({ds.Rows}x{ds.Columns}, BitsStored {ds.BitsStored}, "
          f"PixelRepresentation {ds.PixelRepresentation}); pydicom {pydicom.__version__}")
    rows = [row for syntax in SYNTAXES for row in measure(ds, syntax, args.repeats)]
    print(f"{'transfer syntax':<45} {'plugin':<10} {'exact':<6} {'KiB':>5} {'ms':>7}")
    for row in rows:
        print(f"{row['syntax'][:45]:<45} {row['plugin']:<10} {str(row['exact']):<6} {row['compressed_kib']:>5} "
              f"{row['median_ms'] if row['median_ms'] is not None else row['error']:>7}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"slice": origin, "pydicom": pydicom.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
