"""``recon batch``: many studies, each run as ``recon run`` runs one, on a local pool or a Dask cluster.

- Cases come from folders scanned for studies (a folder holding DICOM is one study, each NIfTI/NRRD/MHA file
  or zip is one) or from a manifest CSV (``case_id,path[,procedure][,seg]``). Case ids are the manifest's or
  come from the input's path, never from DICOM text.
- A case is built in ``OUT/.partial/`` and renamed to ``OUT/<case_id>/`` only when complete, with
  ``batch_record.json`` (input checksum, model sha256, recon version, options, times and key figures).
  ``resume`` reuses exactly the cases whose record matches what this batch would compute.
- One failing case is a failed row (error type and message); the others go on.
- Local: ``workers`` processes, torch's threads divided among them; each loads the model once (``recon.run``
  caches it). Distributed: the same task per case on a Dask cluster, retried when a worker dies; a case's
  folder is published by one rename, so a repeated task never duplicates it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from recon import __version__
from recon.errors import InputError, ReconError
from recon.io.atomic import atomic_path
from recon.io.dicom_files import is_dicomdir, looks_like_dicom
from recon.io.images import image_format
from recon.io.lock import output_lock
from recon.run import PROCEDURES, input_checksum
from recon.schemas import read_json

log = logging.getLogger(__name__)

RECORD_FILE = "batch_record.json"
PARTIAL_DIR = ".partial"
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
WORKER_ATTEMPTS = 2  # a case whose worker process dies is tried once more before it is failed


@dataclass(frozen=True)
class Case:
    case_id: str
    path: Path
    procedure: str | None = None  # None: the batch's
    seg: Path | None = None


@dataclass(frozen=True)
class BatchOptions:
    """What every case is run with; part of each case's record, so a change recomputes the case."""

    procedure: str = "all"
    model: str | None = None
    label_map: str | None = None
    device: str = "cpu"  # "cuda": on Dask, cases go only to workers started with --resources GPU=1
    seg_with_identity: bool = False
    torch_threads: int | None = None  # None: torch's default (all cores)
    zooms: tuple[float, ...] = ()  # recon.segment's test-time zooms


# ---------------------------------------------------------------------------------------------- cases


def find_cases(inputs: Sequence[str | Path]) -> list[Case]:
    """The cases in ``inputs`` (manifests, study folders, image files, folders of them), with unique ids."""
    cases: list[Case] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise InputError(f"{item}: no such file or folder; pass study folders, image files or a manifest CSV")
        if item.suffix.lower() == ".csv":
            cases += read_manifest(item)
        else:
            root = item if item.is_dir() and not _holds_dicom(item) else item.parent
            cases += [Case(_case_id(path, root), path) for path in _studies(item)]
    return _unique(cases)


def read_manifest(path: Path) -> list[Case]:
    """Cases from a CSV with a header ``case_id,path[,procedure][,seg]``; relative paths are the manifest's."""
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or not {"case_id", "path"} <= set(rows[0]):
        raise InputError(f"{path}: a manifest needs a header line 'case_id,path[,procedure][,seg]' and one row "
                         "per case")
    cases = []
    for line, row in enumerate(rows, start=2):
        case_id, procedure, seg = row["case_id"].strip(), (row.get("procedure") or "").strip(), row.get("seg")
        if not CASE_ID.fullmatch(case_id):
            raise InputError(f"{path} line {line}: case_id must be 1-100 letters, digits, '.', '_' or '-' and "
                             "start with a letter or digit")
        if procedure and procedure not in PROCEDURES:
            raise InputError(f"{path} line {line}: procedure must be one of {', '.join(PROCEDURES)}")
        seg_path = path.parent / seg.strip() if seg and seg.strip() else None
        cases.append(Case(case_id, path.parent / row["path"].strip(), procedure or None, seg_path))
    ids = [case.case_id for case in cases]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: case ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    return cases


def _studies(item: Path) -> list[Path]:
    """A folder holding DICOM (directly or in series sub-folders) is one study; image files are one each."""
    if item.is_file() or _holds_dicom(item):
        return [item]
    found = []
    for child in sorted(item.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            found += [child] if _holds_dicom(child, recursive=True) else _studies(child)
        elif image_format(child) is not None or child.suffix.lower() == ".zip":
            found.append(child)
    return found


def _holds_dicom(folder: Path, *, recursive: bool = False) -> bool:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return any(path.is_file() and (is_dicomdir(path) or looks_like_dicom(_head(path))) for path in files)


def _head(path: Path) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(132)


def _case_id(path: Path, root: Path) -> str:
    relative = path.relative_to(root).as_posix()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".zip", ".dcm"):
        relative = relative.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", relative.replace("/", "-")).strip("._-")[:100] or "case"


