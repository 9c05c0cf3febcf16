"""Model registry: weights in ``Resources/Models/<name>.safetensors`` with a JSON model card.

A card holds at least ``name``, ``kind`` (``"detector"`` or ``"student"``), ``preset``, ``sha256`` of the
weights, the training data and command, and metrics. A card is checked when it is read; weights load only
when their sha256 matches the card. Cards are read without torch (the command line's usage checks and help
need the registry's folder, not torch); the functions that load weights import it.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from .choices import DEFAULT_DETECTOR, DEFAULT_STUDENT, DEVICES, MODELS_DIR, PRESETS, is_device_name
from .errors import InputError
from .io import check_outputs, read_json, staged_in, write_bytes

if TYPE_CHECKING:
    import torch
    from torch import nn

MODEL_KINDS = ("detector", "student")


@dataclass
class ModelCard:
    """A model's card and where its weights are."""

    name: str
    weights: Path
    card: dict

    @property
    def sha256(self) -> str:
        """The weights' sha256, as the card gives it (checked against the file when loaded)."""
        return self.card["sha256"].lower()

    def record(self) -> dict:
        """Which model made a result, as results, labels and benchmarks record it: name and sha256."""
        return {"name": self.name, "sha256": self.sha256}


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_device(name: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a CUDA device is present, else ``"cpu"``; ``"cpu"``, ``"cuda"`` (the
    first GPU) and ``"cuda:N"`` (the GPU of index N) as they are. A device that is not present, or a name
    that is not one of these, is an input error."""
    import torch

    if not is_device_name(name):
        raise InputError(f"unknown device {name!r}; choose {DEVICES.replace('|', ', ')}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name} was asked for but no CUDA device is available (--device, or device= in Python)")
    if name.startswith("cuda:") and int(name[5:]) >= (count := torch.cuda.device_count()):
        present = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise InputError(f"device {name} was asked for but the CUDA devices here are {present}")
    return name


def find_model(name_or_path: str) -> ModelCard:
    """Resolve a bundled model name or a path to a ``.safetensors`` file (its card beside it, same stem)."""
    p = Path(name_or_path)
    weights = p if p.suffix == ".safetensors" else MODELS_DIR / f"{name_or_path}.safetensors"
    card_path = weights.with_suffix(".json")
    if not weights.is_file():
        bundled = ", ".join(sorted(w.stem for w in MODELS_DIR.glob("*.safetensors")))
        what = "model not found" if not p.exists() else "not a model's .safetensors file"
        raise InputError(f"{what}: {name_or_path} (a bundled model, {bundled}, or the path of a .safetensors file "
                         "with its .json card beside it)")
    if not card_path.exists():
        raise InputError(f"model card missing for {weights.name} (expected {card_path.name})")
    card = read_json(card_path, "model card")
    if not isinstance(card, dict):
        raise InputError(f"model card {card_path} is not a JSON object")
    problem = _card_problem(card)
    if problem:
        raise InputError(f"model card {card_path}: {problem}")
    return ModelCard(name=card["name"], weights=weights, card=card)


def _card_problem(card: dict) -> str | None:
    """What is wrong with a model card (``None`` where nothing is): the keys that :func:`package_model` writes
    and readers use, present and of their type."""
    for key in ("name", "kind", "preset", "sha256"):
        if key not in card:
            return f"{key!r} is missing"
    for key in ("name", "kind", "preset"):
        if not isinstance(card[key], str):
            return f"{key!r} is not a string"
    if card["kind"] not in MODEL_KINDS:
        return f"'kind' is {card['kind']!r}, not {' or '.join(map(repr, MODEL_KINDS))}"
    if card["preset"] not in PRESETS:
        return f"unknown {card['kind']} preset {card['preset']!r} (known: {', '.join(PRESETS)})"
    if not isinstance(card["sha256"], str) or not re.fullmatch(r"[0-9a-fA-F]{64}", card["sha256"]):
        return "'sha256' is not 64 hexadecimal digits"
    if not isinstance(card.get("training", {}), dict):
        return "'training' is not a JSON object"
    return None


def model_of_kind(name_or_path: str, kind: str | None) -> ModelCard:
    """:func:`find_model`, and a model of ``kind`` (``"detector"`` or ``"student"``; either for ``None``):
    what the command line checks before it loads torch."""
    entry = find_model(name_or_path)
    if kind is not None and entry.card["kind"] != kind:
        example = DEFAULT_STUDENT if kind == "student" else DEFAULT_DETECTOR
        raise InputError(f"{entry.name} is a {entry.card['kind']} model; a {kind} model is needed here, such as {example}")
    return entry


def load_model(name_or_path: str, kind: str | None) -> tuple[nn.Module, ModelCard]:
    """Build the card's network (``kind`` ``"detector"`` or ``"student"``, or ``None`` for whichever the card
    says; its preset; a student ensemble when the weights are an ensemble's) on the CPU, in evaluation mode,
    and load its weights, sha256-checked. The caller moves it to its device (after the model is known to be
    good: asking for a device loads torch)."""
    entry = model_of_kind(name_or_path, kind)
    kind = entry.card["kind"]
    digest = sha256_of(entry.weights)
    if digest != entry.sha256:
        raise InputError(f"{entry.weights.name}: sha256 mismatch with its model card (corrupt or replaced weights)")
    preset = entry.card["preset"]
    state = read_weights(entry.weights)
    import torch

    with torch.random.fork_rng(devices=[]):  # initial weights, replaced below: the caller's generator is left as it was
        if kind == "student":  # each kind imports its own network's module only
            from .student import student_for

            model = student_for(state, preset)
        else:
            from .detector import build_detector

            model = build_detector(preset)
    fit_weights(model, state, f"{entry.weights.name} (preset {preset!r})")
    model.eval()
    if not all(torch.isfinite(t).all() for t in _probe_outputs(model, kind)):
        raise NonFiniteWeights(f"{entry.weights.name}: the {kind} gives NaN or infinite outputs (its weights overflow: "
                               "a run that diverged, or broken weights)")
    return model, entry


def _probe_outputs(model: nn.Module, kind: str) -> list[torch.Tensor]:
    """What a network in evaluation mode computes from a probe slice (a ramp with a bright disc, 128²): a
    student's score and map; a detector's proposal and box logits and offsets, which torchvision drops
    without a word where they are not finite (the teacher would score every image 0)."""
    import torch

    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    probe = 0.3 + 0.002 * xx + 0.3 * (((yy - 64) ** 2 + (xx - 64) ** 2) < 400).float()
    with torch.inference_mode():
        if kind == "student":
            return list(model(probe[None, None]))
        seen: list[torch.Tensor] = []

        def record(module: nn.Module, inputs: tuple, output: tuple) -> None:
            seen.extend(t for part in output for t in (part if isinstance(part, list) else [part]))
            if module is model.roi_heads.box_predictor:
                raise _Probed  # the rest (boxes decoded, a mask head) adds nothing to tell

        hooks = [m.register_forward_hook(record) for m in (model.rpn.head, model.roi_heads.box_predictor)]
        try:
            model([probe.expand(3, -1, -1)])
        except _Probed:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return seen


class _Probed(Exception):
    """A probe's forward pass stopped once its outputs were seen."""


class NonFiniteWeights(InputError):
    """Weights that hold NaN or infinite values: those of a run that diverged."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; an input error for an unreadable or malformed file, for a
    tensor of a type the networks cannot take (complex, 8-bit floats), and for NaN or infinite values as the
    networks would read them, in float32 (weights of a diverged run, whose scores would be NaN or constant)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{path}: not readable as safetensors weights ({str(exc).splitlines()[0][:100]})") from None
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    odd = next((k for k, v in state.items() if v.is_complex() or (v.is_floating_point() and v.dtype not in floats)), None)
    if odd is not None:
        raise InputError(f"{path}: tensor {odd!r} is of type {str(state[odd].dtype).removeprefix('torch.')}, "
                         "not a real float or integer type")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v.float()).all()), None)
    if bad is not None:
        raise NonFiniteWeights(f"{path}: weights hold NaN or infinite values, or values beyond float32's range "
                               f"(tensor {bad!r})")
    return state


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``state`` into ``model`` (its floats as float32); weights of another architecture, or a tensor
    of integers where the network holds floats (or the reverse), are an input error that names ``what``
    they are. Returns ``model``."""
    held = model.state_dict()
    odd = next((k for k, v in state.items() if k in held and v.is_floating_point() != held[k].is_floating_point()), None)
    if odd is not None:
        raise InputError(f"{what}: weights do not fit the network (tensor {odd!r} is of type "
                         f"{str(state[odd].dtype).removeprefix('torch.')}, the network's "
                         f"{str(held[odd].dtype).removeprefix('torch.')})")
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:  # its first line names the network; the next ones say what does not fit
        lines = str(exc).splitlines()
        why = " ".join(line.strip() for line in lines[1:]) or lines[0]
        raise InputError(f"{what}: weights do not fit the network ({why[:120]})") from None
    return model


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Save a model's state as safetensors, atomically."""
    from safetensors.torch import save

    write_bytes(save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}), path)


