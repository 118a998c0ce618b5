"""Downloads of the real data sets into the layouts ``mammo ingest`` reads.

* :func:`fetch_cbis_ddsm`: CBIS-DDSM series from TCIA's NBIA REST API, unpacked into NBIA's
  folder layout with ``metadata.csv`` and the four case-description CSVs.
* :func:`fetch_mini_mias`: the mini-MIAS archive, verified and unpacked (PGMs + Info.txt).

Both retry transient failures with exponential backoff, resume partial downloads, skip
what ``fetch_manifest.json`` proves complete, write nothing outside their output folder
and raise :class:`FetchError` with a one-line message naming the manual route.
"""

from mammo_utils.fetch.base import FetchReport
from mammo_utils.fetch.http import FetchError, RetryPolicy
from mammo_utils.fetch.mias import fetch_mini_mias
from mammo_utils.fetch.tcia import SUBSETS, fetch_cbis_ddsm

__all__ = [
    "SUBSETS",
    "FetchError",
    "FetchReport",
    "RetryPolicy",
    "fetch_cbis_ddsm",
    "fetch_mini_mias",
]