def _unique(cases: list[Case]) -> list[Case]:
    seen: set[str] = set()
    unique = []
    for case in cases:
        case_id, n = case.case_id, 1
        while case_id in seen:
            n += 1
            case_id = f"{case.case_id}-{n}"
        seen.add(case_id)
        unique.append(Case(case_id, case.path, case.procedure, case.seg))
    return unique


# ----------------------------------------------------------------------------------------- one case


def run_case(case: Case, out: str | Path, options: BatchOptions, resume: bool = False) -> dict:
    """Run one case into ``out/<case_id>`` (built aside, then renamed); return its summary row. Never raises
    for a problem with the case itself: that is a failed row."""
    out, started = Path(out), time.perf_counter()
    final = out / case.case_id
    try:
        expected, record = _expected_record(case, options), _record(final)
        if resume and record and _matches(record, expected):
            return {**record["row"], "status": "reused"}
        _set_torch_threads(options.torch_threads or _dask_worker_threads())
        row = _build_case(case, out, options, expected, started)
    except Exception as err:  # a case's failure is data for the summary, never the batch's end
        log.debug("case %s failed", case.case_id, exc_info=True)
        return _failed_row(case, err, time.perf_counter() - started)
    return row


def _build_case(case: Case, out: Path, options: BatchOptions, expected: dict, started: float) -> dict:
    from recon.run import run_study

    partial = out / PARTIAL_DIR / f"{case.case_id}.{uuid.uuid4().hex[:8]}"
    try:
        provenance = run_study(case.path, partial, procedure=case.procedure or options.procedure,
                               model=options.model, seg=case.seg, label_map=options.label_map,
                               device=options.device, seg_with_identity=options.seg_with_identity,
                               zooms=options.zooms)
        row = _row(case, partial, provenance, time.perf_counter() - started)
        with atomic_path(partial / RECORD_FILE) as temporary:
            temporary.write_text(json.dumps({**expected, "row": row}, indent=2))
        _publish(partial, out / case.case_id)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return row


def _publish(partial: Path, final: Path) -> None:
    """Move a complete case folder into place; an older one is moved aside first and then deleted."""
    if final.exists():
        aside = partial.parent / f"{final.name}.replaced.{uuid.uuid4().hex[:8]}"
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(partial, final)


def _model_fingerprint(model: str | None) -> str:
    """The model's sha256 from its card; for TotalSegmentator, its installed version."""
    from recon.segmentation.model import CARD_FILE, model_dir
    from recon.segmentation.totalseg import TOTALSEGMENTATOR, installed_version

    if model == TOTALSEGMENTATOR:
        return f"{TOTALSEGMENTATOR} {installed_version()}"
    return read_json(model_dir(model) / CARD_FILE, "model card")["sha256"]


def _expected_record(case: Case, options: BatchOptions) -> dict:
    """What a finished case's record holds when it is still valid: checksums, model, version, options."""
    model_sha = None if case.seg else _model_fingerprint(options.model)
    return {
        "case_id": case.case_id,
        "input_sha256": input_checksum(case.path),
        "seg_sha256": input_checksum(case.seg) if case.seg else None,
        "model_sha256": model_sha,
        "recon_version": __version__,
        "options": {"procedure": case.procedure or options.procedure, "label_map": options.label_map,
                    "seg_with_identity": options.seg_with_identity, "zooms": list(options.zooms)},
    }


def _record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def _matches(record: dict, expected: dict) -> bool:
    return all(record.get(key) == value for key, value in expected.items()) and "row" in record


def _row(case: Case, folder: Path, provenance: dict, seconds: float) -> dict:
    """A case's summary row: status, time per stage, and the plan's key figures."""
    plan = json.loads((folder / "plan.json").read_text())
    screws = plan.get("screws", [])
    planned = [screw for screw in screws if screw["status"] == "planned"]
    cups = [cup for cup in plan.get("hip", []) if cup["status"] == "planned"]
    return {
        "case_id": case.case_id, "status": "done", "error_type": "", "error": "", "seconds": round(seconds, 2),
        **{f"{name.replace(' ', '_')}_s": stage["seconds"] for name, stage in provenance["stages"].items()},
        "screws_planned": len(planned), "screws_not_plannable": len(screws) - len(planned),
        "screws_grade_a": sum(screw["grade"] == "A" for screw in planned),
        "cups_planned": len(cups), "cup_diameters_mm": " ".join(str(cup["cup_diameter_mm"]) for cup in cups),
        "warnings": len(provenance["warnings"]),
    }


def _failed_row(case: Case, err: BaseException, seconds: float) -> dict:
    message = str(err).replace(str(case.path), f"<{case.case_id}>")  # the case id, not the user's folder names
    if not isinstance(err, ReconError):
        message = f"unexpected: {message}"
    return {"case_id": case.case_id, "status": "failed", "error_type": type(err).__name__,
            "error": message[:500], "seconds": round(seconds, 2)}


