"""The accuracy figures a model card reports, measured (never tuned on): held-out phantoms, and the real
studies in ``../shared/data`` when they are there. ``python -m recon.segmentation.accuracy MODEL`` writes them
into MODEL/model.json (the weights, and so their sha256, are untouched)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from recon.anatomy import BONES, is_vertebra
from recon.evaluation import evaluate
from recon.geometry import Grid
from recon.io.atomic import atomic_path
from recon.io.labels import read_label_map
from recon.io.loading import load_ct
from recon.phantom import make_phantom
from recon.phantom.render import GEOMETRIC_SHARE
from recon.segmentation.infer import segment
from recon.segmentation.model import CARD_FILE, load_model, model_dir
from recon.segmentation.train import labelled_share_of
from recon.volume import LabelMap, Volume

LUMBAR_CROPS = (("L1", "L4"), ("L2", "L5"), ("T12", "L3"), ("L3", "L5"), ("T11", "L5"), ("L2", None),
                ("L4", None))  # (top, bottom): from the centre of one to the other's, or to the bottom of the scan
CROPS_ACROSS_MM = (150, 250)
HELD_OUT_SEED_BASE = 950_000_000  # neither a training nor a validation seed
HELD_OUT_PHANTOMS = 16  # 4 were too few to show the levels a scan cuts off: they gave L1 0.85, these 16 give 0.72
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LOW_DENSITY_FROM_HU, LOW_DENSITY_SHARE, LOW_DENSITY_OFFSET_HU = 60.0, 0.25, 20.0
TEST_TIME_ZOOMS = (1.1, 0.9)  # the model card's figures with ``recon segment --zooms 1.1 0.9`` too: 10% finer and
#                                coarser, within the scale augmentation the network learnt (0.75-1.2)
BODY_ID = 1  # spine_report/totalseg_vertebrae_body.nii.gz: 1 marks the vertebral bodies (2 the discs, six slabs
#              between the bodies, not the posterior elements that data/README.md names)


def held_out_phantoms(model, count: int = HELD_OUT_PHANTOMS, low_density: bool = False, zooms: tuple = (),
                      **phantom_options) -> dict:
    """Dice per bone (mean and worst over the phantoms) and the share of levels named right, on small phantoms
    (2 mm, another spacing than training's) drawn with ``phantom_options`` (``recon.phantom.make_phantom``'s:
    hips replaced or their fracture fixed, an auricular sacrum, facet joints, labels drawn with another
    ``labelled_share`` than the geometric truth), their bone made osteoporotic with ``low_density``
    (``osteoporotic``), segmented with test-time ``zooms`` (``recon.segment``'s)."""
    dice: dict[str, list[float]] = {}
    named, total = 0, 0
    for number in range(count):
        phantom = make_phantom(HELD_OUT_SEED_BASE + number, size="small", **phantom_options)
        ct = osteoporotic(phantom.ct, phantom.labels) if low_density else phantom.ct
        result = evaluate(segment(ct, model=model, zooms=zooms), phantom.labels)
        for name, score in result.labels.items():
            if name in BONES and name in phantom.labels.names.values():
                dice.setdefault(name, []).append(score.dice)
        named += sum(bool(s.identified) for s in result.labels.values() if s.identified is not None)
        total += result.vertebrae_in_ref
    return {"phantoms": count, "seeds_from": HELD_OUT_SEED_BASE,
            "dice_mean": {n: round(float(np.mean(v)), 4) for n, v in dice.items()},
            "dice_worst": {n: round(float(np.min(v)), 4) for n, v in dice.items()},
            "levels_named_right": f"{named}/{total}"}


def osteoporotic(ct: Volume, labels: LabelMap) -> Volume:
    """``ct`` with the bone of ``labels`` (and the voxel beside it) above ``LOW_DENSITY_FROM_HU`` brought to
    ``LOW_DENSITY_SHARE`` of its excess over that, less ``LOW_DENSITY_OFFSET_HU``: the phantoms' cancellous bone
    (60-300 HU) becomes 40-100 HU, below the 110 HU of osteoporosis (Pickhardt 2013), and their cortex a faint
    rim of 275-425 HU, as a thin shell shows on an elderly patient's CT."""
    bone = ndimage.binary_dilation(labels.labels > 0) & (ct.hu > LOW_DENSITY_FROM_HU)
    hu = ct.hu.astype(np.float32)
    hu[bone] = LOW_DENSITY_FROM_HU + (hu[bone] - LOW_DENSITY_FROM_HU) * LOW_DENSITY_SHARE - LOW_DENSITY_OFFSET_HU
    return Volume(ct.grid, hu)


def totalsegmentator_example(model, data: Path = SHARED_DATA, zooms: tuple = ()) -> dict:
    """``real/totalseg-example/ct.nii.gz`` (3 mm) against TotalSegmentator v1's masks, segmented with
    test-time ``zooms``; each vertebra also split into its body and its posterior elements
    (``vertebral_parts``)."""
    folder = data / "real" / "totalseg-example"
    predicted = segment(load_ct(folder / "ct.nii.gz"), model=model, zooms=zooms)
    reference = read_label_map(folder / "reference_v1")
    result = evaluate(predicted, reference)
    bodies = read_label_map(folder / "spine_report" / "totalseg_vertebrae_body.nii.gz").labels == BODY_ID
    return {"dice": {n: round(s.dice, 4) for n, s in result.labels.items() if s.dice is not None},
            "levels_named_right": {n: s.identified for n, s in result.labels.items() if is_vertebra(n)
                                   and s.identified is not None},
            **vertebral_parts(predicted, reference, bodies)}


def vertebral_parts(predicted: LabelMap, reference: LabelMap, bodies: np.ndarray) -> dict:
    """Dice of each reference vertebra's body and of its posterior elements (the rest of it: pedicles, arch,
    processes) apart, ``bodies`` marking the vertebral bodies on the same grid."""
    parts = {"dice_body": {}, "dice_posterior_elements": {}}
    ids = {name: index for index, name in predicted.names.items()}
    for index, name in reference.names.items():
        if not is_vertebra(name):
            continue
        truth, found = reference.labels == index, predicted.labels == ids.get(name, -1)
        for part, region in (("dice_body", bodies), ("dice_posterior_elements", ~bodies)):
            a, b = truth & region, found & region
            if a.any():
                parts[part][name] = _dice(a, b)
    return parts


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """The Dice overlap of two masks, to four places."""
    return round(2 * np.count_nonzero(a & b) / float(a.sum() + b.sum()), 4)


def lumbar_crop(ct: Volume, reference: LabelMap, top: str, bottom: str | None,
                across_mm: float) -> tuple[Volume, LabelMap]:
    """A box of ``ct`` and ``reference`` ``across_mm`` wide and deep round the lumbar spine, from the centre of
    vertebra ``bottom`` (or the bottom of the scan, for None) to the centre of ``top`` ("L4", "T12"...): a spine
    protocol's field of view."""
    ids = {name: number for number, name in reference.names.items()}
    i, j, _ = np.nonzero(np.isin(reference.labels, [ids[n] for n in ids if n.startswith("vertebrae_L")]))
    low = np.nonzero(reference.labels == ids[f"vertebrae_{bottom}"])[2].mean() if bottom else 0
    high = np.nonzero(reference.labels == ids[f"vertebrae_{top}"])[2].mean()
    half = np.array(across_mm) / 2 / np.array(ct.grid.spacing_mm[:2])
    start = np.maximum(np.array([i.mean(), j.mean()]) - half, 0).round().astype(int).tolist() + [round(low)]
    stop = np.minimum(np.array([i.mean(), j.mean()]) + half, ct.grid.shape[:2]).round().astype(int).tolist()
    stop += [round(high)]
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    grid = Grid(tuple(np.subtract(stop, start)), ct.grid.spacing_mm, ct.grid.index_to_lps(np.array(start)),
                ct.grid.direction)
    return Volume(grid, ct.hu[box].copy()), LabelMap(grid, reference.labels[box].copy(), reference.names)


def crop_naming(model, ct: Volume, reference: LabelMap, top: str, bottom: str | None, across_mm: float) -> dict:
    """``lumbar_crop``'s levels: what they were counted from, the vertebrae found and how many of them were named
    as the reference level that holds most of their voxels, and the pelvic bones found that the reference does
    not show in the crop."""
    volume, truth = lumbar_crop(ct, reference, top, bottom, across_mm)
    predicted = segment(volume, model=model)
    verdicts = []
    for number, name in predicted.names.items():
        if is_vertebra(name):
            most = int(np.bincount(truth.labels[predicted.labels == number].astype(np.int64)).argmax())
            if most:  # a vertebra found where the reference has none is not a name to judge
                verdicts.append(truth.names.get(most) == name)
    in_view = {truth.names[int(n)] for n in np.unique(truth.labels) if n}
    return {"counted_from": predicted.level_anchor, "vertebrae": len(verdicts), "named_right": sum(verdicts),
            "pelvic_bones_not_in_the_reference": sorted(
                {n for n in predicted.names.values() if not is_vertebra(n)} - in_view)}


def totalsegmentator_example_lumbar_crops(model, data: Path = SHARED_DATA) -> dict:
    """``crop_naming`` for each of ``LUMBAR_CROPS`` of ``real/totalseg-example``, ``CROPS_ACROSS_MM`` across."""
    folder = data / "real" / "totalseg-example"
    ct, reference = load_ct(folder / "ct.nii.gz"), read_label_map(folder / "reference_v1")
    return {f"{bottom or 'bottom of the scan'}-{top}, {across_mm} mm": crop_naming(model, ct, reference, top,
                                                                                   bottom, across_mm)
            for across_mm in CROPS_ACROSS_MM for top, bottom in LUMBAR_CROPS}


def phantom_lumbar_crops(model, seeds=range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + HELD_OUT_PHANTOMS)) -> dict:
    """``crop_naming`` for each of ``LUMBAR_CROPS`` whose levels a phantom of ``seeds`` shows, summed by what the
    levels were counted from: crops, crops with every vertebra named right, vertebrae, vertebrae named right."""
    totals: dict[str, list[int]] = {}
    for seed in seeds:
        phantom = make_phantom(seed, size="small")
        shown = {phantom.labels.names[int(n)] for n in np.unique(phantom.labels.labels) if n}
        for across_mm in CROPS_ACROSS_MM:
            for top, bottom in LUMBAR_CROPS:
                if {f"vertebrae_{level}" for level in (top, bottom) if level} <= shown:
                    crop = crop_naming(model, phantom.ct, phantom.labels, top, bottom, across_mm)
                    right, total = crop["named_right"], crop["vertebrae"]
                    counts = totals.setdefault(crop["counted_from"], [0, 0, 0, 0])
                    counts[:] = [counts[0] + 1, counts[1] + (right == total), counts[2] + right, counts[3] + total]
    return {anchor: {"crops": c, "crops_named_right": a, "vertebrae": t, "named_right": r}
            for anchor, (c, a, r, t) in totals.items()}