def save_resume_state(state: dict, path: Path) -> None:
    """Write a run's resume state (what :func:`load_resume_state` reads) atomically."""
    import torch

    buffer = BytesIO()
    torch.save(state, buffer)
    write_bytes(buffer.getvalue(), path)


def load_resume_state(path: Path, device: torch.device | str) -> dict:
    """A run's resume state (``state.pt``, written by the run itself: weights, optimizer, progress); an
    unreadable one, or one without these, is an input error."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # unpickling a damaged file fails in many ways (KeyError, ValueError, EOFError...)
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        raise InputError(f"{path}: the run's resume state is unreadable ({why}); "
                         "give another --out to start a new run") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "best"} <= state.keys():
        raise InputError(f"{path}: not a run's resume state (no weights, optimizer and progress); "
                         "give another --out to start a new run")
    return state


def restore_resume_state(path: Path, device: torch.device | str, model: nn.Module,
                         optimizer: torch.optim.Optimizer, scheduler: object | None = None) -> dict:
    """Load a run's resume state (:func:`load_resume_state`) into its model, optimizer and scheduler (if
    any); returns the state for its progress.

    Raises:
        InputError: the state is unreadable, or of another network (a copy of another run's ``state.pt``).
    """
    state = load_resume_state(path, device)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:  # torch says which weights do not fit, at length
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:80]
        raise InputError(f"{path}: not a resume state of this network ({why}); give another --out") from None
    return state


def package_model(weights: str | Path, name: str, kind: str, preset: str, card: dict,
                  models_dir: Path = MODELS_DIR, sources: Sequence[str | Path] = ()) -> Path:
    """Copy trained weights into the registry as ``<name>.safetensors`` with a card (sha256 filled in).

    Both are written into a temporary folder in the registry before either is moved into place, so that a
    failed write leaves the registry as it was; where they cannot be written (:func:`~EDIQALib.io.check_outputs`:
    a folder in the way, a registry that is a file, or a name that would replace ``weights`` or one of the
    other ``sources`` the model was made from), and where the name is a model of another kind in the registry
    (a student published as ``detector-lite`` would take the teacher's detector away), an input error before
    anything is written."""
    dest = models_dir / f"{name}.safetensors"
    card_path = dest.with_suffix(".json")
    check_outputs([dest, card_path], [weights, *sources])
    try:
        replaced = read_json(card_path, "model card") if card_path.is_file() else {}
    except InputError:  # a broken card: it may be replaced, whatever it was
        replaced = {}
    if isinstance(replaced, dict) and replaced.get("kind") in MODEL_KINDS and replaced["kind"] != kind:
        raise InputError(f"{name} in {models_dir} is a {replaced['kind']} model, which a {kind} would replace: "
                         "choose another --name")
    with staged_in(models_dir) as tmp:  # the card sorts before the weights: it is renamed into place first
        staged_weights = tmp / dest.name
        shutil.copyfile(weights, staged_weights)
        full = {"name": name, "kind": kind, "preset": preset, **card, "sha256": sha256_of(staged_weights),
                "size_bytes": staged_weights.stat().st_size}
        (tmp / card_path.name).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return dest
