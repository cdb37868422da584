"""``make bench``: print a Markdown table of recon's time, the reference's time and their ratio.

Loading: a 512 x 512 x 300 DICOM series written by this harness, read by ``recon.load_ct`` and by
SimpleITK's ImageSeriesReader with GDCM's file sorting (the reference). Both run from a warm file cache,
alternately, several times; the table reports the median of each.

Phantoms: ``make_phantom`` at both sizes. No other tool makes these, so the reference column is the time
budget the project set (1 s small, 30 s clinical on 2 cores) and the ratio is time / budget.

Evaluation: every bone of the clinical phantom's label map (512 x 512 x 300) against a copy shifted by
(2, -1, 1) voxels, by ``recon.evaluate`` and by DeepMind's surface-distance (the reference: per bone, full-size
masks, its surface distances, Dice, HD95, ASSD and surface Dice at 1, 2 and 3 mm). The two must agree before
they are timed. The project's budget for this is 3 s on 2 cores.

Meshing: every bone of the same label map by ``recon.mesh_labels`` (marching cubes, Taubin smoothing, volume
restoration, quality figures) and by VTK (the reference: per bone, the padded bounding box through
vtkDiscreteFlyingEdges3D and vtkWindowedSincPolyDataFilter, 20 iterations, pass band 0.01, as 3D Slicer
smooths surfaces). The project's budget is 5 s on 2 cores.

Segmentation: ``recon.segment`` with the shipped model on the clinical phantom's CT (512 x 512 x 300,
0.7 x 0.7 x 1.0 mm), in a child process so its peak memory can be read, against an nnU-Net 3d_fullres-sized
network as TotalSegmentator configures it at 1.5 mm (PlainConvUNet, 6 stages, 32-320 features, 118 classes,
random weights, from dynamic-network-architectures) running sliding-window inference (128^3 patches,
overlap 0.5) on the same CT resampled to 1.5 mm. The project's budget is 30 s and 4 GB on 2 cores. Then with
test-time zooms (``recon segment --zooms 1.1 0.9``) against the same call without them.

Spine planning: ``recon.plan_spine`` on the clinical phantom's labels, both sides of every vertebra in view.
No open tool plans pedicle screws automatically, so the reference is the project's budget of 1 s per
vertebra on 2 cores (for scale: an atlas-based planner took 312 s for 10 trajectories; a commercial one
takes about 20 s per vertebra).

End to end: ``recon run`` on the clinical phantom written as a DICOM series (every output: labels, DICOM SEG,
meshes, both plans, scene, preview, report, provenance), after a first run has loaded the model; the
reference is the project's budget of 60 s on 2 cores (commercial planners claim 1-3 minutes per patient;
TotalSegmentator's fastest CPU setting takes about 70 s for segmentation alone). A second line lists the
stages' times.

Batch: 20 small phantom studies (DICOM) through ``recon.run_batch`` with 2 worker processes against 1 (the
reference), each in a fresh output folder; the per-case overhead is the 1-worker batch's time per case minus
the mean time of ``run_study`` on the same 20 studies one after another in this process, the model loaded. Then studies per hour with
2 workers on 4 clinical-size phantom studies (512 x 512 x 300 DICOM).

Hip planning: ``recon.plan_hip`` on a phantom's labels at 1.5 mm, both sides; the reference is the project's
budget of 2 s per side.

Training: one step of the default recipe (the shipped network, a batch of two 80^3 patches, forward, Dice-CE
loss, backward, AdamW) with its convolutions in bfloat16 (``"autocast": "bfloat16"``) against the same step in
float32 (the reference), on the same random batch, after a warm-up step of each. Then the two parts of making
the batches that recon does its own way against the library calls they replace: the Radon transform of an
implant's metal for its streaks (skimage's radon) and the zoom of a scaled patch (scipy's ndimage.zoom).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import surface_distance

import recon
from recon.batch import find_cases, run_batch
from recon.evaluation import evaluate
from recon.geometry import Grid
from recon.io.dicom_write import write_ct_series
from recon.io.images import write_image
from recon.mesh import mesh_labels
from recon.phantom import make_phantom
from recon.phantom.generate import SIZES as PHANTOM_SIZES
from recon.phantom.synth import synthesize
from recon.plan.accuracy import HIP_GRID_SHAPE, HIP_GRID_SPACING_MM, HIP_SEED_BASE
from recon.plan.hip import plan_hip
from recon.plan.spine import plan_spine
from recon.run import run_study
from recon.segmentation.accuracy import TEST_TIME_ZOOMS
from recon.volume import LabelMap, Volume, label_bounding_boxes

SHAPE = (512, 512, 300)
PHANTOM_BUDGETS_S = {"small": 1.0, "clinical": 30.0}
PLAN_BUDGET_S_PER_VERTEBRA = 1.0
PLAN_BUDGET_S_PER_HIP = 2.0
RUN_BUDGET_S = 60.0


def write_benchmark_series(folder: Path) -> Path:
    """Write (once) a 512 x 512 x 300 series of smooth noise, 0.7 x 0.7 x 1.0 mm."""
    if len(list(folder.glob("*.dcm"))) == SHAPE[2]:
        return folder
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 200, SHAPE).astype(np.float32)
    write_ct_series(Volume(Grid(SHAPE, (0.7, 0.7, 1.0), (-180.0, -180.0, -150.0)), hu), folder)
    return folder


def read_with_simpleitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_with_recon(folder: Path) -> np.ndarray:
    return recon.load_ct(folder).hu


def evaluate_with_deepmind(pred: LabelMap, ref: LabelMap) -> dict[str, dict[str, float]]:
    scores = {}
    for index, name in ref.names.items():
        truth, guess = ref.labels == index, pred.labels == index
        distances = surface_distance.compute_surface_distances(truth, guess, ref.grid.spacing_mm)
        scores[name] = {
            "dice": surface_distance.compute_dice_coefficient(truth, guess),
            "hd95_mm": surface_distance.compute_robust_hausdorff(distances, 95),
            "assd_mm": surface_distance.compute_average_surface_distance(distances),
            **{f"nsd_{t}mm": surface_distance.compute_surface_dice_at_tolerance(distances, t) for t in (1, 2, 3)},
        }
    return scores


def check_evaluations_agree(pred: LabelMap, ref: LabelMap) -> None:
    ours, theirs = evaluate(pred, ref).labels, evaluate_with_deepmind(pred, ref)
    for name, reference in theirs.items():
        score = ours[name]
        gaps = [abs(score.dice - reference["dice"]), abs(score.hd95_mm - reference["hd95_mm"]) / 10]
        gaps += [abs(score.nsd[t] - reference[f"nsd_{t}mm"]) for t in (1, 2, 3)]
        if max(gaps) > 1e-3:
            raise SystemExit(f"recon and surface-distance disagree on {name}: fix that before timing")


def mesh_with_vtk(labels: LabelMap) -> dict[int, int]:
    """Faces per label from VTK's discrete flying edges and windowed-sinc smoothing."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    faces = {}
    for index, box in label_bounding_boxes(labels.labels).items():
        mask = np.pad(labels.labels[box] == index, 1).astype(np.uint8)
        image = vtk.vtkImageData()
        image.SetDimensions(*mask.shape)
        image.SetSpacing(*labels.grid.spacing_mm)
        image.GetPointData().SetScalars(numpy_to_vtk(mask.ravel(order="F"), deep=True))
        surface = vtk.vtkDiscreteFlyingEdges3D()
        surface.SetInputData(image)
        surface.SetValue(0, 1)
        smoother = vtk.vtkWindowedSincPolyDataFilter()
        smoother.SetInputConnection(surface.GetOutputPort())
        smoother.SetNumberOfIterations(20)
        smoother.SetPassBand(0.01)
        smoother.NormalizeCoordinatesOn()
        smoother.Update()
        faces[index] = smoother.GetOutput().GetNumberOfPolys()
    return faces