def _set_torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _dask_worker_threads() -> int | None:
    """On a Dask worker, its thread count (torch then uses the cores the worker was given); else None."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        return None


# -------------------------------------------------------------------------------------------- batch


def run_batch(cases: Sequence[Case], out: str | Path, *, options: BatchOptions = BatchOptions(),
              workers: int = 1, scheduler: str | None = None, resume: bool = False,
              on_row: Callable[[dict], None] | None = None) -> dict:
    """Run every case into ``out``; write ``batch_summary.csv`` and ``batch_summary.json``; return the summary.

    ``scheduler``: a Dask scheduler address (``tcp://host:port``); otherwise ``workers`` local processes.
    ``on_row`` is called with each case's row as it finishes (for progress)."""
    if not cases:
        raise InputError("no cases found: pass DICOM study folders, NIfTI/NRRD/MHA files or a manifest CSV")
    out = Path(out)
    started = time.perf_counter()
    with output_lock(out):
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)  # left by a batch that was killed
        run = _run_on_dask if scheduler else _run_locally
        rows = list(run(cases, out, options, resume, scheduler if scheduler else workers, on_row or (lambda row: None)))
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
        order = {case.case_id: n for n, case in enumerate(cases)}
        rows.sort(key=lambda row: order[row["case_id"]])
        summary = {"schema_version": 1, "recon_version": __version__, "options": asdict(options),
                   "executor": f"dask {scheduler}" if scheduler else f"{workers} local processes",
                   "cohort": _cohort(rows, time.perf_counter() - started), "cases": rows}
        _write_summary(summary, out)
    return summary


def _run_locally(cases, out, options, resume, workers, on_row) -> Iterable[dict]:
    threads = options.torch_threads or max(1, (os.cpu_count() or 1) // workers)
    options = replace(options, torch_threads=threads)
    attempts = {case.case_id: 0 for case in cases}
    pending = list(cases)
    while pending:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_case, case, out, options, resume): case for case in pending}
            pending = []
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    case = futures.pop(future)
                    try:
                        row = future.result()
                    except BrokenProcessPool as err:  # a worker died (killed, out of memory): try it again
                        attempts[case.case_id] += 1
                        if attempts[case.case_id] < WORKER_ATTEMPTS:
                            pending.append(case)
                            continue
                        row = _failed_row(case, RuntimeError(f"its worker process died ({err})"), 0.0)
                    on_row(row)
                    yield row


def _run_on_dask(cases, out, options, resume, address, on_row) -> Iterable[dict]:
    from distributed import Client, as_completed

    resources = {"GPU": 1} if options.device == "cuda" else None
    with Client(address) as client:
        futures = {client.submit(run_case, case, str(out), options, resume, pure=False, retries=2,
                                 key=f"recon-case-{case.case_id}-{uuid.uuid4().hex[:8]}", resources=resources): case
                   for case in cases}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as err:  # the cluster gave up on it (its workers kept dying): a failed row
                row = _failed_row(futures[future], RuntimeError(f"the Dask cluster could not run it ({err})"), 0.0)
            on_row(row)
            yield row


def _cohort(rows: list[dict], wall_seconds: float) -> dict:
    """Counts by status, times and plan totals over the whole batch."""
    ran = [row["seconds"] for row in rows if row["status"] == "done"]
    finished = [row for row in rows if row["status"] in ("done", "reused")]
    return {
        "cases": len(rows), **{status: sum(row["status"] == status for row in rows)
                               for status in ("done", "reused", "failed")},
        "wall_seconds": round(wall_seconds, 1),
        "median_case_seconds": round(statistics.median(ran), 2) if ran else None,
        "studies_per_hour": round(len(ran) * 3600 / wall_seconds, 1) if ran and wall_seconds else None,
        "screws_planned": sum(row["screws_planned"] for row in finished),
        "screws_grade_a": sum(row["screws_grade_a"] for row in finished),
        "cups_planned": sum(row["cups_planned"] for row in finished),
        "failed_by_error_type": {kind: sum(row["error_type"] == kind for row in rows)
                                 for kind in sorted({row["error_type"] for row in rows if row["error_type"]})},
    }


def _write_summary(summary: dict, out: Path) -> None:
    rows = summary["cases"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(out / "batch_summary.csv") as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        for key, value in summary["cohort"].items():
            stream.write(f"# {key}: {value}\n")
    with atomic_path(out / "batch_summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))


def exit_code(summary: dict, *, some_failed: int, all_failed: int) -> int:
    """0 when every case finished, ``some_failed`` when some failed, ``all_failed`` when all did."""
    failed, cases = summary["cohort"]["failed"], summary["cohort"]["cases"]
    return 0 if failed == 0 else all_failed if failed == cases else some_failed
