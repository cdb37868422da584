"""Solids as signed distance functions (negative inside, millimetres) in LPS, with world bounding boxes.

Distances are exact for spheres, capsules and half-spaces and close to exact near the surface for the
others, which is where rendering uses them (partial-volume ramps and offsets of a few millimetres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Bounds = tuple[np.ndarray, np.ndarray]
FAR_MM = 12.0  # unions evaluate a part only within this distance of its box; farther it counts as FAR_MM


class Shape:
    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Signed distance in mm for points of shape (..., 3)."""
        raise NotImplementedError

    def bounds(self) -> Bounds:
        """Lower and upper LPS corners of a box holding the solid."""
        raise NotImplementedError


def _norm(vectors: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...i,...i->...", vectors, vectors))


def _like(value, points: np.ndarray) -> np.ndarray:
    """A parameter in the points' precision, so float32 points stay float32."""
    return np.asarray(value, dtype=points.dtype)


def _ellipse_sdf(x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an ellipse with semi-axes (rx, ry), exact on its axes' ends."""
    k0 = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    k1 = np.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = k0 * (k0 - 1.0) / k1
    return np.where(k1 > 0, distance, -min(rx, ry))


def _box_around(center: np.ndarray, rotation: np.ndarray, half_extent: np.ndarray) -> Bounds:
    reach = np.abs(rotation) @ half_extent
    return center - reach, center + reach


@dataclass(frozen=True, eq=False)
class Sphere(Shape):
    center: np.ndarray
    radius: float

    def sdf(self, points):
        return _norm(points - _like(self.center, points)) - self.radius

    def bounds(self):
        return self.center - self.radius, self.center + self.radius


@dataclass(frozen=True, eq=False)
class Ellipsoid(Shape):
    """``rotation`` columns are the local axes in LPS; ``radii`` are along them."""

    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray

    def sdf(self, points):
        local = (points - _like(self.center, points)) @ _like(self.rotation, points)
        radii = _like(self.radii, points)
        k0 = _norm(local / radii)
        k1 = _norm(local / radii**2)
        with np.errstate(invalid="ignore", divide="ignore"):
            distance = k0 * (k0 - 1.0) / k1
        return np.where(k1 > 0, distance, -self.radii.min())

    def bounds(self):
        return _box_around(self.center, self.rotation, self.radii)


@dataclass(frozen=True, eq=False)
class Capsule(Shape):
    """All points within ``radius`` of the segment from ``start`` to ``end``."""

    start: np.ndarray
    end: np.ndarray
    radius: float

    def sdf(self, points):
        start = _like(self.start, points)
        axis = _like(self.end, points) - start
        relative = points - start
        t = np.clip((relative @ axis) / (axis @ axis), 0.0, 1.0)
        return _norm(relative - t[..., None] * axis) - self.radius

    def bounds(self):
        return np.minimum(self.start, self.end) - self.radius, np.maximum(self.start, self.end) + self.radius


@dataclass(frozen=True, eq=False)
class Cylinder(Shape):
    """A flat-capped cylinder of elliptic cross-section: semi-axes (rx, ry) along the rotation's first two
    columns, ``half_length`` along its third (the axis)."""

    center: np.ndarray
    rotation: np.ndarray
    rx: float
    ry: float
    half_length: float

    def sdf(self, points):
        local = (points - _like(self.center, points)) @ _like(self.rotation, points)
        radial = _ellipse_sdf(local[..., 0], local[..., 1], self.rx, self.ry)
        axial = np.abs(local[..., 2]) - self.half_length
        outside = np.sqrt(np.maximum(radial, 0) ** 2 + np.maximum(axial, 0) ** 2)
        return outside + np.minimum(np.maximum(radial, axial), 0)

    def bounds(self):
        return _box_around(self.center, self.rotation, np.array([self.rx, self.ry, self.half_length]))


@dataclass(frozen=True, eq=False)
class HalfSpace(Shape):
    """Points behind the plane through ``point`` whose outward normal is ``normal``; unbounded."""

    point: np.ndarray
    normal: np.ndarray

    def sdf(self, points):
        return (points - _like(self.point, points)) @ _like(self.normal, points)

    def bounds(self):
        return np.full(3, -np.inf), np.full(3, np.inf)


@dataclass(frozen=True, eq=False)
class Union(Shape):
    parts: tuple[Shape, ...]

    def sdf(self, points):
        distance = _near_only(self.parts[0], points)
        for part in self.parts[1:]:
            np.minimum(distance, _near_only(part, points), out=distance)
        return distance

    def bounds(self):
        lows, highs = zip(*(part.bounds() for part in self.parts))
        return np.min(lows, axis=0), np.max(highs, axis=0)


def _near_only(part: Shape, points: np.ndarray) -> np.ndarray:
    """``part.sdf`` where points lie within FAR_MM of the part's box, FAR_MM elsewhere (a lower bound there).

    Distances below FAR_MM stay exact, which is all rendering needs: partial-volume ramps and shells are
    a few millimetres deep. Points must be (N, 3).
    """
    low, high = part.bounds()
    center, reach = (low + high) / 2, (high - low) / 2 + FAR_MM
    near = np.ones(points.shape[0], dtype=bool)
    for axis in range(3):
        if np.isfinite(reach[axis]):
            near &= np.abs(points[:, axis] - np.float32(center[axis])) <= reach[axis]
    distance = np.full(points.shape[0], FAR_MM, dtype=points.dtype)
    if near.all():
        return np.asarray(part.sdf(points), dtype=points.dtype)
    if near.any():
        distance[near] = part.sdf(points[near])
    return distance


@dataclass(frozen=True, eq=False)
class Intersection(Shape):
    parts: tuple[Shape, ...]

    def sdf(self, points):
        distance = np.array(self.parts[0].sdf(points))
        for part in self.parts[1:]:
            np.maximum(distance, part.sdf(points), out=distance)
        return distance

    def bounds(self):
        lows, highs = zip(*(part.bounds() for part in self.parts))
        return np.max(lows, axis=0), np.min(highs, axis=0)


@dataclass(frozen=True, eq=False)
class Difference(Shape):
    """``keep`` without ``remove``."""

    keep: Shape
    remove: Shape

    def sdf(self, points):
        return np.maximum(self.keep.sdf(points), -self.remove.sdf(points))

    def bounds(self):
        return self.keep.bounds()


@dataclass(frozen=True, eq=False)
class Offset(Shape):
    """The solid grown by ``distance_mm`` (shrunk when negative)."""

    shape: Shape
    distance_mm: float

    def sdf(self, points):
        return self.shape.sdf(points) - self.distance_mm

    def bounds(self):
        low, high = self.shape.bounds()
        grow = max(self.distance_mm, 0.0)
        return low - grow, high + grow


def frame_from_axis(axis: np.ndarray, up: np.ndarray) -> np.ndarray:
    """A rotation whose third column is ``axis`` and whose second column lies towards ``up``."""
    z = axis / np.linalg.norm(axis)
    x = np.cross(up, z)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross([1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


def segment(start: np.ndarray, end: np.ndarray, across_mm: float, up_mm: float, up: np.ndarray) -> Cylinder:
    """A cylinder from ``start`` to ``end`` with semi-axes ``across_mm`` and ``up_mm`` (towards ``up``)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    rotation = frame_from_axis(end - start, up)
    return Cylinder((start + end) / 2, rotation, across_mm, up_mm, np.linalg.norm(end - start) / 2)


def rotation_about(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation matrix about a unit ``axis`` by ``angle_rad`` (right-hand rule)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)
