"""``make_phantom``: a CT volume, its label map and the exact truth, all from one seed."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recon.anatomy import LABEL_NAMES, OTHER_BONE, OTHER_BONE_ID
from recon.geometry import Grid
from recon.phantom.body import build_body
from recon.phantom.implants import metal_streaks
from recon.phantom.morphometry import (ALAR_VOID_RANGES, AURICULAR_SACRUM_RANGES, CORTEX_MM, SACRAL_APEX_CONTRAST,
                                      SACRAL_CANAL_RANGES, TISSUE_HU_RANGES, draw)
from recon.phantom.pelvis import build_pelvis, draw_pelvis
from recon.phantom.render import GEOMETRIC_SHARE, Imaging, apply_imaging, render
from recon.phantom.shapes import rotation_about
from recon.phantom.spine import build_spine
from recon.volume import LabelMap, Volume

SIZES = {
    "small": ((128, 128, 128), (2.0, 2.0, 2.0)),
    "clinical": ((512, 512, 300), (0.7, 0.7, 1.0)),
}
MAX_PATIENT_TILT_DEG = 10.0


@dataclass(frozen=True, eq=False)
class Phantom:
    ct: Volume
    labels: LabelMap
    truth: dict


def make_phantom(seed: int, *, size: str = "small", shape: tuple[int, int, int] | None = None,
                 spacing_mm: tuple[float, float, float] | None = None, contrast: bool | None = None,
                 label_other_bone: bool = False, hip_replacement_probability: float = 0.0,
                 hip_fixation_probability: float = 0.0, auricular_sacrum_probability: float = 0.0,
                 facet_joint_probability: float = 0.0, faint_sacral_apex_probability: float = 0.0,
                 alar_void_probability: float = 0.0, sacral_canal_probability: float = 0.0,
                 hip_joint_space_mm: tuple[float, float] | None = None,
                 iliac_crest_raise_mm: tuple[float, float] | None = None,
                 posterior_ilium_raise_mm: tuple[float, float] | None = None,
                 labelled_share: float = GEOMETRIC_SHARE) -> Phantom:
    """A synthetic CT of the lower spine and hips with labels and truth, reproducible from ``seed``.

    ``size`` picks a preset grid (``"small"``: 128^3 at 2 mm; ``"clinical"``: 512 x 512 x 300 at
    0.7 x 0.7 x 1.0 mm); ``shape`` and ``spacing_mm`` override it. ``contrast`` forces contrast-enhanced
    vessels and kidneys on or off (default: drawn, 70% on). ``label_other_bone`` also labels the ribs and the
    vertebrae above T11 (``OTHER_BONE``, where no named bone is), for training; the image stays the same.
    Each hip carries a hip replacement with ``hip_replacement_probability``, and each hip not replaced a hip
    fracture fixation with ``hip_fixation_probability`` (``implants.py``). The sacrum keeps its full width down
    the auricular surface with ``auricular_sacrum_probability`` (``morphometry.py``), else narrows from S1 down;
    its lower half and the coccyx keep only part of bone's contrast with ``faint_sacral_apex_probability``, and
    its lateral masses hold fatty marrow with ``alar_void_probability``, and its canal runs roofed down to the
    sacral hiatus with ``sacral_canal_probability``. ``hip_joint_space_mm`` is the range
    the hip joint space is drawn from, in place of ``morphometry.PELVIS_RANGES``'. ``iliac_crest_raise_mm`` is
    the range of how far the iliac wings reach above their default height (``morphometry.py``'s iliac height),
    ``posterior_ilium_raise_mm`` that of how far the posterior ilium behind the alae lies above its default.
    The vertebrae meet in facet joints with ``facet_joint_probability`` (``spine.py``), else their inferior
    articular processes stand apart.
    ``labelled_share``: how much of a voxel must lie inside a bone for it to carry the bone's label (0.5, the
    default, is the geometric truth; training labels partial-volume edge voxels as reference segmentations do).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    options = {"size": size, "shape": shape, "spacing_mm": spacing_mm, "contrast": contrast,
               "hip_replacement_probability": hip_replacement_probability,
               "hip_fixation_probability": hip_fixation_probability,
               "auricular_sacrum_probability": auricular_sacrum_probability,
               "facet_joint_probability": facet_joint_probability,
               "faint_sacral_apex_probability": faint_sacral_apex_probability,
               "alar_void_probability": alar_void_probability, "sacral_canal_probability": sacral_canal_probability,
               "hip_joint_space_mm": hip_joint_space_mm, "iliac_crest_raise_mm": iliac_crest_raise_mm,
               "posterior_ilium_raise_mm": posterior_ilium_raise_mm,
               "labelled_share": labelled_share}
    rng = np.random.default_rng(seed)
    detail_rng = np.random.default_rng((int(seed), 1))  # thorax, bowel content: leaves rng's draws as they were
    tissue = _draw_tissue(rng, contrast)
    shell_rng = np.random.default_rng((int(seed), 2))  # cortical shells: leaves rng's draws as they were
    cortex_mm = {bone: draw(shell_rng, span) for bone, span in CORTEX_MM.items()}
    pelvis_params = draw_pelvis(rng, np.random.default_rng((int(seed), 3)), hip_joint_space_mm)
    sacrum_rng = np.random.default_rng((int(seed), 6))  # leaves the other generators' draws as they were
    if sacrum_rng.uniform() < auricular_sacrum_probability:
        pelvis_params |= {name: draw(sacrum_rng, span) for name, span in AURICULAR_SACRUM_RANGES.items()}
    apex_rng = np.random.default_rng((int(seed), 8))  # leaves the other generators' draws as they were
    if apex_rng.uniform() < faint_sacral_apex_probability:
        pelvis_params["sacral_apex_contrast"] = draw(apex_rng, SACRAL_APEX_CONTRAST)
    void_rng = np.random.default_rng((int(seed), 9))  # leaves the other generators' draws as they were
    if void_rng.uniform() < alar_void_probability:
        pelvis_params |= {name: draw(void_rng, span) for name, span in ALAR_VOID_RANGES.items()}
    canal_rng = np.random.default_rng((int(seed), 10))  # leaves the other generators' draws as they were
    if canal_rng.uniform() < sacral_canal_probability:
        pelvis_params |= {name: draw(canal_rng, span) for name, span in SACRAL_CANAL_RANGES.items()}
    raises = {"iliac_crest_raise_mm": iliac_crest_raise_mm, "posterior_ilium_raise_mm": posterior_ilium_raise_mm}
    for stream, (name, span) in enumerate(raises.items(), start=11):
        if span is not None:  # each its own generator: leaves the other draws as they were
            pelvis_params[name] = draw(np.random.default_rng((int(seed), stream)), span)
    tilt_deg = rng.uniform(-1, 1, 3) * np.array([5.0, 5.0, 8.0])
    tilt_deg *= min(1.0, MAX_PATIENT_TILT_DEG / max(np.linalg.norm(tilt_deg), 1e-9))
    rotation = (rotation_about([0, 0, 1], np.radians(tilt_deg[2])) @ rotation_about([0, 1, 0], np.radians(tilt_deg[1]))
                @ rotation_about([1, 0, 0], np.radians(tilt_deg[0])))
    origin = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), 0.0])
    implant_rng = np.random.default_rng((int(seed), 4))  # leaves rng's draws as they were
    replaced = {side: implant_rng for side in ("left", "right") if implant_rng.uniform() < hip_replacement_probability}
    fixation_rng = np.random.default_rng((int(seed), 5))  # leaves the other generators' draws as they were
    fixed = {side: fixation_rng for side in ("left", "right")
             if fixation_rng.uniform() < hip_fixation_probability and side not in replaced}
    s1_center, s1_rotation, pelvis_soft, pelvis_bone, pelvis_truth, sacrum_bounds = build_pelvis(
        pelvis_params, origin, rotation, tissue, rng, cortex_mm=cortex_mm["pelvis"], replaced=replaced,
        fixed=fixed)
    facet_rng = np.random.default_rng((int(seed), 7))  # leaves the other generators' draws as they were
    facets = facet_rng.uniform() < facet_joint_probability
    spine_soft, spine_bone, vertebrae = build_spine(rng, s1_center, s1_rotation,
                                                   pelvis_params["lumbar_lordosis_deg"], tissue,
                                                   cortex_mm=cortex_mm["vertebra"], detail_rng=detail_rng,
                                                   facet_rng=facet_rng if facets else None)
    body, table, body_params = build_body(rng, origin, rotation, vertebrae, pelvis_truth["hips"],
                                          pelvis_params["inter_asis_mm"], tissue, sacrum_bounds=sacrum_bounds,
                                          detail_rng=detail_rng)
    grid = _grid(rng, size, shape, spacing_mm, vertebrae, pelvis_truth["hips"])
    imaging = Imaging(
        blur_sigma_mm=(float(rng.uniform(0.35, 0.8)),) * 2 + (float(max(0.4, 0.42 * grid.spacing_mm[2] * rng.uniform(1, 1.5))),),
        noise_std_hu=float(rng.uniform(6, 35)),
    )
    hu, labels = render(grid, body + table + spine_soft + pelvis_soft + spine_bone + pelvis_bone,
                        background_hu=tissue["air"], labelled_share=labelled_share)
    if replaced or fixed:
        hu = metal_streaks(hu, grid, implant_rng)
    ct = Volume(grid, apply_imaging(hu, grid, imaging, rng))
    if label_other_bone:
        _label_other_bone(labels, grid, spine_bone, tissue["air"])
    present = {int(i) for i in np.unique(labels)} - {0}
    names = {**LABEL_NAMES, OTHER_BONE_ID: OTHER_BONE}
    label_map = LabelMap(grid, labels, {i: name for i, name in names.items() if i in present})
    for vertebra in vertebrae.values():
        vertebra["in_field_of_view"] = _in_view(grid, vertebra["body_center_lps_mm"])
    for hip in pelvis_truth["hips"].values():
        hip["in_field_of_view"] = _in_view(grid, hip["femoral_head_center_lps_mm"])
    truth = {
        "vertebrae": vertebrae,
        **pelvis_truth,
        "generator": {
            "seed": int(seed),
            "options": options,
            "parameters": {"pelvis": pelvis_params, "tissue_hu": tissue, "cortex_mm": cortex_mm, "body": body_params,
                           "patient_tilt_deg": tilt_deg.tolist(),
                           "hip_replacements": sorted(replaced), "hip_fixations": sorted(fixed),
                           "facet_joints": bool(facets),
                           "imaging": imaging.__dict__,
                           "grid": {"shape": list(grid.shape), "spacing_mm": list(grid.spacing_mm),
                                    "origin_lps_mm": list(grid.origin_lps_mm)}},
        },
    }
    return Phantom(ct, label_map, truth)