def segment_in_child(path: Path, zooms: tuple[float, ...] = ()) -> tuple[float, float]:
    """Seconds and peak resident memory (GB) of ``recon.segment`` on the CT at ``path`` with test-time
    ``zooms``, in a fresh process."""
    code = ("import resource, sys, time; import recon; v = recon.load_ct(sys.argv[1]); t = time.perf_counter(); "
            "recon.segment(v, zooms=tuple(map(float, sys.argv[2:]))); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code, str(path), *map(str, zooms)], capture_output=True, text=True,
                          check=True)
    seconds, peak_kb = done.stdout.split()
    return float(seconds), float(peak_kb) / 2**20


def segment_with_nnunet_sized_network(volume: Volume) -> None:
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from monai.inferers import sliding_window_inference

    from recon.resample import canonical_grid, resample_volume

    network = PlainConvUNet(1, 6, [32, 64, 128, 256, 320, 320], torch.nn.Conv3d, 3, [1, 2, 2, 2, 2, 2], 2, 118,
                            2, conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                            nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}).eval()
    image = resample_volume(volume, canonical_grid(volume.grid, 1.5))
    with torch.inference_mode():
        scores = sliding_window_inference(torch.from_numpy(image)[None, None] / 1000, (128, 128, 128), 1,
                                          network, overlap=0.5, mode="gaussian")
        scores.argmax(dim=1)


