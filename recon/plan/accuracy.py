"""How close the planners come to the truth of ``recon.phantom``: ``python -m recon.plan.accuracy [N]``.

Per screw of every vertebra wholly in view: the angle between the screw and the true pedicle axis, the
distance from the true isthmus centre to the screw's line, the isthmus width against the true one, whether
the diameter equals the catalogue rule applied to the true width, and the grade. Phantoms are drawn on a
1 mm grid around the lumbar spine from seeds that training never uses.

With ``--network [MODEL]`` both planners work on the segmentation network's labels of each phantom's CT (the
shipped model by default) instead of the true labels: what a user of ``recon run`` gets, against the same truth.

Per hip of ``plan_hip`` on a 1.5 mm grid reaching below the femoral heads: the femoral head centre and
radius errors, the acetabulum radius error, the angle between the planned and the true anterior pelvic
plane, and the cup's inclination and anteversion measured back from its axis in the true APP frame.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from recon.geometry import angle_between_deg
from recon.phantom import Phantom, make_phantom
from recon.plan import cup_angles
from recon.plan.hip import plan_hip
from recon.plan.implants import load_screw_catalogue
from recon.plan.pelvis import frame_from_landmarks
from recon.plan.spine import plan_spine
from recon.segmentation.infer import segment
from recon.segmentation.model import Model, load_model
from recon.volume import LabelMap

SEED_BASE = 970_000_000
GRID_SHAPE = (180, 220, 300)
GRID_SPACING_MM = (1.0, 1.0, 1.0)
HIP_SEED_BASE = 970_100_000
HIP_GRID_SHAPE = (200, 150, 320)
HIP_GRID_SPACING_MM = (1.5, 1.5, 1.5)


def screw_errors(seed: int, model: Model | None = None) -> list[dict]:
    """One row per screw whose vertebral body centre is in view (a label cut by the image's edge may still
    be refused, with the field of view as the reason); planned on ``model``'s labels when one is given."""
    phantom = make_phantom(seed, shape=GRID_SHAPE, spacing_mm=GRID_SPACING_MM)
    plan = plan_spine(_labels(phantom, model))
    catalogue = load_screw_catalogue()
    rows = []
    for screw in plan.screws:
        vertebra = phantom.truth["vertebrae"].get(screw.vertebra)
        if vertebra is None or not vertebra["in_field_of_view"]:
            continue
        truth = vertebra[f"pedicle_{screw.side}"]
        row = {"seed": seed, "screw": f"{screw.level} {screw.side}", "status": screw.status, "reason": screw.reason,
               "true_width_mm": truth["width_mm"]}
        if screw.status == "planned":
            axis = np.subtract(screw.tip_lps_mm, screw.entry_lps_mm)
            axis /= np.linalg.norm(axis)
            offset = np.subtract(truth["isthmus_center_lps_mm"], screw.entry_lps_mm)
            row.update({
                "angle_deg": angle_between_deg(axis, np.asarray(truth["axis_lps"])),
                "isthmus_distance_mm": float(np.linalg.norm(np.cross(offset, axis))),
                "width_mm": screw.isthmus_width_mm,
                "diameter_as_rule": screw.diameter_mm == catalogue.largest_diameter(0.8 * truth["width_mm"]),
                "grade": screw.grade,
            })
        rows.append(row)
    return rows


def _labels(phantom: Phantom, model: Model | None) -> LabelMap:
    return phantom.labels if model is None else segment(phantom.ct, model=model)


