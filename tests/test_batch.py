"""``recon batch``: a bad case among good ones, kill and resume, a changed model, and the same batch on Dask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import nibabel
import numpy as np
import pytest
import torch

from recon.batch import BatchOptions, find_cases, read_manifest, run_batch
from recon.cli import EXIT_ALL_FAILED, EXIT_SOME_FAILED, main
from recon.errors import InputError
from recon.phantom.synth import synthesize
from recon.segmentation.model import load_model, save_model

OUTPUTS = ("labels.nii.gz", "labels.json", "segmentation.seg.nrrd", "segmentation.dcm", "scene.glb", "plan.json",
           "plan.mrk.json", "plan.csv", "preview.png", "report.html", "provenance.json", "batch_record.json")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """10 small phantom DICOM studies; the last one's files are cut short as by a broken transfer."""
    root = tmp_path_factory.mktemp("studies")
    for case in synthesize(root / "staging", count=10, seed=970_300_000, size="small", fmt="dicom"):
        shutil.move(case / "ct", root / case.name)
    shutil.rmtree(root / "staging")
    corrupt = sorted(p for p in root.iterdir())[-1]
    for file in corrupt.glob("*.dcm"):
        file.write_bytes(file.read_bytes()[:600])
    return root


def _assert_complete(case_dir):
    for name in OUTPUTS:
        assert (case_dir / name).is_file(), (case_dir, name)
    for name in ("labels.json", "plan.json", "plan.mrk.json", "provenance.json", "batch_record.json"):
        json.loads((case_dir / name).read_text())
    assert np.asarray(nibabel.load(case_dir / "labels.nii.gz").dataobj).any()


def _summary(out):
    return {row["case_id"]: row for row in json.loads((out / "batch_summary.json").read_text())["cases"]}


def test_one_corrupt_study_fails_alone_and_the_other_nine_finish(studies, tmp_path):
    out = tmp_path / "out"
    assert main(["batch", str(studies), "-o", str(out), "--workers", "2", "--procedure", "spine"]) == EXIT_SOME_FAILED
    rows = _summary(out)
    corrupt = sorted(rows)[-1]
    assert [rows[case]["status"] for case in sorted(rows)] == ["done"] * 9 + ["failed"]
    assert rows[corrupt]["error_type"] in ("CorruptFileError", "NoCTSeriesError", "InputError")
    assert rows[corrupt]["error"] and str(studies) not in rows[corrupt]["error"]
    for case in sorted(rows)[:9]:
        _assert_complete(out / case)
        assert rows[case]["segment_s"] > 0 and rows[case]["screws_planned"] + rows[case]["screws_not_plannable"] > 0
    assert not (out / corrupt).exists() and not (out / ".partial").exists()
    csv_lines = (out / "batch_summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case_id,status,error_type,error,seconds") and "# failed: 1" in csv_lines


def test_all_cases_failing_has_its_own_exit_code(studies, tmp_path):
    corrupt = sorted(studies.iterdir())[-1]
    assert main(["batch", str(corrupt), "-o", str(tmp_path / "out")]) == EXIT_ALL_FAILED