def training_step_row(repeats: int) -> None:
    import torch

    from recon.segmentation.model import build_network
    from recon.segmentation.train import default_config, dice_ce_loss, labels_for, training_step

    config = default_config()
    classes = len(labels_for(config))
    network = build_network(config["network"], classes)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-6)
    images = torch.randn(config["batch_size"], 1, *config["patch_voxels"])
    targets = torch.randint(0, classes, (config["batch_size"], 1, *config["patch_voxels"]))
    criterion = dice_ce_loss()
    steps = {precision: lambda extra=extra: training_step(network, optimiser, criterion, images, targets,
                                                            config | extra)
             for precision, extra in (("bfloat16", {"autocast": "bfloat16"}), ("float32", {}))}
    median_times(steps, 1)
    times = median_times(steps, repeats)
    print(f"| training step, bfloat16 | batch 2 x 80^3, default network | {times['bfloat16']:.2f} | same step, "
          f"float32 | {times['float32']:.2f} | {times['bfloat16'] / times['float32']:.2f} |")


def training_data_rows(repeats: int) -> None:
    """The two parts of making training batches that recon does its own way, each against the library call it
    replaces: the metal's Radon transform for streaks (a 3 mm phantom with both hips replaced, every slice with
    metal) and the zoom of a scaled training patch (linear for the image, nearest for the labels)."""
    from scipy import ndimage
    from skimage.transform import radon

    from recon.phantom.implants import METAL_THRESHOLD_HU, PROJECTIONS, metal_sinogram
    from recon.segmentation.train import zoom_separably

    metal = make_phantom(1, shape=(112, 112, 150), spacing_mm=(3.0, 3.0, 3.0),
                         hip_replacement_probability=1.0).ct.hu > METAL_THRESHOLD_HU
    slices = [metal[:, :, k] for k in np.flatnonzero(metal.any(axis=(0, 1)))]
    angles = np.linspace(0.0, 180.0, PROJECTIONS, endpoint=False)
    times = median_times({"recon": lambda: [metal_sinogram(m, 112, angles) for m in slices],
                          "reference": lambda: [radon(m.astype(float), angles, circle=False) for m in slices]},
                         repeats)
    print(f"| metal sinogram | {len(slices)} slices 112x112, {PROJECTIONS} angles | {times['recon']:.3f} | "
          f"skimage radon | {times['reference']:.3f} | {times['recon'] / times['reference']:.3f} |")
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 300.0, (93, 71, 88)).astype(np.float32)
    labels = rng.integers(0, 13, image.shape).astype(np.uint8)
    factors = [80 / n for n in image.shape]
    times = median_times({"recon": lambda: (zoom_separably(image, factors, 1), zoom_separably(labels, factors, 0)),
                          "reference": lambda: [ndimage.zoom(a, factors, order=order, grid_mode=True, mode="nearest")
                                                for a, order in ((image, 1), (labels, 0))]}, repeats)
    print(f"| zoom a training patch | 93x71x88 to 80^3, image and labels | {times['recon']:.3f} | scipy ndimage.zoom | "
          f"{times['reference']:.3f} | {times['recon'] / times['reference']:.3f} |")


