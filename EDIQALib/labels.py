"""Labels for student training: series → one CSV row and one local map per slice, resumable.

The labeller is a slice scorer (:data:`EDIQALib.scoring.SliceScorer`): the teacher, or a trained student
whose verdicts another student is to learn (an ensemble distilled into one network).

A *series* is a folder of co-registered images of one slice position (e.g. a dose series); its images
are scored on shared insertion maps. A single image file is a series of one. Each label unit (one
slice position of one series) is written completely or not at all: its maps first, then its CSV rows,
flushed, so an interrupted run resumes with no duplicated or lost rows.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re
import warnings
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
from skimage.measure import block_reduce

from .backgrounds import slice_background
from .choices import MAP_STRIDE
from .errors import InputError
from .io import (Volume, check_same_geometry, exclusive, image_stem, input_not_found, read_json, read_volume,
                 write_text)
from .preprocess import to_canonical, volume_range
from .progress import Progress
from .scoring import ScoredSlice, SliceScorer
from .signals import InsertionConfig

FIELDS = ["series", "file", "slice", "score", "assessable", "map", "path"]
# the images of a series folder: a NIfTI pair by its header (its .img is read with it); a DICOM series is its folder
IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".hdr", ".hdr.gz", ".mha", ".mhd")


def discover_series(paths: list[str | Path]) -> list[tuple[str, list[Path]]]:
    """``(series name, image files)`` for every input: a folder of images is a series, a file (or a DICOM
    series folder) a series of one."""
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise input_not_found(p)
        name = Path(os.path.abspath(p)).name  # names its maps' folder: "." is the folder's, a link keeps its own
        if not name:
            raise InputError(f"{p} is no series folder (a series is named after its folder)")
        files = sorted(f for f in p.iterdir() if f.name.lower().endswith(IMAGE_SUFFIXES)) if p.is_dir() else []
        stems = [image_stem(f.name) for f in files]
        twice = next((stem for stem in stems if stems.count(stem) > 1), None)
        if twice is not None:  # their maps would be one file, the last written over the first
            raise InputError(f"{p} holds two images named {twice} (with different suffixes); rename one, as "
                             "their maps are named after the image without its suffix")
        out.append((name, files) if files else (name, [Path(os.path.abspath(p))]))  # "." has a name so
    names = [n for n, _ in out]
    twice = next((i for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise InputError(f"{paths[names.index(names[twice])]} and {paths[twice]} are both series {names[twice]} (a series "
                         "is named after its folder or file): rename one")
    return out


def check_new_or_resumed(out_csv: str | Path, resume: bool) -> None:
    """A labels file is written anew, or continued with ``resume``: never replaced, nor are the maps of
    another (``labels.csv`` and ``labels.txt`` share ``labels_maps/``: :func:`maps_folder`).

    Raises:
        InputError: the maps folder is another labels file's (its record names it); or, without ``resume``,
            ``out_csv`` exists or its maps folder holds maps.
    """
    out_csv = Path(out_csv)
    maps = maps_folder(out_csv)
    owner = (labeller_record(out_csv) or {}).get("labels_file")  # None: no record
    if owner not in (None, out_csv.name):
        raise InputError(f"{maps} holds the maps of {owner}, not of {out_csv.name}: choose another --out")
    if resume:
        return
    if out_csv.exists():
        raise InputError(f"{out_csv} exists; pass --resume to continue it or choose another --out")
    if owner is not None or _leftover_parts(out_csv):
        raise InputError(f"{maps} holds the maps of an interrupted run of {out_csv.name}: pass --resume to "
                         "continue it, or choose another --out")
    if maps.is_dir() and any(not p.name.startswith(".") for p in maps.iterdir()):
        raise InputError(f"{maps} holds maps already (of another labels file named {out_csv.stem}.*, or of one "
                         "removed): choose another --out, or remove that folder")


@dataclass(frozen=True)
class SeriesImages:
    """A series to label: its name, its image files and their volumes (one grid, one modality)."""

    name: str
    files: list[Path]
    volumes: list[Volume]


def read_series(inputs: list[tuple[str, list[Path]]], modality: str | None = None) -> list[SeriesImages]:
    """Read every image of every series of :func:`discover_series` (of ``modality``, where given: see
    :func:`~EDIQALib.io.read_volume`), so that bad input is answered before any work (and, on the command
    line, before torch is loaded).

    Raises:
        InputError: an image is missing, unreadable or unusable, or the images of a series differ in grid
            or modality.
    """
    series = [SeriesImages(name, files, [read_volume(f, modality) for f in files]) for name, files in inputs]
    for s in series:
        check_same_geometry(s.volumes, f"the images of series {s.name}")
    return series


def maps_folder(labels_csv: str | Path) -> Path:
    """Where a labels file's maps are: ``<labels>_maps/`` beside it, one subfolder per series."""
    labels_csv = Path(labels_csv)
    return labels_csv.parent / f"{labels_csv.stem}_maps"


