"""Implant catalogues as data: the sizes a planner may choose from, read from JSON that users replace."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from recon.errors import InputError

DEFAULT_SCREW_CATALOGUE = "pedicle_screws.json"
DEFAULT_CUP_CATALOGUE = "acetabular_cups.json"


@dataclass(frozen=True)
class ScrewCatalogue:
    """Pedicle-screw sizes (mm), both sorted ascending."""

    diameters_mm: tuple[float, ...]
    lengths_mm: tuple[float, ...]
    source: str = "recon default"

    def largest_diameter(self, limit_mm: float) -> float | None:
        """The largest diameter not exceeding ``limit_mm``, or None when even the smallest is too wide."""
        fitting = [d for d in self.diameters_mm if d <= limit_mm + 1e-9]
        return fitting[-1] if fitting else None

    def longest_length(self, limit_mm: float) -> float | None:
        fitting = [length for length in self.lengths_mm if length <= limit_mm + 1e-9]
        return fitting[-1] if fitting else None

    def shorter_than(self, length_mm: float) -> float | None:
        """The next length below ``length_mm`` in the catalogue, or None."""
        return self.longest_length(length_mm - 1e-6)


@dataclass(frozen=True)
class CupCatalogue:
    """Acetabular cup outer diameters (mm), sorted ascending."""

    diameters_mm: tuple[float, ...]
    source: str = "recon default"

    def smallest_covering(self, diameter_mm: float) -> float | None:
        """The smallest cup at least ``diameter_mm`` across, or None when even the largest is smaller."""
        covering = [d for d in self.diameters_mm if d >= diameter_mm - 1e-9]
        return covering[0] if covering else None


def load_screw_catalogue(path: str | Path | None = None) -> ScrewCatalogue:
    """The catalogue in ``path`` (JSON with ``diameters_mm`` and ``lengths_mm``), or recon's generic one."""
    data, source = _catalogue(path, DEFAULT_SCREW_CATALOGUE)
    return ScrewCatalogue(_sizes(data, "diameters_mm", source), _sizes(data, "lengths_mm", source), source)


def load_cup_catalogue(path: str | Path | None = None) -> CupCatalogue:
    """The cup catalogue in ``path`` (JSON with ``diameters_mm``), or recon's generic one (40-70 mm)."""
    data, source = _catalogue(path, DEFAULT_CUP_CATALOGUE)
    return CupCatalogue(_sizes(data, "diameters_mm", source), source)


def _catalogue(path: str | Path | None, default: str) -> tuple[dict, str]:
    if path is None:
        text, source = resources.files("recon.data").joinpath(default).read_text(), "recon default"
    else:
        try:
            text, source = Path(path).read_text(), Path(path).name
        except OSError as err:
            raise InputError(f"{path}: cannot read the implant catalogue ({err.strerror})") from err
    try:
        return json.loads(text), source
    except json.JSONDecodeError as err:
        raise InputError(f"{source}: the implant catalogue is not valid JSON ({err.msg}, line {err.lineno})") from err


def _sizes(data, key: str, source: str) -> tuple[float, ...]:
    values = data.get(key) if isinstance(data, dict) else None
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in values)):
        raise InputError(f"{source}: the implant catalogue needs {key!r}: a list of positive sizes in mm, "
                         f'e.g. {{"diameters_mm": [4.5, 5.5, 6.5], "lengths_mm": [35, 40, 45]}}')
    return tuple(sorted(float(v) for v in values))