def run_row(phantom, workdir: Path) -> None:
    """recon run end to end on the clinical phantom written as DICOM, after the model is loaded (a first
    run loads and warms it), against the 60 s budget; then the per-stage breakdown."""
    study = workdir / "run_study_dicom"
    if len(list(study.glob("*.dcm"))) != phantom.ct.grid.shape[2]:
        write_ct_series(phantom.ct, study)
    run_study(study, workdir / "run_warm")
    started = time.perf_counter()
    provenance = run_study(study, workdir / "run")
    seconds = time.perf_counter() - started
    peak = max(stage["peak_memory_gb"] for stage in provenance["stages"].values())
    print(f"| recon run (peak {peak:.1f} GB) | clinical phantom DICOM, 512x512x300 | {seconds:.2f} | budget | "
          f"{RUN_BUDGET_S:.2f} | {seconds / RUN_BUDGET_S:.2f} |")
    print("|   stages | " + ", ".join(f"{name} {stage['seconds']:.1f} s" for name, stage in
                                      provenance["stages"].items()) + " | | | | |")


def batch_rows(workdir: Path) -> None:
    """The batch speed-up from 1 to 2 workers, the per-case overhead, and clinical-size studies per hour."""
    cases = find_cases([_phantom_studies(workdir / "batch_small", 20, "small")])
    run_study(cases[0].path, workdir / "batch_one")  # loads the model in this process
    started = time.perf_counter()
    for case in cases:  # the same studies one after another in this process: the reference per case
        run_study(case.path, workdir / "batch_one")
    in_process = (time.perf_counter() - started) / len(cases)
    times = median_times({f"{n} workers": lambda n=n: _complete_batch(cases, workdir / f"batch_{n}", workers=n)
                          for n in (1, 2)}, 1)
    print(f"| batch, 2 workers | 20 small phantom DICOM studies | {times['2 workers']:.2f} | batch, 1 worker | "
          f"{times['1 workers']:.2f} | {times['2 workers'] / times['1 workers']:.2f} |")
    per_case = times["1 workers"] / len(cases)
    print(f"|   per case | recon run in this process {in_process:.2f} s; 1-worker batch {per_case:.2f} s per case; "
          f"overhead {per_case - in_process:+.2f} s | | | | |")
    clinical = find_cases([_phantom_studies(workdir / "batch_clinical", 4, "clinical")])
    started = time.perf_counter()
    _complete_batch(clinical, workdir / "batch_clinical_out", workers=2)
    seconds = time.perf_counter() - started
    print(f"| batch, 2 workers | 4 clinical phantom DICOM studies, 512x512x300 | {seconds:.2f} | | | "
          f"{len(clinical) * 3600 / seconds:.0f} studies per hour |")


def _complete_batch(cases, out: Path, workers: int) -> None:
    """A batch from scratch that must finish every case."""
    shutil.rmtree(out, ignore_errors=True)
    if run_batch(cases, out, workers=workers)["cohort"]["done"] != len(cases):
        raise SystemExit(f"the batch in {out} did not finish every case: fix that before timing")


def _phantom_studies(folder: Path, count: int, size: str) -> Path:
    """``count`` phantom DICOM studies under ``folder`` (written once)."""
    if len(list(folder.glob("phantom_*"))) != count:
        shutil.rmtree(folder, ignore_errors=True)
        synthesize(folder, count=count, seed=980_000_000, size=size, fmt="dicom")
    return folder