def tptbox_l3(model, data: Path = SHARED_DATA, zooms: tuple = ()) -> dict:
    """``real/tptbox-l3``: L3 against its vertebra mask (VerSe ids), as named, and as found: the vertebra that
    holds most of it, whatever level it was named (the crop shows no sacrum to count levels from)."""
    folder = data / "real" / "tptbox-l3"
    predicted = segment(load_ct(folder / "sub-ct_label-22_ct.nii.gz"), model=model, zooms=zooms)
    truth = read_label_map(folder / "sub-ct_seg-vert_label-22_msk.nii.gz", "verse")
    score = evaluate(predicted, truth).labels.get("vertebrae_L3")
    l3 = truth.labels == {name: number for number, name in truth.names.items()}["vertebrae_L3"]
    vertebrae = np.where(np.isin(predicted.labels, [n for n, name in predicted.names.items() if is_vertebra(name)]),
                         predicted.labels, 0).astype(np.int64)
    found = vertebrae == np.bincount(vertebrae[l3], minlength=2)[1:].argmax() + 1
    return {"dice_L3": round(score.dice, 4) if score and score.dice is not None else None,
            "dice_L3_as_found": _dice(found, l3)}


def measure(name_or_path) -> dict:
    model = load_model(name_or_path)
    figures = {"held_out_phantoms": held_out_phantoms(model),
               "held_out_phantom_lumbar_crops": phantom_lumbar_crops(model),
               "held_out_phantoms_with_hip_replacements": held_out_phantoms(model, hip_replacement_probability=1.0),
               "held_out_phantoms_with_hip_fixations": held_out_phantoms(model, hip_fixation_probability=1.0),
               "held_out_phantoms_with_auricular_sacrum": held_out_phantoms(model, auricular_sacrum_probability=1.0),
               "held_out_phantoms_with_facet_joints": held_out_phantoms(model, facet_joint_probability=1.0),
               "held_out_phantoms_with_low_density_bone": held_out_phantoms(model, low_density=True),
               "held_out_phantoms_with_test_time_zooms": held_out_phantoms(model, zooms=TEST_TIME_ZOOMS)}
    trained_share = _trained_share(model.card)
    if trained_share != GEOMETRIC_SHARE:  # also against labels drawn as the model learnt them
        figures["held_out_phantoms_with_training_labels"] = held_out_phantoms(model, labelled_share=trained_share)
    if SHARED_DATA.is_dir():
        figures["real_totalseg_example_vs_reference_v1"] = totalsegmentator_example(model)
        figures["real_tptbox_l3"] = tptbox_l3(model)
        figures["real_totalseg_example_with_test_time_zooms"] = totalsegmentator_example(model, zooms=TEST_TIME_ZOOMS)
        figures["real_tptbox_l3_with_test_time_zooms"] = tptbox_l3(model, zooms=TEST_TIME_ZOOMS)
        figures["real_totalseg_example_lumbar_crops"] = totalsegmentator_example_lumbar_crops(model)
    return figures


def _trained_share(card: dict) -> float:
    """The labelled share the model learnt (``labelled_share_of``): its run's, or, for an average of models
    (``recon.segmentation.average``), the one they all learnt; the geometric truth where they differ."""
    training = card.get("training", {})
    runs = [source.get("training") or {} for source in training.get("averaged", [])] or [training]
    shares = {labelled_share_of(run.get("configuration", {})) for run in runs}
    return shares.pop() if len(shares) == 1 else GEOMETRIC_SHARE


def main(argv: list[str]) -> None:
    folder = model_dir(argv[0] if argv else None)
    card = json.loads((folder / CARD_FILE).read_text())
    card["accuracy"] = {**card.get("accuracy", {}), **measure(folder)}
    with atomic_path(folder / CARD_FILE) as temporary:
        temporary.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["accuracy"], indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
