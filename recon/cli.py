"""The ``recon`` command line: argument parsing only; each command calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from recon import __version__
from recon.errors import InputError, ReconError

EXIT_INPUT_ERROR = 1
EXIT_SOME_FAILED = 3
EXIT_ALL_FAILED = 4
EXIT_INTERNAL_ERROR = 70
DEFAULT_SMOOTHING_ITERATIONS = 30  # recon.mesh's default, repeated so --help needs no heavy import
MODEL_HELP = ("model name under models/ or a model folder (default: the shipped one), or totalsegmentator to run "
              "TotalSegmentator if it is installed with its weights (offline, usage statistics off)")
LABEL_MAP_HELP = ("label names: a JSON file of id -> name, or one of the words recon, verse, totalsegmentator "
                  "(default: labels.json beside the label file, else label_<id>)")

SEG_IDENTITY_HELP = ("keep the patient's name, ID, birth date and sex and the visit's ID, date, accession number "
                     "and referring physician in segmentation.dcm (default: empty)")

log = logging.getLogger("recon")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if args.json_logs else logging.Formatter("recon: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler], force=True)
    if sys.stderr.isatty() and not args.json_logs:  # progress of stages longer than a second, on a terminal
        logging.getLogger("recon.run").setLevel(logging.INFO)
    if not args.verbose:  # pydicom's own messages quote raw header values and file paths
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        return args.command(args)
    except ReconError as err:
        print(f"recon: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the CLI never shows a raw stack trace unless asked to
        if args.verbose:
            raise
        print(
            f"recon: internal error: {type(err).__name__}: {err} (rerun with --verbose for details and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description="CT study in, surgical plan out.")
    parser.add_argument("--version", action="version", version=f"recon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (and show tracebacks)")
    parser.add_argument("--json-logs", action="store_true", help="log one JSON object per line on stderr")
    commands = parser.add_subparsers(title="commands", required=True)

    info = commands.add_parser("info", help="describe the series and the volume the loader sees")
    info.add_argument("input", help="DICOM folder, zip or DICOMDIR, a DICOM file, or a NIfTI/NRRD/MHA image")
    info.add_argument("--series", metavar="UID", help="SeriesInstanceUID to load instead of the automatic choice")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(command=_info)

    convert = commands.add_parser("convert", help="write the loaded CT as NIfTI, NRRD or MHA (by extension)")
    convert.add_argument("input", help="anything 'recon info' reads")
    convert.add_argument("output", help="output file: .nii.gz, .nii, .nrrd or .mha")
    convert.add_argument("--series", metavar="UID", help="SeriesInstanceUID to load instead of the automatic choice")
    convert.set_defaults(command=_convert)

    synth = commands.add_parser("synth", help="write synthetic CT phantoms with labels and ground truth")
    synth.add_argument("-o", "--output", required=True, help="output folder; each case goes to DIR/phantom_<seed>/")
    synth.add_argument("--count", type=int, default=1, help="number of phantoms (default 1)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the first phantom (default 0)")
    synth.add_argument("--size", choices=("small", "clinical"), default="small",
                       help="small: 128^3 at 2 mm; clinical: 512 x 512 x 300 at 0.7 x 0.7 x 1 mm")
    synth.add_argument("--format", choices=("dicom", "nifti"), default="dicom", help="CT as a DICOM series or NIfTI")
    synth.set_defaults(command=_synth)

    preview = commands.add_parser("preview", help="PNG of axial, coronal and sagittal slices at a bone window")
    preview.add_argument("input", help="anything 'recon info' reads")
    preview.add_argument("--labels", help="label image to outline")
    preview.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP)
    preview.add_argument("--series", metavar="UID", help="SeriesInstanceUID to load instead of the automatic choice")
    preview.add_argument("-o", "--output", required=True, help="PNG file to write")
    preview.set_defaults(command=_preview)

    evaluate = commands.add_parser(
        "evaluate", help="segmentation accuracy per label: Dice, IoU, HD, HD95, ASSD, surface Dice, volumes",
        description="Compare predicted label maps with reference ones, label by label (matched by name). PRED "
                    "and REF are label files, folders of per-structure masks (TotalSegmentator), or folders of "
                    "cases matched by file name. Label names: --label-map, else labels.json beside the file, "
                    "else label_<id>.")
    evaluate.add_argument("pred", help="predicted labels: file, structure folder or folder of cases")
    evaluate.add_argument("ref", help="reference labels: file, structure folder or folder of cases")
    evaluate.add_argument("-o", "--output", help="folder for metrics.csv, summary.json, summary.md and box plots")
    evaluate.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP + " (both sides)")
    evaluate.add_argument("--pred-label-map", metavar="FILE|WORD", help="label names of PRED only")
    evaluate.add_argument("--ref-label-map", metavar="FILE|WORD", help="label names of REF only")
    evaluate.add_argument("--tolerance-mm", default="1,2,3", type=_numbers,
                          help="surface Dice tolerances in mm, comma-separated (default 1,2,3)")
    evaluate.add_argument("--json", action="store_true", help="print the per-label table as JSON")
    evaluate.set_defaults(command=_evaluate)

    mesh = commands.add_parser(
        "mesh", help="closed surface meshes of every bone (STL, PLY, OBJ, GLB) and a Slicer .seg.nrrd",
        description="One watertight, smoothed surface per label in LPS millimetres, named after the label "
                    "(DIR/vertebrae_L4.stl), a 3D Slicer segmentation.seg.nrrd and meshes.json with each "
                    "mesh's quality figures.")
    mesh.add_argument("labels", help="label image, or a folder of per-structure masks")
    mesh.add_argument("-o", "--output", required=True, help="output folder")
    mesh.add_argument("--format", default="stl", type=_words,
                      help="comma-separated: stl, ply, obj, glb (one scene of all bones); default stl")
    mesh.add_argument("--smooth", type=int, default=DEFAULT_SMOOTHING_ITERATIONS,
                      help=f"Taubin smoothing passes, 0 for none (default {DEFAULT_SMOOTHING_ITERATIONS})")
    mesh.add_argument("--faces", type=int, help="decimate each mesh to at most this many faces")
    mesh.add_argument("--largest-only", action="store_true",
                      help="keep only the largest connected piece of each bone (default: keep and count all)")
    mesh.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP)
    mesh.set_defaults(command=_mesh)

    segment = commands.add_parser(
        "segment", help="segment the bones of a CT (or bring an existing segmentation to recon's labels)",
        description="Writes OUT/labels.nii.gz, OUT/labels.json (id -> name, with each vertebra level's "
                    "confidence and what the levels were counted from) and OUT/segmentation.seg.nrrd for 3D "
                    "Slicer, on the CT's grid.")
    segment.add_argument("input", help="anything 'recon info' reads")
    segment.add_argument("-o", "--output", required=True, help="output folder")
    segment.add_argument("--model", help=MODEL_HELP)
    segment.add_argument("--labels", metavar="EXISTING",
                         help="use this segmentation instead of the network: a label file or a folder of "
                              "per-structure masks (e.g. TotalSegmentator's output)")
    segment.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP + " (for --labels)")
    segment.add_argument("--series", metavar="UID", help="SeriesInstanceUID to load instead of the automatic choice")
    _add_zooms(segment)
    segment.set_defaults(command=_segment)

    train = commands.add_parser(
        "train", help="train the bone segmentation network on phantoms (and optionally a user dataset)",
        description="Train a 3D U-Net (MONAI) on phantoms drawn on the fly; with --data, also on an nnU-Net v2 raw "
                    "dataset whose labels are mapped by name. Writes OUT/model.safetensors, OUT/model.json, "
                    "OUT/config.json and checkpoints; --resume continues from the last checkpoint.")
    train.add_argument("-o", "--output", required=True, help="model folder, e.g. models/NAME")
    train.add_argument("--data", help="nnU-Net v2 raw dataset folder (imagesTr/, labelsTr/, dataset.json)")
    train.add_argument("--steps", type=int, help="training steps (default from the configuration)")
    train.add_argument("--seed", type=int, help="seed (default from the configuration)")
    train.add_argument("--config", help="training configuration JSON (default: recon's own)")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    train.add_argument("--workers", type=_count, default=0,
                       help="processes making training batches beside the training one (default 0: it makes "
                            "them itself); the model is the same either way")
    train.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    train.add_argument("--init", metavar="MODEL", help="start from this trained model's weights (fine-tuning)")
    train.set_defaults(command=_train)

    average = commands.add_parser(
        "average", help="average the weights of models fine-tuned from one start (a model soup)",
        description="Write OUT/model.safetensors and OUT/model.json: the weighted average of the models' weights. "
                    "They must share network, classes, spacing and intensity handling; the card records each "
                    "model's sha256, weight and training. Measure the result before shipping it.")
    average.add_argument("models", nargs="+", metavar="MODEL", help="model names or folders (two or more)")
    average.add_argument("--weights", nargs="+", type=float, metavar="W",
                         help="one positive weight per model (default: equal)")
    average.add_argument("-o", "--output", required=True, help="model folder, e.g. models/NAME")
    average.set_defaults(command=_average)

    run = commands.add_parser(
        "run", help="CT study in, plan out: segment, mesh, plan screws and cups, write every output",
        description="Writes into OUT: labels.nii.gz, labels.json, segmentation.seg.nrrd, meshes/<bone>.stl, "
                    "scene.glb (bones, screws, cups), plan.json, plan.mrk.json, plan.csv, screws.stl, cups.stl, "
                    "preview.png, report.html, provenance.json and, for DICOM input, segmentation.dcm (DICOM "
                    "SEG). For research use; every plan needs a clinician's review.")
    run.add_argument("input", help="anything 'recon info' reads")
    run.add_argument("-o", "--output", required=True, help="output folder")
    run.add_argument("--procedure", choices=("spine", "hip", "all"), default="all")
    run.add_argument("--model", help=MODEL_HELP)
    run.add_argument("--seg", metavar="EXISTING", help="use this segmentation instead of the network (any source "
                                                      "'recon segment --labels' accepts)")
    run.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP + " (for --seg)")
    run.add_argument("--series", metavar="UID", help="SeriesInstanceUID to load instead of the automatic choice")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network runs")
    run.add_argument("--seg-with-identity", action="store_true", help=SEG_IDENTITY_HELP)
    _add_zooms(run)
    run.set_defaults(command=_run)

    batch = commands.add_parser(
        "batch", help="many studies: each as 'recon run' into OUT/<case_id>/, resumable, locally or on Dask",
        description="Each case (a DICOM study folder, a NIfTI/NRRD/MHA file or zip, or a manifest row) gets what "
                    "'recon run' writes, in OUT/<case_id>/, which appears only when complete. OUT/batch_summary.csv "
                    "and .json list every case (status, error, stage times, plan figures) and the cohort. Exit "
                    f"code 0: all done; {EXIT_SOME_FAILED}: some failed; {EXIT_ALL_FAILED}: all failed.")
    batch.add_argument("inputs", nargs="*", metavar="INPUT",
                       help="folders to scan for studies, study folders, image files, or manifest CSVs")
    batch.add_argument("-o", "--output", required=True, help="output folder")
    batch.add_argument("--manifest", metavar="CSV", help="cases as rows 'case_id,path[,procedure][,seg]'")
    batch.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    batch.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler, e.g. tcp://HOST:8786, instead of "
                                                              "local workers; OUT must be visible to every worker")
    batch.add_argument("--resume", action="store_true",
                       help="keep finished cases whose input, model, version and options are unchanged")
    batch.add_argument("--procedure", choices=("spine", "hip", "all"), default="all")
    batch.add_argument("--model", help=MODEL_HELP)
    batch.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP + " (for manifest seg columns)")
    batch.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cuda: on Dask, cases go to workers started with '--resources GPU=1'")
    batch.add_argument("--seg-with-identity", action="store_true", help=SEG_IDENTITY_HELP)
    _add_zooms(batch)
    batch.set_defaults(command=_batch)

    plan = commands.add_parser("plan", help="plan implants on a segmentation")
    procedures = plan.add_subparsers(title="procedures", required=True)
    spine = procedures.add_parser(
        "spine", help="pedicle-screw trajectories for every vertebra T1-L5 in the labels",
        description="Writes OUT/plan.json (screws with entry and tip in LPS mm, size, isthmus width, cortex "
                    "margin, breach and Gertzbein-Robbins grade, angles), OUT/plan.csv, OUT/plan.mrk.json "
                    "(3D Slicer markups, one line per screw) and OUT/screws.stl. For research use; every plan "
                    "needs a clinician's review.")
    _plan_arguments(spine, "label image, or a folder of per-structure masks")
    spine.add_argument("--catalogue", help="screw catalogue JSON (diameters_mm, lengths_mm); default: recon's")
    spine.add_argument("--diameter-fraction", type=float, default=0.8,
                       help="largest screw diameter as a fraction of the isthmus width (default 0.8)")
    spine.add_argument("--tip-margin-mm", type=float, default=3.0,
                       help="distance kept between the screw tip and the far cortex (default 3)")
    spine.set_defaults(command=_plan_spine)
    hip = procedures.add_parser(
        "hip", help="acetabular cup size and orientation against the anterior pelvic plane",
        description="Writes the hip section of OUT/plan.json (femoral head and acetabulum spheres, APP landmarks, "
                    "cup centre, axis, size, radiographic, operative and anatomical angles, coverage), "
                    "OUT/plan.mrk.json (landmarks as points, cup axes as lines) and OUT/cups.stl. For research "
                    "use; every plan needs a clinician's review.")
    _plan_arguments(hip, "label image, or a folder of per-structure masks (hips and femurs)")
    hip.add_argument("--side", choices=("left", "right", "both"), default="both")
    hip.add_argument("--catalogue", help="cup catalogue JSON (diameters_mm); default: recon's 40-70 mm")
    hip.add_argument("--inclination", type=float, default=40.0, help="target radiographic inclination (deg)")
    hip.add_argument("--anteversion", type=float, default=15.0, help="target radiographic anteversion (deg)")
    hip.add_argument("--medialise-mm", type=float, default=0.0, help="move the cup medially from the native centre")
    hip.set_defaults(command=_plan_hip)

    demo = commands.add_parser("demo", help="run what recon can do on its built-in example")
    demo.add_argument("-o", "--output", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--size", choices=("clinical", "small"), default="clinical",
                      help="clinical: 512 x 512 x 300 at 0.7 x 0.7 x 1.0 mm (default); small: 128^3 at 2 mm")
    demo.set_defaults(command=_demo)
    return parser


def _info(args: argparse.Namespace) -> int:
    from recon.io.loading import describe_ct

    description = describe_ct(args.input, series_uid=args.series)
    print(json.dumps(description, indent=2) if args.json else _info_text(description))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from recon.io.loading import convert_ct

    target = convert_ct(args.input, args.output, series_uid=args.series)
    print(f"wrote {target}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from recon.phantom.synth import synthesize

    if args.count < 1:
        raise InputError(f"--count must be at least 1, got {args.count}")
    for case in synthesize(args.output, count=args.count, seed=args.seed, size=args.size, fmt=args.format):
        print(f"wrote {case}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from recon.io.labels import read_label_map
    from recon.io.loading import load_ct
    from recon.preview import render_preview

    labels = read_label_map(args.labels, args.label_map) if args.labels else None
    target = render_preview(load_ct(args.input, series_uid=args.series), args.output, labels=labels)
    print(f"wrote {target}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from recon.evaluation.cohort import evaluate_cohort

    evaluations, summary = evaluate_cohort(
        args.pred, args.ref, out=args.output, tolerances_mm=args.tolerance_mm,
        pred_label_map=args.pred_label_map or args.label_map, ref_label_map=args.ref_label_map or args.label_map,
    )
    if args.json:
        tables = {case: evaluation.as_dict() for case, evaluation in evaluations.items()}
        print(json.dumps(next(iter(tables.values())) if len(tables) == 1 else {"cases": tables}, indent=2))
    else:
        for case, evaluation in evaluations.items():
            print(_evaluation_text(case, evaluation))
    if args.output:
        print(f"wrote metrics.csv, summary.json, summary.md and box plots of {summary['n_cases']} case(s) "
              f"to {args.output}/")
    return 0


def _evaluation_text(case: str, evaluation) -> str:
    columns = ["dice", "iou", "hd_mm", "hd95_mm", "assd_mm"] + [f"nsd_{t:g}mm" for t in evaluation.tolerances_mm]
    columns += ["volume_diff_ml", "centroid_distance_mm"]
    width = max([len("label")] + [len(name) for name in evaluation.labels]) + 2
    lines = [f"case {case}", "label".ljust(width) + "".join(c.rjust(max(len(c), 8) + 2) for c in columns) + "  status"]
    for score in evaluation.labels.values():
        row = score.row()
        cells = "".join(("" if row[c] is None else f"{row[c]:.4g}").rjust(max(len(c), 8) + 2) for c in columns)
        lines.append(score.name.ljust(width) + cells + f"  {score.status}")
    if evaluation.identification_rate is not None:
        lines.append(f"vertebra identification rate (VerSe): {evaluation.identification_rate:.3f} of "
                     f"{evaluation.vertebrae_in_ref}")
    lines += [f"warning: {warning}" for warning in evaluation.warnings]
    return "\n".join(lines)


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def _mesh(args: argparse.Namespace) -> int:
    from recon.io.labels import read_label_map
    from recon.io.mesh_files import write_mesh_set
    from recon.io.slicer import write_segmentation
    from recon.mesh import mesh_labels

    labels = read_label_map(args.labels, args.label_map)
    meshes = mesh_labels(labels, smoothing=args.smooth, target_faces=args.faces, largest_only=args.largest_only)
    if not meshes:
        raise InputError(f"{args.labels}: no labelled voxels; nothing to mesh")
    settings = {"smoothing_iterations": args.smooth, "target_faces": args.faces, "largest_only": args.largest_only}
    record = write_mesh_set(meshes, args.output, formats=args.format, settings=settings)
    write_segmentation(labels, f"{args.output}/segmentation.seg.nrrd")
    for name, mesh in meshes.items():
        quality = mesh.quality
        state = "watertight" if quality.watertight else "NOT watertight"
        print(f"{name}: {quality.faces} faces, {state}, {quality.components} piece(s), {quality.volume_ml:.1f} ml "
              f"({quality.volume_error_pct:+.2f}% of the label)" + "".join(f"; {w}" for w in quality.warnings))
    print(f"wrote {len(meshes)} meshes, segmentation.seg.nrrd and {record.name} to {args.output}/")
    return 0


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip().lower() for word in text.split(",") if word.strip())


def _segment(args: argparse.Namespace) -> int:
    from recon.io.labels import write_label_map
    from recon.io.loading import load_ct
    from recon.io.slicer import write_segmentation
    from recon.resample import require_usable_zooms

    require_usable_zooms(args.zooms, network=not args.labels)
    volume = load_ct(args.input, series_uid=args.series)
    if args.labels:
        from recon.segmentation.sources import existing_labels

        labels = existing_labels(args.labels, volume.grid, args.label_map)
    else:
        from recon.segmentation.infer import segment

        labels = segment(volume, model=args.model, zooms=tuple(args.zooms))
    out = Path(args.output)
    write_label_map(labels, out / "labels.nii.gz")
    write_segmentation(labels, out / "segmentation.seg.nrrd")
    for index, name in sorted(labels.names.items()):
        confidence = labels.confidence.get(index)
        print(f"{name}" + (f"  confidence {confidence:.2f}" if confidence is not None else ""))
    if labels.level_anchor:
        print(f"levels counted from: {labels.level_anchor}")
    if labels.level_anchor == "none":
        from recon.segmentation.levels import UNANCHORED

        print(f"WARNING: {UNANCHORED}")
    print(f"wrote labels.nii.gz, labels.json and segmentation.seg.nrrd to {out}/")
    return 0


def _add_zooms(command: argparse.ArgumentParser) -> None:
    command.add_argument("--zooms", metavar="ZOOM", type=float, nargs="+", default=(),
                         help="test-time zooms: also run the network on the CT resampled ZOOM times finer (above 1) "
                              "or coarser than the model's grid and average the scores, e.g. --zooms 1.1 0.9 "
                              "(slower; README, Bone segmentation, says what it measured)")


def _run(args: argparse.Namespace) -> int:
    from recon.run import run_study

    provenance = run_study(args.input, args.output, procedure=args.procedure, model=args.model, seg=args.seg,
                           label_map=args.label_map, series_uid=args.series, device=args.device,
                           seg_with_identity=args.seg_with_identity, zooms=tuple(args.zooms))
    for warning in provenance["warnings"]:
        print(f"WARNING: {warning}")
    total = sum(stage["seconds"] for stage in provenance["stages"].values())
    print(f"wrote the plan and its files to {args.output}/ in {total:.1f} s "
          f"(research use; every plan needs a clinician's review)")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recon.batch import BatchOptions, exit_code, find_cases, run_batch

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    cases = find_cases(args.inputs + ([args.manifest] if args.manifest else []))
    options = BatchOptions(procedure=args.procedure, model=args.model, label_map=args.label_map, device=args.device,
                           seg_with_identity=args.seg_with_identity, zooms=tuple(args.zooms))
    counts = {"done": 0, "failed": 0}
    with tqdm(total=len(cases), unit="case", desc="recon batch", disable=None) as bar:
        def progress(row: dict) -> None:
            counts["failed" if row["status"] == "failed" else "done"] += 1
            bar.set_postfix(done=counts["done"], failed=counts["failed"], remaining=len(cases) - bar.n - 1)
            bar.update()
            if row["status"] == "failed":
                log.warning("case %s failed: %s: %s", row["case_id"], row["error_type"], row["error"])

        summary = run_batch(cases, args.output, options=options, workers=args.workers, scheduler=args.scheduler,
                            resume=args.resume, on_row=progress)
    cohort = summary["cohort"]
    print(f"{cohort['done']} done, {cohort['reused']} reused, {cohort['failed']} failed of {cohort['cases']} cases "
          f"in {cohort['wall_seconds']:.0f} s; summary in {args.output}/batch_summary.csv (research use; every plan "
          "needs a clinician's review)")
    return exit_code(summary, some_failed=EXIT_SOME_FAILED, all_failed=EXIT_ALL_FAILED)


def _plan_arguments(parser: argparse.ArgumentParser, labels_help: str) -> None:
    parser.add_argument("labels", help=labels_help)
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--ct", help="the CT the labels belong to (recorded with the plan)")
    parser.add_argument("--label-map", metavar="FILE|WORD", help=LABEL_MAP_HELP)


def _plan_inputs(args: argparse.Namespace):
    """The labels a plan command reads, and the CT when --ct names one."""
    from recon.io.labels import read_label_map
    from recon.io.loading import load_ct

    return read_label_map(args.labels, args.label_map), (load_ct(args.ct) if args.ct else None)


def _plan_spine(args: argparse.Namespace) -> int:
    from recon.io.plan_files import write_plan
    from recon.plan.implants import load_screw_catalogue
    from recon.plan.spine import plan_spine

    labels, ct = _plan_inputs(args)
    try:
        plan = plan_spine(labels, ct=ct, catalogue=load_screw_catalogue(args.catalogue),
                          diameter_fraction=args.diameter_fraction, tip_margin_mm=args.tip_margin_mm)
    except ValueError as err:
        raise InputError(f"recon plan spine: {err}") from err
    if not plan.screws:
        raise InputError(f"{args.labels}: no vertebra T1-L5 among the label names; name them with --label-map")
    write_plan(args.output, spine=plan)
    for warning in plan.warnings:
        print(f"WARNING: {warning}")
    for screw in plan.screws:
        detail = (f"grade {screw.grade}, margin {screw.min_cortex_distance_mm:.1f} mm" if screw.status == "planned"
                  else screw.reason)
        print(f"{screw.title}: {detail}")
    print(f"planned {len(plan.planned)} of {len(plan.screws)} screws; wrote plan.json, plan.csv, plan.mrk.json"
          f"{', screws.stl' if plan.planned else ''} to {args.output}/")
    return 0


def _plan_hip(args: argparse.Namespace) -> int:
    from recon.io.plan_files import write_plan
    from recon.plan.hip import plan_hip
    from recon.plan.implants import load_cup_catalogue

    labels, ct = _plan_inputs(args)
    plan = plan_hip(labels, ct=ct, side=args.side, catalogue=load_cup_catalogue(args.catalogue),
                    inclination_deg=args.inclination, anteversion_deg=args.anteversion,
                    medialise_mm=args.medialise_mm)
    write_plan(args.output, hip=plan)
    for warning in plan.warnings:
        print(f"WARNING: {warning}")
    for cup in plan.sides:
        if cup.status == "planned":
            print(f"{cup.side}: cup {cup.cup_diameter_mm:g} mm, inclination {cup.inclination_deg:g}, anteversion "
                  f"{cup.anteversion_deg:g} deg, coverage {cup.coverage_pct:.0f}%, head radius "
                  f"{cup.femoral_head_radius_mm:.1f} mm (fitted to the {cup.femoral_head_fitted_to.replace('_', ' ')})")
        else:
            print(f"{cup.side}: not plannable: {cup.reason}")
    print(f"wrote plan.json, plan.mrk.json{', cups.stl' if plan.planned else ''} to {args.output}/")
    return 0


def _train(args: argparse.Namespace) -> int:
    from recon.segmentation.train import train

    folder = train(args.output, steps=args.steps, seed=args.seed, resume=args.resume, device=args.device,
                   data=args.data, config_path=args.config, init=args.init, workers=args.workers)
    print(f"wrote {folder}/model.safetensors and model.json")
    return 0


def _average(args: argparse.Namespace) -> int:
    from recon.segmentation.average import average_models

    folder = average_models(args.models, args.weights or [1.0] * len(args.models), args.output)
    print(f"wrote {folder}/model.safetensors and model.json")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from recon.example import run_demo

    description = run_demo(args.output, size=args.size)
    print(_info_text(description))
    summary = json.loads((Path(args.output) / "evaluation" / "summary.json").read_text())
    for name, entry in summary["labels"].items():
        if entry["dice"].get("n"):
            print(f"{name}: Dice {entry['dice']['mean']:.3f}, HD95 {entry['hd95_mm']['mean']:.1f} mm")
    print(f"wrote the example phantom (DICOM, labels, truth), info.json, the run (run/: labels, meshes, plan, "
          f"provenance) and the segmentation's evaluation against the truth (evaluation/) to {args.output}/")
    print(f"report: {Path(args.output).resolve() / 'run' / 'report.html'}")
    return 0


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()})


def _info_text(description: dict) -> str:
    lines = []
    for series in description["series"]:
        state = "selected" if series["selected"] else f"skipped: {series['skipped_reason']}"
        name = series["description"] or "(no description)"
        lines.append(f"series {series['series_uid'] or '(no UID)'}  {series['modality']}  {name}  "
                     f"{series['n_files']} files  {state}")
    volume = description["volume"]
    lines += [
        f"shape (i, j, k):   {volume['shape_ijk']}",
        f"spacing (mm):      {volume['spacing_mm']}",
        f"origin (LPS, mm):  {volume['origin_lps_mm']}",
        f"direction:         {volume['direction']}",
        f"HU range:          {volume['hu_min']:.0f} .. {volume['hu_max']:.0f}",
        f"gantry tilt (deg): {volume['gantry_tilt_deg']}",
    ]
    lines += [f"warning: {warning}" for warning in volume["warnings"]]
    return "\n".join(lines)
