"""The pelvis's own frame: hip joint centres, femoral heads, and the anterior pelvic plane (APP).

Surfaces are marching-cubes vertices of the lightly smoothed labels (sub-voxel). Spheres are fitted to the
femoral head where it faces the hip bone and to the acetabulum where it faces the femur, then refitted to
the points lying on the first sphere. Given the CT, the femoral head is then refitted to its own edge on it
(``head_on_ct``): a label's surface at a segmentation network's resolution takes the joint space into the head,
where the CT shows that space as a darker band between the head's cortex and the acetabulum's.

The APP is the plane touching the front of the pelvis at both anterior superior iliac spines (ASIS) and both
pubic tubercles: seen from the side along the line joining the hip centres, it is the edge of the pelvis's convex
outline that bridges the part above the hip centres (the spines) and the part below (the pubis); each landmark is
the point of its side and region that lies farthest forward across that edge, and the plane is refitted to the
four. A spine and tubercle of one side farther apart or closer together than the inguinal ligament that joins
them ever is (``INGUINAL_MM``) were found on something other than a whole hip bone, and the plane is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import ConvexHull, cKDTree
from skimage.measure import marching_cubes

from recon.volume import LabelMap, Volume

CONTACT_MM = 8.0  # femur and hip bone surfaces this close face each other across the joint
ON_SPHERE_MM = 1.5
SOCKET_REACH_MM = 5.0  # the acetabulum lies within the joint space (a few mm) outside the head
SPHERE_ROUNDS = 3
MIN_SURFACE_POINTS = 30
EDGE_INSIDE_MM = 10.0  # the head's edge is sought this far inside the acetabulum's surface
EDGE_OUTSIDE_MM = 1.5  # and the acetabulum's cortex up to this far outside it
SOCKET_CORTEX_MM = 2.0  # the acetabulum's cortex peaks no deeper than this inside its label's surface
EDGE_STEP_MM = 0.5
EDGE_SMOOTHING_MM = 0.5
MIN_EDGE_CONTRAST_HU = 100.0  # the joint space this much darker than both cortices: a joint space, not noise
EDGE_LINES = 1500  # at most this many lines (every n-th surface point of the acetabulum)
EDGE_RESIDUAL_MM = 0.5  # a head's edges lie this close to its sphere (rms); noise's scatter across ON_SPHERE_MM
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
    facing = femur[cKDTree(hip).query(femur, distance_upper_bound=CONTACT_MM)[0] < CONTACT_MM]
    head = _refitted(femur, fit_sphere(facing))
    near_head = np.linalg.norm(hip - head.center_lps_mm, axis=1) < head.radius_mm + SOCKET_REACH_MM
    return head, _refitted(hip, fit_sphere(hip[near_head]))


def _refitted(points: np.ndarray, sphere: Sphere) -> Sphere:
    """``sphere`` refitted ``SPHERE_ROUNDS`` times to those of ``points`` that lie on it."""
    for _ in range(SPHERE_ROUNDS):
        sphere = fit_sphere(_on_sphere(points, sphere))
    return sphere


def head_on_ct(socket: Sphere, hip: np.ndarray, ct: Volume) -> Sphere | None:
    """The femoral head fitted to its edge on ``ct`` along lines from the acetabulum's centre through the hip
    bone's surface points (``hip``) on the acetabulum, or None where too few lines show a joint space.

    Along each line the acetabulum's cortex is the brightest point from ``SOCKET_CORTEX_MM`` inside the
    acetabulum's surface outwards; inwards from it the profile falls to the joint space and rises again to the
    head's cortex, and the head's edge is where it crosses halfway between the two. A line whose joint space is
    not ``MIN_EDGE_CONTRAST_HU`` darker than both cortices is left out (a narrowed joint; an older patient's dim
    cortices at 3 mm), and the head is refused unless the edges found lie on it within ``EDGE_RESIDUAL_MM`` (noise
    in a CT without a joint space also makes edges, in a band just inside the acetabulum's cortex but scattered
    across it)."""
    directions = _on_sphere(hip, socket) - socket.center_lps_mm
    directions = directions[:: max(1, len(directions) // EDGE_LINES)]
    directions /= np.linalg.norm(directions, axis=1)[:, None]
    radii = np.arange(socket.radius_mm - EDGE_INSIDE_MM, socket.radius_mm + EDGE_OUTSIDE_MM, EDGE_STEP_MM)
    points = socket.center_lps_mm + directions[:, None, :] * radii[None, :, None]
    index = ct.grid.lps_to_index(points.reshape(-1, 3)).T
    profiles = ndimage.map_coordinates(ct.hu, index, output=np.float32, order=1, cval=-1000.0)
    profiles = ndimage.gaussian_filter1d(profiles.reshape(len(directions), len(radii)),
                                         EDGE_SMOOTHING_MM / EDGE_STEP_MM, axis=1)
    cortex_from = int(np.searchsorted(radii, socket.radius_mm - SOCKET_CORTEX_MM))
    edges = [socket.center_lps_mm + radius * direction for profile, direction in zip(profiles, directions)
             if (radius := _head_edge(profile, radii, cortex_from)) is not None]
    try:
        fitted = _refitted(np.array(edges), fit_sphere(np.array(edges)))
    except PelvisError:  # too few edges, or too few on one sphere
        return None
    return fitted if fitted.residual_mm <= EDGE_RESIDUAL_MM else None


def _head_edge(profile: np.ndarray, radii: np.ndarray, cortex_from: int) -> float | None:
    """The radius at which ``profile`` (HU along ``radii``) falls halfway from the head's cortex to the joint
    space, or None where the joint space does not show."""
    socket_peak = cortex_from + int(np.argmax(profile[cortex_from:]))
    joint = socket_peak
    while joint > 0 and profile[joint - 1] <= profile[joint]:
        joint -= 1
    head_peak = joint
    while head_peak > 0 and profile[head_peak - 1] >= profile[head_peak]:
        head_peak -= 1
    darkest = profile[joint]
    if min(profile[head_peak], profile[socket_peak]) - darkest < MIN_EDGE_CONTRAST_HU:
        return None
    half = (profile[head_peak] + darkest) / 2
    outer = joint
    while profile[outer - 1] < half:
        outer -= 1
    inner = outer - 1  # profile[inner] >= half > profile[outer]
    share = (profile[inner] - half) / (profile[inner] - profile[outer])
    return float(radii[inner] + share * (radii[outer] - radii[inner]))


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

