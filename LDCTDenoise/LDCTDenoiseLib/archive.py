"""Denoise every CT series of an archive (a folder of many studies and series), unattended.

One derived series per source series, in an output tree that mirrors the archive's folders
(``OUT/<folder of the series>/<SeriesInstanceUID>/``). Each series is written atomically by the DICOM writer, so an
output folder that exists is complete: a rerun skips it, and a killed run resumes where it stopped (the killed
series' hidden staging folder is removed by the writer). A series that cannot be denoised is refused with its
reason and the run goes on. A summary CSV of what was denoised, skipped and refused is rewritten (atomically) after
each series, so it is current even after a kill.

Sharding spreads the series over processes started by an existing launcher: ``K/N`` (a job array's index) or the
``RANK``/``WORLD_SIZE`` that ``torchrun`` sets. A series belongs to the shard given by a hash of its
SeriesInstanceUID, so every shard finds its series alone, without a scheduler or a shared list, and adding series
to the archive never moves a series to another shard.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .atomic import write_bytes_atomically
from .dicom_reader import SeriesInfo, list_series, open_series
from .errors import CancelledError, LDCTDenoiseError
from .methods import DERIVATION_PREFIX, Method
from .pipeline import denoise_series
from .progress import CancelCheck, check_cancel

DENOISED, SKIPPED, REFUSED = "denoised", "skipped", "refused"
SUMMARY_FIELDS = ("status", "series_uid", "description", "n_slices", "source", "output", "seconds", "message")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the series whose UID hashes to ``index`` modulo ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise LDCTDenoiseError(f"Shard {self.index}/{self.count}: the index must run from 0 to count - 1.")

    def owns(self, series_uid: str) -> bool:
        return int(hashlib.sha256(series_uid.encode("utf-8")).hexdigest()[:16], 16) % self.count == self.index

    @property
    def label(self) -> str:
        return "" if self.count == 1 else f"-shard-{self.index}-of-{self.count}"


def parse_shard(text: Optional[str], environ: Mapping[str, str] = os.environ) -> Shard:
    """``None`` (everything), ``K/N``, or ``env``: torchrun's RANK/WORLD_SIZE, else a Slurm job array's
    SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (less SLURM_ARRAY_TASK_MIN)."""
    if text is None:
        return Shard()
    if text == "env":
        if "RANK" in environ and "WORLD_SIZE" in environ:
            return Shard(int(environ["RANK"]), int(environ["WORLD_SIZE"]))
        if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
            first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            return Shard(int(environ["SLURM_ARRAY_TASK_ID"]) - first, int(environ["SLURM_ARRAY_TASK_COUNT"]))
        raise LDCTDenoiseError("--shard env: neither RANK/WORLD_SIZE (torchrun) nor SLURM_ARRAY_TASK_ID/"
                               "SLURM_ARRAY_TASK_COUNT (a Slurm job array) is set; give --shard K/N instead.")
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise LDCTDenoiseError(f"--shard {text!r}: expected K/N (e.g. 0/4, K from 0 to N - 1) or env.") from None
    return Shard(index, count)


@dataclass
class ArchiveRow:
    """One line of the summary: what happened to one series (or to one unreadable file)."""

    status: str
    series_uid: str
    description: str
    n_slices: int
    source: str
    output: str
    seconds: float
    message: str


def series_output_folder(out_root: Path, archive: Path, info: SeriesInfo) -> Path:
    """``out_root`` / the series' folder relative to the archive / its SeriesInstanceUID."""
    folder = Path(os.path.commonpath([str(path.parent) for path in info.files]))
    base = archive if archive.is_dir() else archive.parent
    relative = folder.relative_to(base) if folder != base and base in folder.parents else Path()
    return out_root / relative / (info.series_uid or "no-SeriesInstanceUID")


def summary_path(out_root: Path, shard: Shard) -> Path:
    return out_root / f"ldct-denoise-summary{shard.label}.csv"


