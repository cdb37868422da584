"""Acetabular cup orientation in Murray's three conventions (Murray DW, The definition and measurement of
acetabular orientation, J Bone Joint Surg Br 1993;75(2):228-232), relative to a pelvis frame.

The frame is the one built on the anterior pelvic plane: ``lateral`` (towards the operated side),
``anterior`` and ``superior`` unit vectors. The cup axis points out of the cup's opening.
- radiographic: inclination is the angle between the longitudinal axis and the axis projected on the coronal
  plane; anteversion the angle between the axis and the coronal plane;
- operative: inclination is the angle between the axis and the sagittal plane; anteversion the angle
  between the longitudinal axis and the axis projected on the sagittal plane;
- anatomical: inclination is the angle between the axis and the longitudinal axis; anteversion the angle
  between the transverse (lateral) axis and the axis projected on the transverse plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CupAngles:
    inclination_deg: float
    anteversion_deg: float


def _components(axis: np.ndarray, lateral, anterior, superior) -> tuple[float, float, float]:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return float(axis @ lateral), float(axis @ anterior), float(-(axis @ superior))


def radiographic(axis, lateral, anterior, superior) -> CupAngles:
    out, forward, down = _components(axis, lateral, anterior, superior)
    return CupAngles(float(np.degrees(np.arctan2(out, down))), float(np.degrees(np.arcsin(np.clip(forward, -1, 1)))))


def operative(axis, lateral, anterior, superior) -> CupAngles:
    out, forward, down = _components(axis, lateral, anterior, superior)
    return CupAngles(float(np.degrees(np.arcsin(np.clip(out, -1, 1)))), float(np.degrees(np.arctan2(forward, down))))


def anatomical(axis, lateral, anterior, superior) -> CupAngles:
    out, forward, down = _components(axis, lateral, anterior, superior)
    return CupAngles(float(np.degrees(np.arccos(np.clip(down, -1, 1)))), float(np.degrees(np.arctan2(forward, out))))


def axis_from_radiographic(inclination_deg: float, anteversion_deg: float, lateral, anterior, superior) -> np.ndarray:
    """The unit cup axis (out of the opening) with this radiographic inclination and anteversion."""
    inclination, anteversion = np.radians(inclination_deg), np.radians(anteversion_deg)
    return (np.sin(inclination) * np.cos(anteversion) * np.asarray(lateral)
            + np.sin(anteversion) * np.asarray(anterior)
            - np.cos(inclination) * np.cos(anteversion) * np.asarray(superior))