def test_a_killed_batch_resumes_only_unfinished_cases_and_new_zooms_or_a_new_model_recompute_all(studies, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for study in sorted(studies.iterdir())[:3]:
        (inputs / study.name).symlink_to(study)
    out = tmp_path / "out"
    command = ("from recon.cli import main; raise SystemExit(main(['batch', %r, '-o', %r, '--workers', '1', "
               "'--procedure', 'spine']))" % (str(inputs), str(out)))
    batch = subprocess.Popen([sys.executable, "-c", command], start_new_session=True)
    deadline = time.monotonic() + 240
    while len([p for p in out.glob("*") if p.is_dir() and p.name != ".partial"]) < 1:
        assert batch.poll() is None and time.monotonic() < deadline, "the batch ended before it could be killed"
        time.sleep(0.2)
    os.killpg(batch.pid, signal.SIGKILL)
    batch.wait()
    finished = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != ".partial")
    assert 1 <= len(finished) < 3
    for case in finished:
        _assert_complete(out / case)
    mtimes = {p: p.stat().st_mtime_ns for case in finished for p in (out / case).rglob("*")}

    assert main(["batch", str(inputs), "-o", str(out), "--workers", "1", "--procedure", "spine", "--resume"]) == 0
    rows = _summary(out)
    assert {case for case, row in rows.items() if row["status"] == "reused"} == set(finished)
    assert {case for case, row in rows.items() if row["status"] == "done"} == set(rows) - set(finished)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert not (out / ".partial").exists() and not list(out.rglob(".tmp-*"))

    assert main(["batch", str(inputs), "-o", str(out), "--workers", "1", "--procedure", "spine", "--resume",
                 "--zooms", "1.1", "0.9"]) == 0  # other test-time zooms: other labels, so every case again
    assert {row["status"] for row in _summary(out).values()} == {"done"}
    assert json.loads((out / finished[0] / "provenance.json").read_text())["options"]["zooms"] == [1.1, 0.9]

    model = load_model()
    with torch.no_grad():
        next(model.network.parameters()).add_(1e-3)
    card = {key: value for key, value in model.card.items() if key != "sha256"}
    save_model(model.network, card, tmp_path / "changed_model")
    assert main(["batch", str(inputs), "-o", str(out), "--procedure", "spine", "--resume",
                 "--model", str(tmp_path / "changed_model")]) == 0
    assert {row["status"] for row in _summary(out).values()} == {"done"}


def test_a_dask_cluster_gives_the_local_outputs_even_when_a_worker_dies(studies, tmp_path):
    from distributed import Client, LocalCluster

    cases = find_cases([study for study in sorted(studies.iterdir())[:3]])
    options = BatchOptions(procedure="spine")
    run_batch(cases, tmp_path / "local", options=options, workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        worker_pids = list(client.run(os.getpid).values())
        killer = threading.Thread(target=_kill_a_worker_mid_case, args=(tmp_path / "dask", worker_pids[0]))
        killer.start()
        summary = run_batch(cases, tmp_path / "dask", options=options, scheduler=cluster.scheduler_address)
        killer.join()
    assert sorted(row["case_id"] for row in summary["cases"]) == [case.case_id for case in cases]
    assert {row["status"] for row in summary["cases"]} == {"done"}
    assert sorted(p.name for p in (tmp_path / "dask").iterdir() if p.is_dir()) == [case.case_id for case in cases]
    for case in cases:
        _assert_complete(tmp_path / "dask" / case.case_id)
        local, dask = (json.loads((tmp_path / where / case.case_id / "plan.json").read_text())["screws"]
                       for where in ("local", "dask"))
        assert local == dask


def _kill_a_worker_mid_case(out, pid):
    deadline = time.monotonic() + 120
    while not list((out / ".partial").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def test_case_ids_come_from_paths_and_are_unique(tmp_path):
    for name in ("a b.nii.gz", "group/a b.nii.gz", "group/c.nrrd"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "study" / "series1").mkdir(parents=True)
    (tmp_path / "study" / "series1" / "1").write_bytes(b"\0" * 128 + b"DICM")  # any name: found by its preamble
    cases = find_cases([tmp_path, tmp_path / "group" / "c.nrrd"])
    assert [case.case_id for case in cases] == ["a_b", "group-a_b", "group-c", "study", "c"]
    assert cases[3].path == tmp_path / "study"


def test_a_manifest_names_cases_and_refuses_bad_ids(tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,path,procedure,seg\nP001,scans/one.nii.gz,spine,\nP002,/data/two,,labels\n")
    cases = read_manifest(manifest)
    assert [(c.case_id, c.path, c.procedure, c.seg) for c in cases] == [
        ("P001", tmp_path / "scans/one.nii.gz", "spine", None), ("P002", tmp_path / "/data/two", None,
                                                                 tmp_path / "labels")]
    manifest.write_text("case_id,path\n../escape,x.nii.gz\n")
    with pytest.raises(InputError, match="line 2: case_id"):
        read_manifest(manifest)
    manifest.write_text("case_id,path\nA,x\nA,y\n")
    with pytest.raises(InputError, match="unique"):
        read_manifest(manifest)
