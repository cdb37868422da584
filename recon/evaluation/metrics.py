"""Per-label agreement between a predicted and a reference label map, labels matched by name."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from recon.anatomy import is_vertebra
from recon.errors import InputError
from recon.evaluation.surface import Surface, directed_distances, surface_of
from recon.resample import resample_labels
from recon.volume import LabelMap, label_bounding_boxes, union_box

DEFAULT_TOLERANCES_MM = (1.0, 2.0, 3.0)
HD_PERCENTILE = 95.0
IDENTIFICATION_RADIUS_MM = 20.0
LOST_VOLUME_WARNING = 0.05

CONVENTIONS = {
    "frame": "distances in millimetres in patient space (LPS) on the reference grid, using its true spacing "
             "and direction",
    "grids": "a prediction on another grid is resampled onto the reference grid by nearest neighbour in "
             "patient space; label maps that share no physical space are refused",
    "labels": "labels are matched by name, not id",
    "surface": "surface elements as in DeepMind's surface-distance: one element per 2x2x2 cube of voxel centres "
               "that is neither all inside nor all outside, at the cube centre, weighted by the area of its "
               "marching-cubes (Lorensen) triangles in mm^2",
    "hd_mm": "Hausdorff distance: the largest distance from an element of either surface to the other surface",
    "hd95_mm": "for each direction (prediction to reference, reference to prediction) the area-weighted 95th "
               "percentile of element distances; HD95 is the larger of the two",
    "assd_mm": "average symmetric surface distance: the area-weighted mean of element distances over both "
               "surfaces together",
    "nsd": "normalised surface Dice at tolerance t: area of both surfaces within t mm of the other surface, "
           "divided by the total area of both",
    "volume": "volumes are voxel counts times voxel volume, in ml; volume_diff_ml is prediction minus reference",
    "centroid_distance_mm": "distance between the centroids of the voxel centres of the two masks",
    "identification": "VerSe rule: a reference vertebra is identified when the predicted vertebra centroid "
                      "closest to its centroid has the same level and lies within 20 mm",
    "empty_masks": "both empty: the label is reported absent and left out of every mean (absent labels are "
                   "counted); one empty: Dice, IoU and NSD are 0 and distances infinite",
    "aggregation": "in cohort statistics an infinite distance counts as the worst case: the length of the "
                   "reference image's diagonal in mm",
}


@dataclass(frozen=True)
class LabelScore:
    """The agreement of one label. ``status``: present (in both), missing_in_pred, missing_in_ref, absent."""

    name: str
    status: str
    volume_pred_ml: float
    volume_ref_ml: float
    dice: float | None = None
    iou: float | None = None
    hd_mm: float | None = None
    hd95_mm: float | None = None
    assd_mm: float | None = None
    nsd: dict[float, float | None] = field(default_factory=dict)
    centroid_distance_mm: float | None = None
    identified: bool | None = None

    def row(self) -> dict:
        """Flat metric columns: ``nsd`` becomes ``nsd_1mm``, ``nsd_2mm``... (None for an absent label)."""
        row = {
            "label": self.name, "status": self.status, "dice": self.dice, "iou": self.iou,
            "volume_pred_ml": self.volume_pred_ml, "volume_ref_ml": self.volume_ref_ml,
            "volume_diff_ml": self.volume_pred_ml - self.volume_ref_ml,
            "hd_mm": self.hd_mm, "hd95_mm": self.hd95_mm, "assd_mm": self.assd_mm,
        }
        row.update({nsd_column(t): value for t, value in self.nsd.items()})
        row.update({"centroid_distance_mm": self.centroid_distance_mm, "identified": self.identified})
        return row


@dataclass(frozen=True)
class Evaluation:
    """Every label's score, the VerSe identification rate and what was done to compare the two maps."""

    labels: dict[str, LabelScore]
    tolerances_mm: tuple[float, ...]
    worst_case_distance_mm: float
    identification_rate: float | None
    vertebrae_in_ref: int
    resampled: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def absent(self) -> list[str]:
        return [name for name, score in self.labels.items() if score.status == "absent"]

    def as_dict(self) -> dict:
        return {
            "labels": {name: _json_row(score.row()) for name, score in self.labels.items()},
            "absent_labels": self.absent,
            "identification_rate": self.identification_rate,
            "vertebrae_in_ref": self.vertebrae_in_ref,
            "resampled_pred_to_ref_grid": self.resampled,
            "worst_case_distance_mm": self.worst_case_distance_mm,
            "tolerances_mm": list(self.tolerances_mm),
            "warnings": list(self.warnings),
            "conventions": CONVENTIONS,
        }