def _label_other_bone(labels: np.ndarray, grid: Grid, spine_bone: list, air_hu: float) -> None:
    """Where no named bone is, ``OTHER_BONE_ID`` on the spine's unnamed bone (its paints without a label)."""
    unnamed = [replace(paint, label=OTHER_BONE_ID) for paint in spine_bone if paint.label is None]
    other = render(grid, unnamed, background_hu=air_hu)[1] > 0
    labels[other & (labels == 0)] = OTHER_BONE_ID


def _draw_tissue(rng: np.random.Generator, contrast: bool | None) -> dict[str, float]:
    tissue = {name: draw(rng, span) for name, span in TISSUE_HU_RANGES.items()}
    if contrast is None:
        contrast = bool(rng.uniform() < 0.7)
    if not contrast:
        for name in ("vessel", "kidney_cortex", "kidney_medulla"):
            tissue[name] = draw(rng, (30, 50))
    tissue["contrast"] = float(contrast)
    return tissue


def _grid(rng, size, shape, spacing_mm, vertebrae, hips) -> Grid:
    preset_shape, preset_spacing = SIZES[size]
    shape = tuple(shape or preset_shape)
    spacing = np.asarray(spacing_mm or preset_spacing, float)
    heads = np.mean([hip["femoral_head_center_lps_mm"] for hip in hips.values()], axis=0)
    l2 = np.asarray(vertebrae["vertebrae_L2"]["body_center_lps_mm"])
    center = heads + rng.uniform(0.2, 0.8) * (l2 - heads)
    center[0] += rng.uniform(-10, 10)
    center[1] = l2[1] - 30 + rng.uniform(-10, 10)
    origin = center - (np.asarray(shape) - 1) / 2 * spacing
    return Grid(shape, spacing, origin)


def _in_view(grid: Grid, point_lps_mm) -> bool:
    index = grid.lps_to_index(np.asarray(point_lps_mm))
    return bool(np.all((index >= -0.5) & (index <= np.asarray(grid.shape) - 0.5)))