def labels_lock(labels_csv: str | Path) -> Path:
    """The lock file a labelling run into ``labels_csv`` holds: named for its maps folder, which ``L.csv``
    and ``L.txt`` share (a lock of each file's own let two runs write one folder of maps)."""
    maps = maps_folder(labels_csv)
    return maps.with_name(f".{maps.name}.lock")


def pool_map(heatmap: np.ndarray) -> np.ndarray:
    """Average a map over :data:`MAP_STRIDE` × :data:`MAP_STRIDE` blocks (a partial block at the end of a row or
    column dropped), ignoring NaN (NaN where a block has no value), as float16."""
    h, w = (heatmap.shape[0] // MAP_STRIDE) * MAP_STRIDE, (heatmap.shape[1] // MAP_STRIDE) * MAP_STRIDE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": a block without a value is NaN
        return block_reduce(heatmap[:h, :w], (MAP_STRIDE, MAP_STRIDE), np.nanmean).astype(np.float16)


def _path_from(home: Path, image: Path) -> str:
    """``image``'s path as a labels file in ``home`` records it: relative to ``home``, with ``/`` between
    folders on every system (a file written on Windows is read on Linux), or absolute where no relative
    path leads there (another drive)."""
    target = Path(image).resolve()
    try:
        return Path(os.path.relpath(target, home)).as_posix()
    except ValueError:  # another drive than the labels file's
        return target.as_posix()


def read_labels(csv_path: str | Path) -> list[dict]:
    """The rows of a labels CSV of ``ediqa label``, checked; a last line cut short (an interrupted run) is
    dropped.

    Raises:
        InputError: the file is missing or not text, its header is another, or a row lacks a field, has a
            slice that is no number or a score that is neither empty (not assessable) nor a number in [0, 1],
            or labels a slice that an earlier row labels.
    """
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        raise InputError(f"{csv_path} is a folder; give the labels CSV file in it (as `ediqa label --out` wrote it)")
    if not csv_path.is_file():
        raise InputError(f"labels file not found: {csv_path}")
    try:
        text = csv_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{csv_path} is not a labels CSV of `ediqa label` (not text)") from None
    if not text.endswith("\n"):  # the last row was cut short, wherever the cut fell
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(StringIO(text, newline=""))
    try:
        if reader.fieldnames != FIELDS:
            raise InputError(f"{csv_path} is not a labels CSV of `ediqa label` (its header is not {','.join(FIELDS)})")
        rows = list(reader)
    except csv.Error as e:  # a field over the csv module's size limit, a NUL byte
        raise InputError(f"{csv_path}: not a labels CSV of `ediqa label` ({e})") from None
    lines: dict[tuple, int] = {}
    for line, row in enumerate(rows, start=2):
        problem = _row_problem(row)
        key = (row["series"], row["file"], row["slice"])
        if not problem and key in lines:
            problem = f"slice {row['slice']} of {row['series']}/{row['file']} is labelled on line {lines[key]} too"
        if problem:
            raise InputError(f"{csv_path}, line {line}: not a labels row of `ediqa label` ({problem})")
        lines[key] = line
    return rows


def _row_problem(row: dict) -> str | None:
    """What makes ``row`` no labels row, or None."""
    missing = [k for k in FIELDS if k != "score" and row.get(k) in (None, "")]
    if missing:
        return f"no {', '.join(missing)}"
    if not row["slice"].isdecimal():  # isdigit takes "²", which int() refuses
        return f"slice {row['slice']} is no slice number"
    try:
        if row["score"] and not 0.0 <= float(row["score"]) <= 1.0:
            return f"score {row['score']} outside 0-1"
    except ValueError:
        return f"score {row['score']} is no number"
    if row["assessable"] not in ("0", "1"):
        return f"assessable {row['assessable']!r}, not 0 or 1"
    if row["assessable"] == "1" and not row["score"]:
        return "an assessable slice without a score"
    return None


def _csv_text(rows: list[dict]) -> str:
    """A labels CSV's text: the header and ``rows``."""
    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
    return text.getvalue()


def _check_same_images(done_rows: list[dict], path_of: dict[tuple[str, str], str], home: Path, out_csv: Path) -> None:
    """A resumed run labels the images its rows were labelled from: a series and file of the same names from
    elsewhere (another patient's ``dose/`` folder, or ``scan.nrrd``) would be taken as done, or its
    slices mixed into theirs.

    Paths are relative to ``home``, the labels file's folder (or absolute, as earlier releases wrote them).

    A series with rows must also hold the images it was labelled with, no more, no fewer: its images share
    insertion maps and masks, which another set of images changes, so that its rows to come would not be
    scored on the maps of the rows it has. (Of a series with rows of one slice position, which a run stopped
    while writing them may have left short, only images gone are told.)

    Raises:
        InputError: a row of ``out_csv`` names a series and file that ``path_of`` finds at another path, or a
            series that ``out_csv`` holds rows of now holds other images.
    """
    for row in done_rows:
        now = path_of.get((row["series"], row["file"]))
        if now is not None and os.path.normpath(home / row["path"]) != os.path.normpath(home / now):
            raise InputError(f"{out_csv} holds series {row['series']} labelled from {row['path']}, not from {now}; "
                             "label those images into another --out")
    labelled, present = defaultdict(lambda: defaultdict(set)), defaultdict(set)
    for row in done_rows:
        labelled[row["series"]][int(row["slice"])].add(row["file"])
    for series_name, file_name in path_of:
        present[series_name].add(file_name)
    for series_name in sorted(labelled.keys() & present.keys()):
        positions = labelled[series_name]
        files = set().union(*positions.values())  # a run stopped while writing a position wrote some of its rows:
        added = sorted(present[series_name] - files) if len(positions) > 1 else []  # with one, it may lack some
        gone = sorted(files - present[series_name])
        if added or gone:
            change = "; ".join(([f"it now holds {', '.join(added)} too"] if added else [])
                               + ([f"it no longer holds {', '.join(gone)}"] if gone else []))
            raise InputError(f"{out_csv} holds rows of series {series_name} labelled from other images ({change}), "
                             "whose insertion maps the rest would not share; label it again into another --out")


def _part_path(out_csv: Path, rank: int, world: int) -> Path:
    return out_csv if world == 1 else out_csv.with_name(f"{out_csv.stem}.part{rank}.csv")


def _leftover_parts(out_csv: Path) -> list[Path]:
    """The part files (``<stem>.part<rank>.csv``) that a run under ``torchrun`` left beside ``out_csv``, of
    whatever number of ranks."""
    pattern = re.compile(re.escape(out_csv.stem) + r"\.part(\d+)\.csv")
    found = [(int(m.group(1)), p) for p in out_csv.parent.glob(f"{glob.escape(out_csv.stem)}.part*.csv")
             if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]  # by rank: part2 before part10


LABELLER_NAME = "labeller.json"  # in the maps folder: what labelled the file (model and settings)


def labeller_record(labels_csv: str | Path) -> dict | None:
    """What labelled a labels file, as its maps folder's :data:`LABELLER_NAME` records it (a record that is no
    JSON object: an empty one), in today's names: earlier releases named ``psf_aware`` ``psf`` and no labels
    file (their record is their own file's). None where there is no record."""
    labels_csv = Path(labels_csv)
    path = maps_folder(labels_csv) / LABELLER_NAME
    if not path.exists():
        return None
    recorded = read_json(path, "labeller record")
    recorded = {"labels_file": labels_csv.name, **(recorded if isinstance(recorded, dict) else {})}
    if "psf" in recorded:
        recorded["psf_aware"] = recorded.pop("psf")
    return recorded


def _check_labeller(out_csv: Path, labeller: dict) -> None:
    """A labels file (to be resumed) is continued only by what labelled it (its model and settings, as
    :data:`LABELLER_NAME` records them): else its rows would mix two labellers' scores, unmarked. A file
    without a record (of an earlier release, whose maps may lie in another orientation) is not continued."""
    recorded = labeller_record(out_csv)
    if recorded is None:
        raise InputError(f"{out_csv} has no record of what labelled it (an earlier release made it); label into "
                         "another --out")
    changed = sorted(k for k in {*labeller, *recorded} if recorded.get(k) != labeller.get(k))
    if changed:
        was = "; ".join(f"{k} {recorded.get(k)}" for k in changed)
        raise InputError(f"{out_csv} was labelled with {was}; resume it with the same model and settings, or "
                         "choose another --out")


def labelled_modality(labels_csv: str | Path) -> str | None:
    """The modality that ``ediqa label --modality`` read a labels file's images as (its labeller record
    holds it), so that training reads them alike; None where each image tells its own."""
    return (labeller_record(labels_csv) or {}).get("modality")


def label_series(series: list[SeriesImages], scorer: SliceScorer, insertion: InsertionConfig,
                 out_csv: str | Path, labeller: dict, resume: bool = False,
                 progress: Progress | None = None, rank: int = 0, world: int = 1,
                 with_psf: bool = True) -> int:
    """Label every slice of every series (:func:`read_series`) with ``scorer`` (the versions of one slice
    position in one call, so that the teacher shares its insertion maps across them); returns the number of
    rows written by this call. ``insertion`` sets the masks that decide where a slice is assessable; ``with_psf`` estimates each
    slice's PSF, which the teacher's resolution-aware insertion needs and a student does not.
    ``labeller`` (its model and settings, JSON) is recorded beside the maps; a resumed file must have the
    same.

    With ``world`` > 1 (``torchrun``), slice positions are dealt round-robin to ranks in a fixed order;
    each rank appends to its own part file (``<stem>.part<rank>.csv``), which rank 0 then joins
    (:func:`merge_parts`) before it lets go of the labels file's lock. A resume first joins the part files
    that a run under ``torchrun`` cut short left behind, of whatever number of ranks (also in one process).
    Scores depend only on the seed, the slice and the images, so any sharding gives the same rows.
    """
    from .distributed import barrier  # torch: `label`'s bad input answers without it

    out_csv = Path(out_csv)
    labeller = {"labels_file": out_csv.name, **labeller}  # the maps folder's owner: a.csv's, not a.txt's
    part = _part_path(out_csv, rank, world)
    maps_dir = maps_folder(out_csv)
    check_new_or_resumed(out_csv, resume)
    if out_csv.exists():
        read_labels(out_csv)  # a file that is no labels CSV is refused as that, before its labeller is asked for
    if out_csv.exists() or (maps_dir / LABELLER_NAME).exists() or _leftover_parts(out_csv):  # resumed
        _check_labeller(out_csv, labeller)
    inputs = [(s.name, s.files) for s in series]
    # one run at a time writes this file (two appended to files that replaced each other, and one run's rows
    # were lost): rank 0 holds the lock before any rank writes
    with exclusive(labels_lock(out_csv), str(out_csv)) if rank == 0 else nullcontext():
        if rank == 0 and _leftover_parts(out_csv):  # a run under torchrun cut short, of any number of ranks
            merge_parts(inputs, out_csv)
        barrier(world)
        done_rows = read_labels(out_csv) if out_csv.exists() else []  # with the parts of a run cut short
        home = Path(out_csv).resolve().parent  # image paths are written relative to the labels file
        path_of = {(s.name, f.name): _path_from(home, f) for s in series for f in s.files}
        _check_same_images(done_rows, path_of, home, out_csv)
        done = {(r["series"], r["file"], int(r["slice"])) for r in done_rows}
        maps_dir.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            write_text(json.dumps(labeller, indent=2), maps_dir / LABELLER_NAME)
        write_text(_csv_text(done_rows if world == 1 else []), part)  # the complete rows again, then appended to
        total = sum(s.volumes[0].array.shape[0] for s in series)
        written, position, reported = 0, -1, 0
        with open(part, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            for unit in series:
                canon = [to_canonical(v) for v in unit.volumes]
                ranks = unit.volumes[0].geometry.slice_ranks()
                ranges = [volume_range(c, v.modality) for c, v in zip(canon, unit.volumes)]
                for k in range(canon[0].shape[0]):
                    position += 1
                    keys = [(unit.name, p.name, k) for p in unit.files]
                    if position % world != rank or all(key in done for key in keys):
                        continue
                    backgrounds = [slice_background(c[k], v.modality, insertion, with_psf, r)
                                   for c, v, r in zip(canon, unit.volumes, ranges)]
                    verdicts = scorer([backgrounds], [ranks[k]])[0]
                    rows = []
                    for (series_name, fname, sl), verdict in zip(keys, verdicts):
                        score, heatmap, assessable, _ = ScoredSlice(*verdict)
                        if (series_name, fname, sl) in done:  # a unit cut short: its scores are recomputed identically
                            continue
                        map_name = f"{series_name}/{image_stem(Path(fname).name)}_s{sl:04d}.npy"
                        (maps_dir / series_name).mkdir(parents=True, exist_ok=True)
                        np.save(maps_dir / map_name, pool_map(heatmap))
                        rows.append({"series": series_name, "file": fname, "slice": sl,
                                     "score": f"{score:.6f}" if assessable else "",
                                     "assessable": int(assessable), "map": map_name,
                                     "path": path_of[(series_name, fname)]})
                    writer.writerows(rows)
                    f.flush()
                    os.fsync(f.fileno())
                    written += len(rows)
                    if progress:
                        progress("label", position + 1, total)
                        reported = position + 1
        barrier(world)  # every rank's part is complete
        if world > 1 and rank == 0:  # under the lock: a run let in before would append to a part merged away
            merge_parts(inputs, out_csv)
        if progress and reported < total:  # the positions other ranks labelled, or found done
            progress("label", total, total)
    return written


def merge_parts(inputs: list[tuple[str, list[Path]]], out_csv: str | Path) -> int:
    """Join the ranks' part files (:func:`_leftover_parts`) and an earlier merged file into ``out_csv``,
    atomically; the parts are removed. Rows of ``inputs`` (series name, its files) come in single-process
    order, after the rows of other inputs that the file held (a resume with more or fewer series), which keep
    their order. Returns the number of rows."""
    out_csv = Path(out_csv)
    parts = _leftover_parts(out_csv)
    rows: dict[tuple, dict] = {}
    for path in ([out_csv] if out_csv.exists() else []) + parts:
        for r in read_labels(path):
            rows[(r["series"], r["file"], int(r["slice"]))] = r
    series_index = {name: i for i, (name, _) in enumerate(inputs)}
    file_index = {(name, f.name): i for name, files in inputs for i, f in enumerate(files)}

    def order(r: dict) -> tuple:  # sorted() is stable: rows of other inputs stay as they were, first
        if (r["series"], r["file"]) not in file_index:
            return (0,)
        return (1, series_index[r["series"]], int(r["slice"]), file_index[(r["series"], r["file"])])

    ordered = sorted(rows.values(), key=order)
    write_text(_csv_text(ordered), out_csv)
    for p in parts:
        p.unlink(missing_ok=True)
    return len(ordered)