def median_times(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("bench_out"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=("batch", "training"), help="run only this group of rows")
    args = parser.parse_args()
    if args.only:
        print("| stage | input | recon (s) | reference | reference (s) | ratio |\n|---|---|---|---|---|---|")
        if args.only == "batch":
            batch_rows(args.workdir)
        else:
            training_step_row(args.repeats)
            training_data_rows(args.repeats)
        return
    folder = write_benchmark_series(args.workdir / "dicom_512x512x300")
    ours, reference = read_with_recon(folder), read_with_simpleitk(folder)
    if not np.array_equal(ours.transpose(2, 1, 0), reference):
        raise SystemExit("recon and SimpleITK disagree on the benchmark series: fix that before timing")
    times = median_times({"recon": lambda: read_with_recon(folder), "reference": lambda: read_with_simpleitk(folder)},
                         args.repeats)
    print("| stage | input | recon (s) | reference | reference (s) | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| load DICOM | {'x'.join(map(str, SHAPE))} uncompressed | {times['recon']:.2f} | "
          f"SimpleITK ImageSeriesReader (GDCM sort) | {times['reference']:.2f} | "
          f"{times['recon'] / times['reference']:.2f} |")
    phantoms = {}
    for size, budget in PHANTOM_BUDGETS_S.items():
        repeats = args.repeats if size == "small" else 1
        seconds = median_times({size: lambda size=size: phantoms.update({size: make_phantom(0, size=size)})},
                               repeats)[size]
        shape = "x".join(map(str, PHANTOM_SIZES[size][0]))
        print(f"| make_phantom | {size} {shape} | {seconds:.2f} | budget | {budget:.2f} | {seconds / budget:.2f} |")
    ref = phantoms["clinical"].labels
    pred = LabelMap(ref.grid, np.roll(ref.labels, (2, -1, 1), axis=(0, 1, 2)), ref.names)
    check_evaluations_agree(pred, ref)
    times = median_times({"recon": lambda: evaluate(pred, ref), "reference": lambda: evaluate_with_deepmind(pred, ref)},
                         max(1, args.repeats // 2))
    print(f"| evaluate | {len(ref.names)} bones, {'x'.join(map(str, ref.grid.shape))} | {times['recon']:.2f} | "
          f"DeepMind surface-distance | {times['reference']:.2f} | {times['recon'] / times['reference']:.2f} |")
    if not all(mesh.quality.watertight for mesh in mesh_labels(ref).values()):
        raise SystemExit("recon.mesh_labels made an open mesh on the benchmark labels: fix that before timing")
    times = median_times({"recon": lambda: mesh_labels(ref), "reference": lambda: mesh_with_vtk(ref)},
                         max(1, args.repeats // 2))
    print(f"| mesh | {len(ref.names)} bones, {'x'.join(map(str, ref.grid.shape))} | {times['recon']:.2f} | "
          f"VTK flying edges + windowed sinc | {times['reference']:.2f} | {times['recon'] / times['reference']:.2f} |")
    ct_path = args.workdir / "phantom_clinical.nii.gz"
    write_image(phantoms["clinical"].ct.hu, phantoms["clinical"].ct.grid, ct_path)
    seconds, peak_gb = segment_in_child(ct_path)
    reference = median_times({"reference": lambda: segment_with_nnunet_sized_network(phantoms["clinical"].ct)}, 1)
    print(f"| segment (peak {peak_gb:.1f} GB) | clinical phantom CT, 512x512x300 | {seconds:.2f} | nnU-Net 3d_fullres-"
          f"sized network at 1.5 mm, random weights | {reference['reference']:.2f} | "
          f"{seconds / reference['reference']:.2f} |")
    zoomed, zoomed_peak_gb = segment_in_child(ct_path, TEST_TIME_ZOOMS)
    print(f"| segment --zooms {' '.join(map(str, TEST_TIME_ZOOMS))} (peak {zoomed_peak_gb:.1f} GB) | clinical phantom "
          f"CT, 512x512x300 | {zoomed:.2f} | recon.segment without zooms | {seconds:.2f} | {zoomed / seconds:.2f} |")
    plans = []
    seconds = median_times({"plan": lambda: plans.append(plan_spine(ref))}, max(1, args.repeats // 2))["plan"]
    levels = len({screw.vertebra for screw in plans[-1].screws})
    print(f"| plan spine | {levels} vertebrae, clinical phantom labels | {seconds:.2f} | budget 1 s per vertebra | "
          f"{levels * PLAN_BUDGET_S_PER_VERTEBRA:.2f} | {seconds / (levels * PLAN_BUDGET_S_PER_VERTEBRA):.2f} |")
    run_row(phantoms["clinical"], args.workdir)
    hip_labels = make_phantom(HIP_SEED_BASE, shape=HIP_GRID_SHAPE, spacing_mm=HIP_GRID_SPACING_MM).labels
    seconds = median_times({"hip": lambda: plan_hip(hip_labels)}, max(1, args.repeats // 2))["hip"]
    budget = 2 * PLAN_BUDGET_S_PER_HIP
    print(f"| plan hip | both sides, phantom labels {'x'.join(map(str, HIP_GRID_SHAPE))} at 1.5 mm | {seconds:.2f} | "
          f"budget 2 s per side | {budget:.2f} | {seconds / budget:.2f} |")
    training_step_row(args.repeats)
    training_data_rows(args.repeats)
    batch_rows(args.workdir)


if __name__ == "__main__":
    main()
