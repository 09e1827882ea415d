"""The read -> denoise -> write loop of a DICOM series, a batch of slices at a time.

A long series never has to fit in memory: the reader decodes a batch (:meth:`SeriesLayout.read`), the denoiser
(any ``hu -> hu`` callable, e.g. a :class:`methods.Method`) processes it, and :class:`DerivedSeriesWriter` writes
each finished object into the hidden staging folder that becomes the output when the series is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .dicom_reader import SeriesLayout
from .dicom_writer import DerivedSeriesWriter
from .errors import LDCTDenoiseError
from .methods import Method
from .progress import CancelCheck, ProgressCallback, check_cancel, report


def denoise_series(
    series: SeriesLayout,
    process: Callable[[np.ndarray], np.ndarray],
    out_dir: str | Path,
    *,
    batch_size: int,
    derivation_description: str,
    series_description_suffix: str = " [LDCTDenoise]",
    series_number: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> list[Path]:
    """Read ``batch_size`` slices, ``process`` them (HU (b, y, x) in and out), write them; repeat to the end.

    Reading the next batch and writing the last one run in worker threads while ``process`` runs (decoding and
    encoding DICOM overlap the network, which releases the GIL). Memory holds three batches (being read, processed
    and written), never the series; only a multi-frame object is held whole (its decoded input and its stored
    output) until its last frame is processed, since it is one file. When ``process`` works slice by slice, or in
    batches of ``batch_size`` aligned with these, the files equal those of ``read_series`` + ``process(volume.hu)``
    + :func:`write_derived_series`.
    """
    if batch_size < 1:
        raise LDCTDenoiseError(f"Batch size must be at least 1, got {batch_size}.")
    n_slices = series.shape[0]
    with DerivedSeriesWriter(
        series,
        out_dir,
        derivation_description=derivation_description,
        series_description_suffix=series_description_suffix,
        series_number=series_number,
    ) as writer:
        if isinstance(process, Method):
            process.prepare(series.shape)  # e.g. compile the network for the whole series, not per batch
        report(progress, 0, n_slices)
        # One reader and one writer thread: reads stay in order (a multi-frame file is decoded once), so do writes.
        with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writing:
            next_batch = reader.submit(series.read, 0, min(batch_size, n_slices), cancel)
            written: Future | None = None
            for start in range(0, n_slices, batch_size):
                check_cancel(cancel)
                stop = min(start + batch_size, n_slices)
                batch = next_batch.result()
                if stop < n_slices:
                    next_batch = reader.submit(series.read, stop, min(stop + batch_size, n_slices), cancel)
                processed = process(batch)
                if written is not None:
                    written.result()  # at most one batch waits to be written; its error surfaces here
                written = writing.submit(writer.add, range(start, stop), processed)
                report(progress, stop, n_slices)
            written.result()
        check_cancel(cancel)
        return writer.commit()