def nsd_column(tolerance_mm: float) -> str:
    return f"nsd_{tolerance_mm:g}mm"


def evaluate(pred: LabelMap, ref: LabelMap, *, tolerances_mm=DEFAULT_TOLERANCES_MM) -> Evaluation:
    """Compare ``pred`` with ``ref`` label by label (matched by name), following ``CONVENTIONS``."""
    tolerances = _checked_tolerances(tolerances_mm)
    warnings = []
    resampled = not pred.grid.same_as(ref.grid, tolerance_mm=0.01 * min(ref.grid.spacing_mm))
    if resampled:
        before = _labelled_ml(pred)
        pred = resample_labels(pred, ref.grid)
        warnings.append("the prediction lies on another grid; it was resampled onto the reference grid by "
                        "nearest neighbour in patient space")
        lost = 1.0 - _labelled_ml(pred) / before if before else 0.0
        if abs(lost) > LOST_VOLUME_WARNING:
            warnings.append(f"resampling changed the prediction's labelled volume by {-100 * lost:+.1f}%: part "
                            "of it lies outside the reference image, or the grids differ much in resolution")
    scores = _score_labels(pred, ref, tolerances)
    identified = [s.identified for s in scores.values() if s.identified is not None]
    return Evaluation(
        labels=scores, tolerances_mm=tolerances,
        worst_case_distance_mm=float(np.linalg.norm(np.multiply(ref.grid.shape, ref.grid.spacing_mm))),
        identification_rate=sum(identified) / len(identified) if identified else None,
        vertebrae_in_ref=len(identified), resampled=resampled, warnings=tuple(warnings),
    )


def _checked_tolerances(tolerances_mm) -> tuple[float, ...]:
    tolerances = tuple(float(t) for t in tolerances_mm)
    if not tolerances or not all(math.isfinite(t) and t >= 0 for t in tolerances):
        raise InputError(f"surface Dice tolerances must be finite non-negative mm, got {list(tolerances_mm)}")
    return tuple(dict.fromkeys(tolerances))


def _labelled_ml(labels: LabelMap) -> float:
    return np.count_nonzero(labels.labels) * float(np.prod(labels.grid.spacing_mm)) / 1000.0


def _score_labels(pred: LabelMap, ref: LabelMap, tolerances_mm: tuple[float, ...]) -> dict[str, LabelScore]:
    """Scores for every name either map declares; both maps on the same grid."""
    pred_boxes, ref_boxes = _boxes_by_name(pred), _boxes_by_name(ref)
    pred_centroids, ref_centroids = _centroids(pred, pred_boxes), _centroids(ref, ref_boxes)
    names = list(dict.fromkeys(list(ref.names.values()) + list(pred.names.values())))
    scores = {}
    for name in names:
        box = union_box(pred_boxes.get(name), ref_boxes.get(name))
        score = _score(name, pred, ref, box, tolerances_mm)
        if score.status == "present":
            distance = float(np.linalg.norm(pred_centroids[name] - ref_centroids[name]))
            score = replace(score, centroid_distance_mm=distance)
        if is_vertebra(name) and name in ref_centroids:
            score = replace(score, identified=_identified(name, ref_centroids[name], pred_centroids))
        scores[name] = score
    return scores


