"""Finding the cases to compare: label files or folders on each side, paired by case name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recon.errors import InputError
from recon.io.images import image_format
from recon.io.labels import is_structure_folder, structure_name

LABEL_FILE_STEM = "labels"  # recon's own outputs: CASE/labels.nii.gz


@dataclass(frozen=True)
class CasePair:
    case_id: str
    pred: Path
    ref: Path


def pair_cases(pred: str | Path, ref: str | Path) -> tuple[list[CasePair], dict[str, list[str]]]:
    """Pairs of label sources, and the case ids found on only one side.

    A side is one case when it is a label file or a folder of per-structure masks; two such sides pair
    whatever their names. Otherwise a side is a folder of cases: label files (case = file name without its
    extension), or subfolders holding ``labels.nii.gz`` or per-structure masks (case = subfolder name)."""
    pred_cases, ref_cases = _cases(Path(pred)), _cases(Path(ref))
    if _single(Path(pred)) and _single(Path(ref)):
        (_, pred_source), (case_id, ref_source) = next(iter(pred_cases.items())), next(iter(ref_cases.items()))
        return [CasePair(case_id, pred_source, ref_source)], {"pred_only": [], "ref_only": []}
    if _single(Path(pred)) != _single(Path(ref)):
        raise InputError(f"{pred} and {ref}: one is a single case and the other a folder of cases; give two "
                         "label files (or structure folders) or two folders of cases")
    pairs = [CasePair(case, pred_cases[case], ref_cases[case]) for case in sorted(ref_cases) if case in pred_cases]
    unmatched = {"pred_only": sorted(set(pred_cases) - set(ref_cases)),
                 "ref_only": sorted(set(ref_cases) - set(pred_cases))}
    if not pairs:
        raise InputError(f"{pred} and {ref}: no case name appears on both sides (prediction cases: "
                         f"{_sample(pred_cases)}; reference cases: {_sample(ref_cases)}); name the files alike")
    return pairs, unmatched


def _single(path: Path) -> bool:
    return path.is_file() or is_structure_folder(path)


def _cases(path: Path) -> dict[str, Path]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if not image_format(path):
            raise InputError(f"{path}: not a label image; expected .nii.gz, .nii, .nrrd or .mha")
        return {structure_name(path): path}
    if is_structure_folder(path):
        return {path.name: path}
    cases = {}
    for entry in sorted(path.iterdir()):
        source = _case_source(entry)
        case = structure_name(entry) if entry.is_file() else entry.name
        if source is not None and case in cases:
            raise InputError(f"{path}: two entries are both case {case!r} ({cases[case].name}, {source.name}); "
                             "rename one")
        if source is not None:
            cases[case] = source
    if not cases:
        raise InputError(f"{path}: no label files (.nii.gz, .nrrd, .mha) or case folders in it")
    return cases


def _case_source(entry: Path) -> Path | None:
    if entry.name.startswith("."):
        return None
    if entry.is_file():
        return entry if image_format(entry) else None
    labelled = [f for f in entry.iterdir() if image_format(f) and structure_name(f) == LABEL_FILE_STEM]
    if labelled:
        return labelled[0]
    return entry if is_structure_folder(entry) else None


def _sample(cases: dict[str, Path]) -> str:
    names = sorted(cases)
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
