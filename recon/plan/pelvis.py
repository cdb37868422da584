"""The pelvis's own frame: hip joint centres, femoral heads, and the anterior pelvic plane (APP).

Surfaces are marching-cubes vertices of the lightly smoothed labels (sub-voxel). Spheres are fitted to the
femoral head where it faces the hip bone and to the acetabulum where it faces the femur, then refitted to
the points lying on the first sphere. The APP is the plane touching the front of the pelvis at both anterior
superior iliac spines (ASIS) and both pubic tubercles: seen from the side along the line joining the hip
centres, it is the edge of the pelvis's convex outline that bridges the part above the hip centres (the
spines) and the part below (the pubis); each landmark is the point of its side and region that lies farthest
forward across that edge, and the plane is refitted to the four. A spine and tubercle of one side farther
apart or closer together than the inguinal ligament that joins them ever is (``INGUINAL_MM``) were found on
something other than a whole hip bone, and the plane is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import ConvexHull, cKDTree
from skimage.measure import marching_cubes

from recon.volume import LabelMap

CONTACT_MM = 8.0  # femur and hip bone surfaces this close face each other across the joint
ON_SPHERE_MM = 1.5
SOCKET_REACH_MM = 5.0  # the acetabulum lies within the joint space (a few mm) outside the head
SPHERE_ROUNDS = 3
MIN_SURFACE_POINTS = 30
INGUINAL_MM = (80.0, 180.0)  # ASIS to pubic tubercle, the inguinal ligament: about 10-17 cm in adults


class PelvisError(ValueError):
    """The labels do not show what the hip planner needs (the message says what, for the plan's reason)."""


@dataclass(frozen=True)
class Sphere:
    center_lps_mm: np.ndarray
    radius_mm: float
    residual_mm: float  # root mean square distance of the fitted points from the sphere
    points: int


@dataclass(frozen=True)
class PelvisFrame:
    """The APP frame: unit LPS vectors towards the patient's left, anterior (the plane's normal) and
    superior, and the four landmarks it was built on."""

    left: np.ndarray
    anterior: np.ndarray
    superior: np.ndarray
    landmarks_lps_mm: dict[str, np.ndarray]


def surface_points(labels: LabelMap, index: int) -> np.ndarray:
    """Sub-voxel surface points (LPS mm) of one label: marching cubes on its smoothed, padded crop."""
    cells = np.argwhere(labels.labels == index)
    if len(cells) == 0:
        raise PelvisError("label is empty")
    low, high = np.maximum(cells.min(axis=0) - 2, 0), np.minimum(cells.max(axis=0) + 3, labels.grid.shape)
    crop = labels.labels[tuple(slice(a, b) for a, b in zip(low, high))] == index
    smooth = ndimage.gaussian_filter(np.pad(crop, 1).astype(np.float32), sigma=0.5)
    vertices, *_ = marching_cubes(smooth, level=0.5)
    return labels.grid.index_to_lps(vertices - 1 + low)


def fit_sphere(points: np.ndarray) -> Sphere:
    """Least-squares sphere: an algebraic fit, then the geometric (distance) fit started from it."""
    if len(points) < MIN_SURFACE_POINTS:
        raise PelvisError("too few surface points to fit a sphere: the femoral head or the acetabulum is not in "
                          "the labels (check the segmentation around the hip joint)")
    design = np.column_stack([2 * points, np.ones(len(points))])
    solution, *_ = np.linalg.lstsq(design, np.sum(points**2, axis=1), rcond=None)
    center = solution[:3]
    radius = np.sqrt(max(solution[3] + center @ center, 1e-6))
    result = optimize.least_squares(lambda p: np.linalg.norm(points - p[:3], axis=1) - p[3],
                                    np.append(center, radius))
    residual = float(np.sqrt(np.mean(result.fun**2)))
    return Sphere(result.x[:3], float(abs(result.x[3])), residual, len(points))


def joint_spheres(femur: np.ndarray, hip: np.ndarray) -> tuple[Sphere, Sphere]:
    """The femoral head sphere (fitted where the femur faces the hip bone, then to the points on it) and the
    acetabulum sphere (fitted to the hip bone's surface just outside the head, then to the points on it)."""
    head = fit_sphere(femur[cKDTree(hip).query(femur, distance_upper_bound=CONTACT_MM)[0] < CONTACT_MM])
    for _ in range(SPHERE_ROUNDS):
        head = fit_sphere(_on_sphere(femur, head))
    socket = fit_sphere(hip[np.linalg.norm(hip - head.center_lps_mm, axis=1) < head.radius_mm + SOCKET_REACH_MM])
    for _ in range(SPHERE_ROUNDS):
        socket = fit_sphere(_on_sphere(hip, socket))
    return head, socket


def _on_sphere(points: np.ndarray, sphere: Sphere) -> np.ndarray:
    distance = np.abs(np.linalg.norm(points - sphere.center_lps_mm, axis=1) - sphere.radius_mm)
    return points[distance < ON_SPHERE_MM]


def pelvis_frame(hip_points: dict[str, np.ndarray], centers: dict[str, np.ndarray]) -> PelvisFrame:
    """The APP frame from both hip bones' surface points and both hip joint centres (keys left, right)."""
    left = _unit(centers["left"] - centers["right"])
    superior = _unit(np.array([0.0, 0.0, 1.0]) - left[2] * left)
    posterior = np.cross(superior, left)
    middle = (centers["left"] + centers["right"]) / 2
    every = np.vstack(list(hip_points.values()))
    side_view = np.column_stack([(every - middle) @ posterior, (every - middle) @ superior])
    forward = _bridging_normal(side_view)
    anterior = _unit(forward[0] * posterior + forward[1] * superior)
    landmarks = {}
    for side, points in hip_points.items():
        height = (points - middle) @ superior
        reach = (points - middle) @ anterior
        landmarks[f"asis_{side}"] = points[np.argmax(np.where(height > 0, reach, -np.inf))]
        landmarks[f"pubic_tubercle_{side}"] = points[np.argmax(np.where(height < 0, reach, -np.inf))]
        span = float(np.linalg.norm(landmarks[f"asis_{side}"] - landmarks[f"pubic_tubercle_{side}"]))
        if not INGUINAL_MM[0] <= span <= INGUINAL_MM[1]:
            raise PelvisError(f"the {side} hip bone's anterior superior iliac spine and pubic tubercle were found "
                              f"{span:.0f} mm apart, not {INGUINAL_MM[0]:g}-{INGUINAL_MM[1]:g} mm: the label is not a "
                              "whole hip bone (or holds another bone); check it")
    return _frame_on(landmarks, anterior)


def _bridging_normal(side_view: np.ndarray) -> np.ndarray:
    """In the side view (posterior, superior coordinates): the outward normal of the convex outline's front
    edge that joins a point above the hip centres to one below them."""
    hull = ConvexHull(side_view)
    for simplex, equation in zip(hull.simplices, hull.equations):
        heights = side_view[simplex, 1]
        if heights.min() < 0 < heights.max() and equation[0] < 0:
            return equation[:2]
    raise PelvisError("no front edge of the pelvis bridges the spines and the pubis (pelvis not wholly in view?)")


def _frame_on(landmarks: dict[str, np.ndarray], anterior_guess: np.ndarray) -> PelvisFrame:
    points = np.array(list(landmarks.values()))
    normal = np.linalg.svd(points - points.mean(axis=0))[2][2]
    anterior = normal if normal @ anterior_guess > 0 else -normal
    left = _unit(landmarks["asis_left"] - landmarks["asis_right"])
    left = _unit(left - (left @ anterior) * anterior)
    superior = np.cross(anterior, left)  # anterior x left = superior in a right-handed LPS frame
    return PelvisFrame(left, anterior, superior, landmarks)


def frame_from_landmarks(landmarks: dict[str, np.ndarray]) -> PelvisFrame:
    """The APP frame through four given landmarks (e.g. a phantom's truth)."""
    points = {name: np.asarray(point, float) for name, point in landmarks.items()}
    asis_mid = (points["asis_left"] + points["asis_right"]) / 2
    pubis_mid = (points["pubic_tubercle_left"] + points["pubic_tubercle_right"]) / 2
    guess = np.cross(points["asis_left"] - points["asis_right"], asis_mid - pubis_mid)
    return _frame_on(points, guess)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)

