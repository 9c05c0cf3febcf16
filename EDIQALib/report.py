"""Writers: ``result.json``, ``heatmap.nrrd`` and ``overlay.png`` per input; series summaries.

Every output set is written into a temporary folder and moved into place only when complete.
"""
from __future__ import annotations

import csv
import io as _io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import re

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # figures of their own: no pyplot, so a notebook's backend is left alone
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator

from .assessment import QualityResult, paired_difference
from .choices import HEATMAP_CMAP, OVERLAY_OPACITY
from .io import Volume, image_like, staged_in, write_image
from .preprocess import display_axes, display_grid, normalise, to_display, volume_range, window_ct
from .scoring import score_text, worst_slice

PANEL_INCHES = 4.2  # the width of one plot in the validity and bench figures
LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # the ends of the physical x, y, z axes (LPS)
CT_DISPLAY_WINDOW = (-160.0, 240.0)  # HU: the soft-tissue window (level 40, width 400) a reader knows
RESULT_FILES = ("result.json", "heatmap.nrrd", "overlay.png")  # per input (write_outputs)
SERIES_FILES = ("series.json", "series.csv", "series.png")  # a teacher series' summary
COMPARISON_FILES = ("compare.json", "compare.csv", "compare.png")
SLICE_COLUMN = "slice"  # compare.csv's first column, before one column per input (named as its folder)
VALIDITY_FILES = ("validity.json", "validity.csv", "validity.png")
BENCH_FILES = ("bench.json", "bench.png")
SERIES_AXIS = {"dose": "relative dose", "views": "views", "texture": "noise correlation length (px)",
               "blur": "blur before noise (px)"}


def heatmap_display_max(results: list[QualityResult]) -> float:
    """The top of the heatmap's colour scale (its bottom is 0): the 99th percentile of a result's local
    detectability, rounded up to 0.05, within [0.05, 1]; for results shown side by side, one scale, the
    highest of theirs, so that no map saturates more than in its own overlay. Local detectability seldom
    nears 1 (a full-dose head CT slice runs 0.02-0.25), so on a fixed 0-1 scale a whole slice shows in one
    colour."""
    return max(_display_max(r.heatmap) for r in results)


def _display_max(heatmap: np.ndarray) -> float:
    """:func:`heatmap_display_max` of one map; its values gathered slice by slice, one copy in all."""
    values = np.empty(sum(int(np.count_nonzero(np.isfinite(h))) for h in heatmap), np.float32)
    filled = 0
    for h in heatmap:
        finite = h[np.isfinite(h)]
        values[filled:filled + finite.size] = finite
        filled += finite.size
    top = float(np.percentile(values, 99, overwrite_input=True)) if values.size else 0.0  # no map: the lowest scale
    return float(np.clip(np.ceil(top / 0.05 - 1e-9) * 0.05, 0.05, 1.0))


def edge_letters(volume: Volume) -> dict[str, str]:
    """The patient directions at the left, right, top and bottom edges (R/L, A/P, I/S) of the volume's
    slices as the figures show them (turned to display orientation, :func:`~EDIQALib.preprocess.display_axes`;
    LPS: +x toward the patient's left, +y posterior, +z superior); for an oblique axis, the direction it is
    closest to."""
    _, columns, rows = display_axes(volume)

    def ends(d: np.ndarray) -> tuple[str, str]:
        k = int(np.argmax(np.abs(d)))
        low, high = LPS_LETTERS[k]
        return (low, high) if d[k] > 0 else (high, low)

    (left, right), (top, bottom) = ends(columns), ends(rows)
    return {"left": left, "right": right, "top": top, "bottom": bottom}


def _label_edges(ax: Axes, letters: dict[str, str], width: float, height: float) -> None:
    """The patient direction at each edge of the image on ``ax`` (``letters``: :func:`edge_letters`), drawn
    with the extent ``(0, width, height, 0)``: at the image's own edges, where the panel is larger (a
    comparison's smaller input), not on the blank beyond them."""
    for where, (x, y, ha, va) in {"left": (0.01, 0.5, "left", "center"), "right": (0.99, 0.5, "right", "center"),
                                  "top": (0.5, 0.01, "center", "top"), "bottom": (0.5, 0.99, "center", "bottom")}.items():
        ax.text(x * width, y * height, letters[where], ha=ha, va=va, color="white", fontweight="bold",
                path_effects=[withStroke(linewidth=2.5, foreground="black")])  # legible over bone as over air