def denoise_archive(
    archive: str | Path,
    out_root: str | Path,
    method: Method,
    *,
    batch_size: int,
    series_suffix: str,
    shard: Shard = Shard(),
    on_row: Optional[Callable[[ArchiveRow, int, int], None]] = None,
    progress_for: Optional[Callable[[SeriesInfo], Callable[[int, int], None]]] = None,
    cancel: Optional[CancelCheck] = None,
) -> list[ArchiveRow]:
    """Denoise this shard's series of ``archive`` into ``out_root``; returns the summary rows (also written as CSV).

    ``on_row(row, done, total)`` follows each series; ``progress_for(info)`` gives the progress hook of one series.
    A cancel or Ctrl-C stops after removing the unfinished series; the summary then holds the series finished.
    """
    archive, out_root = Path(archive).absolute(), Path(out_root).absolute()
    _check_roots(archive, out_root)
    unreadable: list[tuple[Path, str]] = []
    found = list_series(archive, unreadable, cancel)
    mine = sorted((info for info in found if shard.owns(info.series_uid)), key=lambda info: str(info.files[0]))
    rows = [ArchiveRow(REFUSED, "", "", 0, str(path), "", 0.0, message) for path, message in unreadable
            if shard.owns(str(path))]
    out_root.mkdir(parents=True, exist_ok=True)
    csv_path = summary_path(out_root, shard)
    _write_summary(csv_path, rows)
    for number, info in enumerate(mine, start=1):
        check_cancel(cancel)
        row = _denoise_one(info, series_output_folder(out_root, archive, info), method, batch_size, series_suffix,
                           progress_for(info) if progress_for else None, cancel)
        rows.append(row)
        _write_summary(csv_path, rows)
        if on_row is not None:
            on_row(row, number, len(mine))
    return rows


def _check_roots(archive: Path, out_root: Path) -> None:
    if not archive.exists():
        raise LDCTDenoiseError(f"{archive}: no such file or folder")
    real_archive, real_out = archive.resolve(), out_root.resolve()
    if real_out == real_archive or real_archive in real_out.parents:
        raise LDCTDenoiseError(f"{out_root}: the output lies inside the archive {archive}; a rerun would read the "
                               f"outputs as new series. Choose a folder outside it.")
    if real_out in real_archive.parents:
        raise LDCTDenoiseError(f"{out_root}: the output holds the archive {archive}; choose a folder beside it.")
    if out_root.exists() and not out_root.is_dir():
        raise LDCTDenoiseError(f"{out_root}: exists and is not a folder")


def _denoise_one(info: SeriesInfo, out: Path, method: Method, batch_size: int, suffix: str,
                 progress: Optional[Callable[[int, int], None]], cancel: Optional[CancelCheck]) -> ArchiveRow:
    row = ArchiveRow(DENOISED, info.series_uid, info.description, info.n_slices, str(info.files[0].parent),
                     str(out), 0.0, "")
    if out.exists():
        row.status, row.message = SKIPPED, "already denoised (its output folder exists)"
        return row
    tic = time.perf_counter()
    try:
        series = open_series(list(info.files), info.series_uid, cancel)
        derivation = str(series.headers[0].get("DerivationDescription", "") or "")
        if derivation.startswith(DERIVATION_PREFIX):
            row.status, row.output, row.message = SKIPPED, "", "an LDCTDenoise output, not a source series"
            return row
        denoise_series(series, method, out, batch_size=batch_size, derivation_description=method.derivation(),
                               series_description_suffix=suffix, progress=progress, cancel=cancel)
        row.message = "; ".join(series.warnings)
    except CancelledError:
        raise
    except LDCTDenoiseError as error:
        row.status, row.output, row.message = REFUSED, "", str(error)
    row.seconds = round(time.perf_counter() - tic, 2)
    return row


def _write_summary(path: Path, rows: list[ArchiveRow]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    write_bytes_atomically(path, text.getvalue().encode("utf-8"))