def summarize(rows: list[dict]) -> dict:
    planned = [row for row in rows if row["status"] == "planned"]
    cut_off = sum("field of view" in (row["reason"] or "") for row in rows)
    if not planned:
        return {"screws": len(rows), "cut_off_by_field_of_view": cut_off, "planned": 0}
    angles = np.array([row["angle_deg"] for row in planned])
    distances = np.array([row["isthmus_distance_mm"] for row in planned])
    width_errors = np.array([row["width_mm"] - row["true_width_mm"] for row in planned])
    return {
        "screws": len(rows),
        "cut_off_by_field_of_view": cut_off,
        "planned": len(planned),
        "angle_deg_median": float(np.median(angles)),
        "angle_deg_p90": float(np.percentile(angles, 90)),
        "angle_deg_max": float(angles.max()),
        "within_3_deg": float(np.mean(angles <= 3.0)),
        "isthmus_distance_mm_p90": float(np.percentile(distances, 90)),
        "isthmus_distance_mm_max": float(distances.max()),
        "within_1_5_mm": float(np.mean(distances <= 1.5)),
        "width_error_mm_mean": float(width_errors.mean()),
        "width_error_mm_abs_max": float(np.abs(width_errors).max()),
        "diameter_as_rule": float(np.mean([row["diameter_as_rule"] for row in planned])),
        "grade_a": float(np.mean([row["grade"] == "A" for row in planned])),
    }


def cup_errors(seed: int, model: Model | None = None) -> list[dict]:
    phantom = make_phantom(seed, shape=HIP_GRID_SHAPE, spacing_mm=HIP_GRID_SPACING_MM)
    plan = plan_hip(_labels(phantom, model), ct=phantom.ct)
    truth_frame = frame_from_landmarks(phantom.truth["landmarks_lps_mm"])
    rows = []
    for cup in plan.sides:
        truth = phantom.truth["hips"][cup.side]
        row = {"seed": seed, "side": cup.side, "status": cup.status, "reason": cup.reason}
        if cup.status == "planned":
            frame = frame_from_landmarks(cup.app_landmarks_lps_mm)
            lateral = truth_frame.left if cup.side == "left" else -truth_frame.left
            back = cup_angles.radiographic(np.asarray(cup.cup_axis_lps), lateral, truth_frame.anterior,
                                           truth_frame.superior)
            row.update({
                "head_center_mm": float(np.linalg.norm(np.subtract(cup.femoral_head_center_lps_mm,
                                                                   truth["femoral_head_center_lps_mm"]))),
                "head_radius_mm": cup.femoral_head_radius_mm - truth["femoral_head_radius_mm"],
                "acetabulum_radius_mm": cup.acetabulum_radius_mm - truth["acetabulum_radius_mm"],
                "app_deg": angle_between_deg(frame.anterior, truth_frame.anterior),
                "inclination_in_true_app_deg": back.inclination_deg - cup.inclination_deg,
                "anteversion_in_true_app_deg": back.anteversion_deg - cup.anteversion_deg,
            })
        rows.append(row)
    return rows


def summarize_cups(rows: list[dict]) -> dict:
    planned = [row for row in rows if row["status"] == "planned"]
    figures = ("head_center_mm", "head_radius_mm", "acetabulum_radius_mm", "app_deg", "inclination_in_true_app_deg",
               "anteversion_in_true_app_deg")
    return {"sides": len(rows), "planned": len(planned),
            **{f"{name}_abs_median": float(np.median(np.abs([row[name] for row in planned])))
               for name in figures if planned},
            **{f"{name}_abs_max": float(np.max(np.abs([row[name] for row in planned]))) for name in figures if planned}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m recon.plan.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=6, help="phantoms per planner (default 6)")
    parser.add_argument("--network", nargs="?", const="", metavar="MODEL",
                        help="plan on this segmentation model's labels (default: the shipped one)")
    args = parser.parse_args(argv)
    model = None if args.network is None else load_model(args.network or None)
    rows = [row for n in range(args.count) for row in screw_errors(SEED_BASE + n, model)]
    cups = [row for n in range(args.count) for row in cup_errors(HIP_SEED_BASE + n, model)]
    for row in rows + cups:
        if row["status"] != "planned":
            print(f"seed {row['seed']} {row.get('screw', row.get('side'))}: not planned: {row['reason']}")
    print(json.dumps({"spine": summarize(rows), "hip": summarize_cups(cups)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