def display_slice(volume: Volume, k: int, heatmap: np.ndarray,
                  modality: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Slice ``k`` and its map (``heatmap``, the volume's) as the figures show them: turned to display
    orientation (:func:`~EDIQALib.preprocess.display_turn`), the image in [0, 1] as the ``modality`` it was
    assessed as (CT in the soft-tissue window, MR on one scale for the volume, the percentiles the student's
    scale is of: a slice of background noise stays dark); with their spacing (x, y) in mm."""
    turn, _, (sx, sy, _) = display_grid(volume)
    image = (window_ct(volume.array[k], CT_DISPLAY_WINDOW) if modality == "ct"
             else normalise(volume.array[k], "mr", volume_range(volume.array, "mr")))
    return to_display(image, turn), to_display(heatmap[k], turn), (sx, sy)


def _shown(name: str) -> str:
    """An input's name as a plot shows it: as written, its ``$`` signs not read as matplotlib's math
    (``a$x^2$b`` drew as "ax²b", and ``p$\\frac$`` stopped the plot with a traceback)."""
    return name.replace("$", r"\$")


def _title_name(name: str, modality: str, width: int) -> str:
    """An input's name as a figure's title gives it: wrapped to lines of ``width`` characters after an
    underscore, a hyphen, a dot or a space where it can be (a long file name ran off both ends), and for MR
    the caveat that its scores are not validated."""
    lines = [""]
    for word in re.split(r"(?<=[_\-. ])", name):
        for piece in (word[i:i + width] for i in range(0, len(word), width)):  # a word longer than a line: cut
            if lines[-1] and len(lines[-1]) + len(piece) > width:
                lines.append("")
            lines[-1] += piece
    if modality == "mr":
        lines.append("MR: scores not validated")
    return "\n".join(_shown(line) for line in lines)


def volume_score_text(result: QualityResult) -> str:
    """The volume's score as the figures and the Slicer panel print it, with the teacher's standard error
    over its repeats where it has one (``0.161 ± 0.007 SE``)."""
    se = result.details.get("score_se")
    text = score_text(result.score)
    return f"{text} ± {se:.3f} SE" if se is not None and np.isfinite(result.score) else text


def plot_slice_scores(ax: Axes, results: list[QualityResult] | list[ComparedInput], marked: int | None = None) -> None:
    """Each result's per-slice scores as a curve on ``ax`` (gaps where a slice is not assessable), with
    slice ``marked`` drawn as a dashed line."""
    palette = colormaps["tab20"] if len(results) > 10 else None  # beyond the default cycle's 10 colours
    for i, r in enumerate(results):
        ys = [np.nan if s is None else s for s in r.slice_scores]
        ax.plot(range(len(ys)), ys, marker="o", markersize=5 if len(ys) < 30 else 2,  # a point between gaps shows
                color=palette(i % 20) if palette else None, linestyle=("-", "--", ":")[i // 20 % 3],
                label=f"{_shown(r.name)}: {score_text(r.score)}")
    if not any(s is not None for r in results for s in r.slice_scores):
        ax.text(0.5, 0.5, "no slice assessable", transform=ax.transAxes, ha="center", va="center", color="0.4")
    if marked is not None:
        ax.axvline(marked, color="0.4", linestyle="--", linewidth=1)
    depth = max(len(r.slice_scores) for r in results)
    ax.set_xlim(-0.5, depth - 0.5)  # unassessable end slices show as gaps
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if depth == 1:
        ax.set_xticks([0])
    top = max((s for r in results for s in r.slice_scores if s is not None), default=0.0)
    ax.set_ylim(0, 1.1 * top or 1.0)  # from 0: differences read at their true size; no point on the frame
    ax.set_xlabel("slice")
    ax.set_ylabel(f"{results[0].method} score")


def overlay_figure(volume: Volume, result: QualityResult, k: int | None = None,
                   display_max: float | None = None) -> Figure:
    """The image slice (by default the worst, :func:`worst_slice`) with the local-quality heatmap over it
    and a colour legend, its scale 0 to ``display_max`` (by default :func:`heatmap_display_max`
    of this result); for a volume, the per-slice scores below it, with that slice marked."""
    k = worst_slice(result.slice_scores) if k is None else k
    display_max = heatmap_display_max([result]) if display_max is None else display_max
    image, heat, (sx, sy) = display_slice(volume, k, result.heatmap, result.modality)
    heat = np.ma.masked_invalid(heat)
    extent = (0, image.shape[1] * sx, image.shape[0] * sy, 0)
    # 6 in wide; a wide slice keeps room for the colour legend's label, a tall one fits a page
    image_height = min(max(6 * image.shape[0] * sy / (image.shape[1] * sx), 2.5), 8.0) + 0.6
    if len(result.slice_scores) > 1:
        fig = Figure(figsize=(6, image_height + 2))
        ax, curve = fig.subplots(2, 1, gridspec_kw={"height_ratios": (image_height, 2)})
        plot_slice_scores(curve, [result], marked=k if any(result.assessable) else None)
    else:
        fig = Figure(figsize=(6, image_height))
        ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent)
    im = ax.imshow(heat, cmap=HEATMAP_CMAP, vmin=0, vmax=display_max, alpha=OVERLAY_OPACITY, extent=extent)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="local detectability (0 = lesions missed)")
    _label_edges(ax, edge_letters(volume), extent[1], extent[2])
    ax.set_title(f"{_title_name(result.name, result.modality, 50)}\nslice {k}: {result.method} "
                 f"{score_text(result.slice_scores[k])}, volume score {volume_score_text(result)}")
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    fig.tight_layout()
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_outputs(result: QualityResult, volume: Volume, out_dir: str | Path) -> Path:
    """Write ``result.json``, ``heatmap.nrrd`` (float32, the input's geometry) and ``overlay.png``.

    Raises:
        TypeError: ``volume`` is no :class:`~EDIQALib.io.Volume` (a SimpleITK image assessed: wrap it with
            :func:`EDIQALib.io.volume_from_image` and assess that).
        ValueError: ``result`` is of an image of another size than ``volume``.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"write_outputs takes the EDIQALib.io.Volume that was assessed, not {type(volume).__name__} "
                        "(wrap a SimpleITK image with EDIQALib.io.volume_from_image(image, name), and assess that)")
    if result.heatmap.shape != volume.array.shape:
        raise ValueError(f"the result is of an image of {result.heatmap.shape} voxels, the volume of "
                         f"{volume.array.shape}: pass the volume that was assessed")
    display_max = heatmap_display_max([result])  # before the heatmap's copy for writing: one copy at a time
    with staged_in(Path(out_dir)) as t, ThreadPoolExecutor(1) as pool:
        # SimpleITK compresses the heatmap without holding the GIL, while matplotlib draws the overlay
        heatmap = pool.submit(write_image, image_like(result.heatmap, volume.geometry), t / "heatmap.nrrd")
        (t / "overlay.png").write_bytes(_png_bytes(overlay_figure(volume, result, display_max=display_max)))
        (t / "result.json").write_text(json.dumps(result.to_json(), indent=2))
        heatmap.result()
    return Path(out_dir)


def write_series_summary(results: list[QualityResult], sources: list[str | Path], out_dir: str | Path,
                         settings: dict) -> None:
    """``series.json``, ``series.csv`` and ``series.png`` (scores side by side, ± their standard error) for
    several inputs: each input's path as given (``sources``), score and ``score_se``, and its ``difference``
    from the first input's score with that difference's paired standard error
    (:func:`~EDIQALib.assessment.paired_difference`)."""
    rows = []
    for r, source in zip(results, sources, strict=True):
        difference, difference_se = paired_difference(r, results[0])
        rows.append({"name": r.name, "score": r.to_json()["score"], "score_se": r.details.get("score_se"),
                     "difference": round(difference, 6) if r is not results[0] and np.isfinite(difference) else None,
                     "difference_se": difference_se if r is not results[0] else None,
                     "assessable_slices": int(sum(r.assessable)), "slices": len(r.assessable),
                     "input": str(source)})  # last: the columns of series.csv before it are as they were
    longest = max(len(r.name) for r in results)  # names run down-left, slanted: room for the first one's
    fig = Figure(figsize=(max(4, 1.2 * len(results) + 0.07 * longest), 3.5 + 0.05 * longest))
    ax = fig.subplots()
    errors = [np.nan if row["score_se"] is None else row["score_se"] for row in rows]  # none drawn where none is known
    ax.bar(range(len(results)), [r.score if np.isfinite(r.score) else 0.0 for r in results], color="tab:blue",
           yerr=None if np.isnan(errors).all() else errors, capsize=4)
    for x, row in enumerate(rows[1:], start=1):  # each difference from the first, ± its paired standard error
        if row["difference"] is not None:
            se = "" if row["difference_se"] is None else f" ± {row['difference_se']:.3f}"
            ax.annotate(f"Δ {row['difference']:+.3f}{se}", (x, row["score"] + (row["score_se"] or 0.0)),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    tops = [row["score"] + (row["score_se"] or 0.0) for row in rows if row["score"] is not None]
    ax.set_ylim(0, 1.15 * max(tops, default=0.0) or 1.0)  # room for the differences above the bars
    ax.set_xticks(range(len(results)), [f"{_shown(r.name)}\n{score_text(r.score)}" for r in results], rotation=30,
                  ha="right")  # the score under each name: "not assessable" is no bar at all
    ax.set_ylabel(f"{results[0].method} score")
    ax.set_title("Series, on shared insertion maps" + (f"\nΔ: the difference from {_shown(results[0].name)}"
                                                        if len(results) > 1 else ""), fontsize=10)
    fig.tight_layout()
    png = _png_bytes(fig)
    csv_buf = _io.StringIO()
    writer = csv.DictWriter(csv_buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with staged_in(Path(out_dir)) as t:
        (t / "series.json").write_text(json.dumps({**settings, "inputs": rows}, indent=2), encoding="utf-8")
        (t / "series.csv").write_text(csv_buf.getvalue(), encoding="utf-8")
        (t / "series.png").write_bytes(png)


def plot_validity(ax: Axes, report: dict, kind: str, ylabel: str) -> None:
    """One kind of a validity report's series on ``ax``: each slice's scores against the series' levels (with
    their standard errors, where the report has them), titled with the mean Spearman ρ beside the noise-SD
    estimate's."""
    for e in (e for e in report["series"] if e["kind"] == kind):
        known = [se for se in e.get("score_se", []) if se is not None]  # the teacher's, with repeats; no student's
        errors = [se or 0.0 for se in e["score_se"]] if known else None
        ax.errorbar(range(len(e["levels"])), e["scores"], yerr=errors, marker="o", capsize=2,
                    label=f"{e['base']} (ρ={e['rho']:.2f})")
        ax.set_xticks(range(len(e["levels"])), [f"{x:g}" for x in e["levels"]])
    s = report["summary"][kind]
    ax.set_title(f"{kind}: mean ρ {s['mean_rho']:.2f} (noise-SD ρ {s['mean_rho_noise_sd']:.2f})", fontsize=9)
    ax.set_xlabel(SERIES_AXIS.get(kind, kind))
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)  # off the points


def write_validity(report: dict, out_dir: str | Path, settings: dict) -> None:
    """``validity.json``, ``validity.csv`` and ``validity.png`` (score vs level, one panel per series kind)."""
    kinds = list(report["summary"])
    fig = Figure(figsize=(PANEL_INCHES * len(kinds), 4.6))
    axes = fig.subplots(1, len(kinds), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        plot_validity(ax, report, kind, "teacher score")
    fig.tight_layout()
    png = _png_bytes(fig)
    lines = ["base,kind,level,score,score_se,noise_sd_hu"]
    for e in report["series"]:
        for lv, sc, se, ns in zip(e["levels"], e["scores"], e["score_se"], e["noise_sd_hu"]):
            lines.append(f"{e['base']},{e['kind']},{lv:g},{sc:.6f},{'' if se is None else f'{se:.6f}'},{ns:.3f}")
    with staged_in(Path(out_dir)) as t:
        (t / "validity.json").write_text(json.dumps({**settings, **report}, indent=2), encoding="utf-8")
        (t / "validity.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (t / "validity.png").write_bytes(png)


def _wrapped(phrases: list[str], width: int) -> str:
    """``phrases`` joined by spaces into lines of at most ``width`` characters, none of them broken (a
    phrase longer than ``width`` on a line of its own)."""
    lines = [phrases[0]]
    for phrase in phrases[1:]:
        if len(lines[-1]) + 1 + len(phrase) <= width:
            lines[-1] += " " + phrase
        else:
            lines.append(phrase)
    return "\n".join(lines)


def bench_figure(figures: dict) -> Figure:
    """The bench's figures at a glance: the student's score over each validity series (one panel per kind)
    and, with held-out labels, its score against the teacher's on every held-out slice; the speed figures
    in the title."""
    kinds = list(figures["validity"]["summary"])
    agreed = figures["fidelity"]
    panels = len(kinds) + bool(agreed)
    fig = Figure(figsize=(PANEL_INCHES * panels, 4.9))
    axes = fig.subplots(1, panels, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        plot_validity(ax, figures["validity"], kind, "student score")
    if agreed:
        ax = axes[0][-1]
        ax.scatter(agreed["teacher_scores"], agreed["student_scores"], s=8, alpha=0.6)
        top = max(max(agreed["teacher_scores"]), max(agreed["student_scores"]))
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8)
        ax.set_xlabel("teacher score")
        ax.set_ylabel("student score")
        ax.set_title(f"{agreed['slices']} held-out slices: PLCC {agreed['plcc']:.3f}, SROCC {agreed['srocc']:.3f}",
                     fontsize=9)
    phrases = [f"student {figures['student_ms_per_slice']} ms per slice,",
               f"teacher ({figures['teacher_realizations']} × {figures['teacher_repeats']}) {figures['teacher_s_per_slice']} s per slice:",
               f"speedup {figures['speedup']:.0f}×;",
               f"volume {' × '.join(map(str, figures['volume_shape']))} in {figures['volume_s']} s, "
               + ("peak memory not reported" if figures["peak_mem_gb"] is None else f"{figures['peak_mem_gb']} GB"),
               f"({figures.get('gpu') or figures.get('cpu') or figures['device']})"]
    fig.suptitle(_wrapped(phrases, int(12 * PANEL_INCHES * panels)), fontsize=10)  # about 12 characters an inch at 10 pt
    fig.tight_layout()
    return fig


def write_bench(figures: dict, out_dir: str | Path) -> None:
    """``bench.json`` (every figure) and ``bench.png`` (:func:`bench_figure`)."""
    png = _png_bytes(bench_figure(figures))
    with staged_in(Path(out_dir)) as t:
        (t / "bench.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
        (t / "bench.png").write_bytes(png)


@dataclass(eq=False)  # arrays inside: compare fields, not entries
class ComparedInput:
    """One input of a comparison as its figure and tables show it, without its volume and heatmap, so that
    a comparison of many large volumes holds one at a time (:func:`compared_input`).

    Attributes:
        result: its ``result.json`` content (:meth:`~EDIQALib.assessment.QualityResult.to_json`).
        source: the input's path as given (its name alone may be another's, made unique).
        slice: the slice shown, its worst (:func:`worst_slice`).
        image, heat: that slice and its map as :func:`display_slice` turns them, with their ``spacing`` (x, y).
        letters: the patient directions at the image's edges (:func:`edge_letters`).
        display_max: its own heatmap colour scale (:func:`heatmap_display_max`).
    """

    result: dict
    source: str
    slice: int
    image: np.ndarray
    heat: np.ndarray
    spacing: tuple[float, float]
    letters: dict[str, str]
    display_max: float

    @property
    def name(self) -> str:
        return self.result["name"]

    @property
    def method(self) -> str:
        return self.result["method"]

    @property
    def score(self) -> float:
        return np.nan if self.result["score"] is None else self.result["score"]

    @property
    def slice_scores(self) -> list[float | None]:
        return self.result["slice_scores"]


def compared_input(result: QualityResult, volume: Volume, source: str | Path) -> ComparedInput:
    """What :func:`comparison_figure` and :func:`write_comparison` need of an assessed ``volume``, read from
    ``source``."""
    k = worst_slice(result.slice_scores)
    image, heat, spacing = display_slice(volume, k, result.heatmap, result.modality)  # views, which would hold the whole volumes
    return ComparedInput(result=result.to_json(), source=str(source), slice=k, image=image.copy(), heat=heat.copy(), spacing=spacing,
                         letters=edge_letters(volume), display_max=heatmap_display_max([result]))


def comparison_figure(inputs: list[ComparedInput]) -> Figure:
    """Per-slice score curves in one chart, or one bar per input when every input is a single slice (in
    the order given: a dose series reads left to right); below, each input's worst slice with its heatmap,
    all in mm on common axes (true sizes) and on one colour scale, the highest of the inputs' own."""
    n = len(inputs)
    fig = Figure(figsize=(4 * max(n, 2), 7.5), layout="constrained")  # room for the colour bar
    grid = fig.add_gridspec(2, max(n, 2), height_ratios=(1, 1.4))
    scores = fig.add_subplot(grid[0, :])
    if max(len(c.slice_scores) for c in inputs) > 1:
        plot_slice_scores(scores, inputs)
        scores.legend(fontsize=8)
    else:
        bars = scores.bar(range(n), [c.score if np.isfinite(c.score) else 0.0 for c in inputs], color="tab:blue")
        scores.bar_label(bars, [score_text(c.score) for c in inputs], fontsize=8)
        scores.set_xticks(range(n), [_title_name(c.name, c.result["modality"], 28) for c in inputs], fontsize=8)
        scores.set_ylabel(f"{inputs[0].method} score")
    top = max(c.display_max for c in inputs)
    width = max(c.image.shape[1] * c.spacing[0] for c in inputs)
    height = max(c.image.shape[0] * c.spacing[1] for c in inputs)
    panels = []
    for i, c in enumerate(inputs):
        ax = fig.add_subplot(grid[1, i])
        extent = (0, c.image.shape[1] * c.spacing[0], c.image.shape[0] * c.spacing[1], 0)
        ax.imshow(c.image, cmap="gray", vmin=0, vmax=1, extent=extent)
        im = ax.imshow(np.ma.masked_invalid(c.heat), cmap=HEATMAP_CMAP, vmin=0, vmax=top, alpha=OVERLAY_OPACITY, extent=extent)
        ax.set_title(f"{_title_name(c.name, c.result['modality'], 32)}\nslice {c.slice}: "
                     f"{score_text(c.slice_scores[c.slice])}", fontsize=9)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        _label_edges(ax, c.letters, extent[1], extent[2])
        ax.axis("off")
        panels.append(ax)
    fig.colorbar(im, ax=panels, fraction=0.03, pad=0.02, label="local detectability")
    return fig


def write_comparison(inputs: list[ComparedInput], out_dir: str | Path) -> None:
    """``compare.json`` (each input's path as given and its ``result.json``), ``compare.csv`` (per-slice
    scores side by side) and ``compare.png`` (:func:`comparison_figure`)."""
    png = _png_bytes(comparison_figure(inputs))
    depth = max(len(c.slice_scores) for c in inputs)
    table = _io.StringIO()
    writer = csv.writer(table, lineterminator="\n")  # quotes a name that holds a comma or a quote
    writer.writerow([SLICE_COLUMN, *(c.name for c in inputs)])
    for k in range(depth):
        cells = [c.slice_scores[k] if k < len(c.slice_scores) else None for c in inputs]
        writer.writerow([k, *("" if x is None else f"{x:.6f}" for x in cells)])
    with staged_in(Path(out_dir)) as t:
        (t / "compare.json").write_text(json.dumps([{"input": c.source, **c.result} for c in inputs], indent=2))
        (t / "compare.csv").write_text(table.getvalue(), encoding="utf-8")
        (t / "compare.png").write_bytes(png)


def read_outputs(out_dir: str | Path) -> QualityResult:
    """The :class:`QualityResult` that :func:`write_outputs` wrote (heatmap in the input's array order)."""
    import SimpleITK as sitk

    out = Path(out_dir)
    data = json.loads((out / "result.json").read_text(encoding="utf-8"))
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "heatmap.nrrd"))).astype(np.float32)
    core = ("name", "score", "slice_scores", "assessable", "method", "model", "seconds", "shape", "spacing", "modality")
    return QualityResult(name=data["name"], score=np.nan if data["score"] is None else float(data["score"]),
                         slice_scores=data["slice_scores"], assessable=data["assessable"],
                         heatmap=heat.reshape((-1,) + heat.shape[-2:]), method=data["method"], model=data["model"],
                         seconds=data["seconds"], shape=tuple(data["shape"]), spacing=tuple(data["spacing"]),
                         modality=data["modality"],
                         details={k: v for k, v in data.items() if k not in core})
