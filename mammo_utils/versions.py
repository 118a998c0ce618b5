"""Library versions recorded in every report and model card."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

#: Distributions whose versions decide a result.
TRACKED_DISTRIBUTIONS: tuple[str, ...] = (
    "mammo-utils",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "pandas",
    "scikit-learn",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-rle",
    "opencv-python-headless",
    "matplotlib",
    "papermill",
)


def installed_versions(names) -> dict[str, str]:
    """The installed version of each distribution in ``names``; absent ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def library_versions() -> dict[str, str]:
    """Python, platform and the installed version of each tracked distribution."""
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            **installed_versions(TRACKED_DISTRIBUTIONS)}