def _score(name: str, pred: LabelMap, ref: LabelMap, box, tolerances_mm) -> LabelScore:
    voxel_ml = float(np.prod(ref.grid.spacing_mm)) / 1000.0
    if box is None:
        return LabelScore(name, "absent", 0.0, 0.0, nsd={t: None for t in tolerances_mm})
    in_pred, in_ref = _mask(pred, name, box), _mask(ref, name, box)
    n_pred, n_ref = int(np.count_nonzero(in_pred)), int(np.count_nonzero(in_ref))
    volumes = {"volume_pred_ml": n_pred * voxel_ml, "volume_ref_ml": n_ref * voxel_ml}
    if n_pred == 0 or n_ref == 0:
        status = "missing_in_pred" if n_pred == 0 else "missing_in_ref"
        return LabelScore(name, status, dice=0.0, iou=0.0, hd_mm=math.inf, hd95_mm=math.inf, assd_mm=math.inf,
                          nsd={t: 0.0 for t in tolerances_mm}, centroid_distance_mm=math.inf, **volumes)
    overlap = int(np.count_nonzero(in_pred & in_ref))
    spacing = ref.grid.spacing_mm
    surfaces = surface_of(in_pred, spacing), surface_of(in_ref, spacing)
    return LabelScore(name, "present", dice=2.0 * overlap / (n_pred + n_ref),
                      iou=overlap / (n_pred + n_ref - overlap), **_surface_scores(*surfaces, tolerances_mm),
                      **volumes)


def _surface_scores(pred: Surface, ref: Surface, tolerances_mm) -> dict:
    to_ref, to_pred = directed_distances(pred, ref), directed_distances(ref, pred)
    areas = np.concatenate([pred.areas_mm2, ref.areas_mm2])
    distances = np.concatenate([to_ref, to_pred])
    return {
        "hd_mm": float(distances.max()),
        "hd95_mm": max(_weighted_percentile(to_ref, pred.areas_mm2), _weighted_percentile(to_pred, ref.areas_mm2)),
        "assd_mm": float(np.sum(distances * areas) / np.sum(areas)),
        "nsd": {t: float(np.sum(areas[distances <= t]) / np.sum(areas)) for t in tolerances_mm},
    }


def _weighted_percentile(distances: np.ndarray, areas: np.ndarray) -> float:
    """The smallest distance whose cumulative area share reaches the percentile (DeepMind's rule)."""
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    index = int(np.searchsorted(cumulative, HD_PERCENTILE / 100.0))
    return float(distances[order][min(index, len(order) - 1)])


def _boxes_by_name(labels: LabelMap) -> dict[str, tuple[slice, ...]]:
    """The bounding box of each named label present."""
    found = {}
    for index, box in label_bounding_boxes(labels.labels).items():
        if index in labels.names:
            name = labels.names[index]
            found[name] = union_box(found.get(name), box)
    return found


def _mask(labels: LabelMap, name: str, box) -> np.ndarray:
    ids = [index for index, label_name in labels.names.items() if label_name == name]
    crop = labels.labels[box]
    return np.isin(crop, ids) if len(ids) > 1 else crop == (ids[0] if ids else -1)


def _centroids(labels: LabelMap, boxes: dict) -> dict[str, np.ndarray]:
    """The LPS centroid of each present label's voxel centres."""
    centroids = {}
    for name, box in boxes.items():
        offset = np.array([s.start for s in box])
        centroids[name] = labels.grid.index_to_lps(np.argwhere(_mask(labels, name, box)).mean(axis=0) + offset)
    return centroids


def _identified(name: str, centre: np.ndarray, predicted: dict[str, np.ndarray]) -> bool:
    """VerSe: the predicted vertebra nearest to the reference centroid is the same level, within 20 mm."""
    candidates = [(float(np.linalg.norm(c - centre)), n) for n, c in predicted.items() if is_vertebra(n)]
    if not candidates:
        return False
    distance, nearest = min(candidates)
    return nearest == name and distance <= IDENTIFICATION_RADIUS_MM


def _json_row(row: dict) -> dict:
    return {key: ("inf" if isinstance(value, float) and math.isinf(value) else value) for key, value in row.items()}
