"""The model registry: weights and cards are checked when read, and publishing changes a model whole or not at all.

The networks here are freshly initialised tiny students (the values mean nothing)."""
from __future__ import annotations

import hashlib
import os
import json
import re
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file, save_file

from EDIQALib.distributed import distributed_context
from EDIQALib.errors import InputError
from EDIQALib.models import find_model, load_model, package_model, read_weights, resolve_device, save_weights
from EDIQALib.student import Student
from conftest import ct_image, ediqa


def _assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ediqa: error:"), proc.stderr
    assert all(f in lines[0] for f in fragments), proc.stderr


def _registered(folder: Path, name: str, edit=None) -> Path:
    """A tiny student in the registry ``folder`` as ``name`` (its weights first passed through ``edit``,
    the card's sha256 theirs); the weights' path."""
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(Student("lite"), folder / "weights.safetensors")
    if edit:
        state = load_file(str(folder / "weights.safetensors"))
        edit(state)
        save_file(state, str(folder / "weights.safetensors"))
    return package_model(folder / "weights.safetensors", name, "student", "lite", {}, folder)


def _nan_first_weight(state: dict) -> None:
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))


def _inf_in_last_weight(state: dict) -> None:
    key = [k for k, v in state.items() if v.is_floating_point()][-1]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("inf")


@pytest.mark.parametrize("edit", [_nan_first_weight, _inf_in_last_weight])
def test_weights_that_are_not_finite_are_refused_when_read(tmp_path, edit):
    weights = _registered(tmp_path, "bad", edit)
    with pytest.raises(InputError, match=r"bad\.safetensors.*NaN or infinite"):
        read_weights(weights)
    with pytest.raises(InputError, match=r"bad\.safetensors.*NaN or infinite"):
        load_model(str(weights), "student")


def _beyond_float32_in_float64(state: dict) -> None:
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].double()
    state[key].view(-1)[0] = 1e300  # finite as stored, infinite as the networks read it


def test_weights_beyond_float32_are_refused_as_not_finite(tmp_path):
    weights = _registered(tmp_path, "big", _beyond_float32_in_float64)
    with pytest.raises(InputError, match=r"big\.safetensors.*beyond float32's range"):
        read_weights(weights)


@pytest.mark.parametrize("dtype, shown", [(torch.float8_e4m3fn, "float8_e4m3fn"), (torch.complex64, "complex64")])
def test_weights_of_a_type_the_networks_cannot_take_are_one_line(tmp_path, dtype, shown):
    def retype(state: dict) -> None:
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = state[key].to(dtype)

    weights = _registered(tmp_path / "reg", "odd", retype)
    image = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=160, spacing=(0.7, 0.7, 2.0)), str(image))
    proc = ediqa("assess", image, "--model", weights, "--out", tmp_path / "out", "--progress", "none")
    _assert_one_line_error(proc, "odd.safetensors", f"is of type {shown}, not a real float or integer type")
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_say_what_does_not_fit(tmp_path):
    weights = _registered(tmp_path, "short", lambda state: state.pop(next(k for k, v in state.items() if v.dim() > 1)))
    with pytest.raises(InputError, match=r"do not fit the network \(Missing key\(s\) in state_dict"):
        load_model(str(weights), "student")


def test_init_weights_that_are_not_finite_are_refused(tmp_path):
    from EDIQALib.commands.runs import initial_student

    weights = _registered(tmp_path, "nan-start", _nan_first_weight)
    with pytest.raises(InputError, match=r"nan-start\.safetensors.*NaN or infinite"):
        initial_student(str(weights), None, "lite")


def test_assess_with_nan_weights_is_one_line_and_writes_nothing(tmp_path):
    weights = _registered(tmp_path / "reg", "nanw", _nan_first_weight)
    image = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=160, spacing=(0.7, 0.7, 2.0)), str(image))
    proc = ediqa("assess", image, "--model", weights, "--out", tmp_path / "out", "--progress", "none")
    _assert_one_line_error(proc, "nanw.safetensors", "NaN or infinite")
    assert not (tmp_path / "out").exists()


def _without(key: str):
    return lambda card: card.pop(key)


def _set(key: str, value):
    return lambda card: card.update({key: value})


@pytest.mark.parametrize("edit, problem", [
    (_without("sha256"), "'sha256' is missing"),
    (_without("kind"), "'kind' is missing"),
    (_without("preset"), "'preset' is missing"),
    (_without("name"), "'name' is missing"),
    (_set("preset", ["lite"]), "'preset' is not a string"),
    (_set("name", 3), "'name' is not a string"),
    (_set("kind", "teacher"), "'kind' is 'teacher', not 'detector' or 'student'"),
    (_set("sha256", "abc"), "'sha256' is not 64 hexadecimal digits"),
    (_set("sha256", None), "'sha256' is not 64 hexadecimal digits"),
    (_set("training", ["epochs"]), "'training' is not a JSON object"),
])
def test_a_malformed_card_is_refused_when_read(tmp_path, edit, problem):
    weights = _registered(tmp_path, "m")
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    edit(card)
    weights.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(InputError) as err:
        find_model(str(weights))
    assert str(err.value) == f"model card {weights.with_suffix('.json')}: {problem}"


def test_assess_with_a_card_without_sha256_is_one_line(tmp_path):
    weights = _registered(tmp_path / "reg", "nosha")
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    del card["sha256"]
    weights.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    image = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=160, spacing=(0.7, 0.7, 2.0)), str(image))
    proc = ediqa("assess", image, "--model", weights, "--out", tmp_path / "out", "--progress", "none")
    _assert_one_line_error(proc, "nosha.json", "'sha256' is missing")
    assert not (tmp_path / "out").exists()


def _contents(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (``None`` for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name, obstacle", [
    ("m", "m.json"),  # the card's final path (the old card replaced by a folder)
    ("m", "m.safetensors"),
    ("new", "new.json"),
    ("new", "new.safetensors"),
])
def test_a_failed_publish_leaves_the_registry_as_it_was(tmp_path, name, obstacle):
    registry = tmp_path / "reg"
    _registered(registry, "m")
    (registry / "weights.safetensors").unlink()
    if (registry / obstacle).exists():
        (registry / obstacle).unlink()
    (registry / obstacle / "inside").mkdir(parents=True)
    torch.manual_seed(1)
    save_weights(Student("lite"), tmp_path / "other.safetensors")  # weights other than the registered ones
    before = _contents(registry)
    with pytest.raises(InputError, match=f"cannot write .*{obstacle}: a folder of that name is in the way"):
        package_model(tmp_path / "other.safetensors", name, "student", "lite", {}, registry)
    assert _contents(registry) == before


def test_a_publish_that_fails_while_writing_leaves_the_registry_as_it_was(tmp_path, monkeypatch):
    """Weights and card are staged in a temporary folder: a write that fails (a full disk) leaves neither
    new file, nor the staging folder."""
    import EDIQALib.models as models

    registry = tmp_path / "reg"
    _registered(registry, "m")
    torch.manual_seed(1)
    save_weights(Student("lite"), tmp_path / "other.safetensors")
    before = _contents(registry)

    def full_disk(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models, "sha256_of", full_disk)
    with pytest.raises(OSError, match="No space left"):
        package_model(tmp_path / "other.safetensors", "m", "student", "lite", {}, registry)
    assert _contents(registry) == before


def test_publish_into_a_registry_that_is_a_file_is_one_line(tmp_path):
    registry = tmp_path / "reg"
    registry.write_text("not a folder", encoding="utf-8")
    with pytest.raises(InputError, match="reg is a file, not a folder"):
        package_model(_registered(tmp_path / "src", "s"), "s", "student", "lite", {}, registry)
    assert registry.read_text(encoding="utf-8") == "not a folder"


def test_publish_refuses_to_replace_a_model_of_another_kind(tmp_path):
    """A student published under the detector's name took the teacher's detector away."""
    registry = tmp_path / "reg"
    weights = _registered(registry, "det")
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    weights.with_suffix(".json").write_text(json.dumps({**card, "kind": "detector"}), encoding="utf-8")
    before = _contents(registry)
    with pytest.raises(InputError, match="det in .* is a detector model, which a student would replace"):
        package_model(_registered(tmp_path / "src", "s"), "det", "student", "lite", {}, registry)
    assert _contents(registry) == before
    first = package_model(_registered(tmp_path / "src", "s"), "s2", "student", "lite", {}, registry)
    sha = json.loads(first.with_suffix(".json").read_text(encoding="utf-8"))["sha256"]
    other = _registered(tmp_path / "other", "s", edit=lambda state: state["head.0.weight"].add_(1.0))
    package_model(other, "s2", "student", "lite", {}, registry)  # the same kind: replaced
    replaced = json.loads(first.with_suffix(".json").read_text(encoding="utf-8"))["sha256"]
    assert replaced != sha and replaced == hashlib.sha256(first.read_bytes()).hexdigest()


def test_publish_detector_that_fails_leaves_the_published_model_usable(tmp_path):
    """Through the CLI: a folder where the new card must go is one line, and the registry stays as it was."""
    from EDIQALib.detector import build_detector

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"command": "ediqa train-detector", "args": {"preset": "lite",
                                                                                         "iterations": 2}}))
    (run / "log.jsonl").write_text(json.dumps({"step": 2, "loss": 1.0}) + "\n")  # finished
    torch.manual_seed(0)
    save_weights(build_detector("lite"), run / "best.safetensors")
    registry = tmp_path / "reg"
    assert ediqa("publish-detector", run, "--models-dir", registry, "--name", "det1").returncode == 0
    before = _contents(registry)
    torch.manual_seed(1)
    save_weights(build_detector("lite"), run / "best.safetensors")
    (registry / "det2.json").mkdir()
    proc = ediqa("publish-detector", run, "--models-dir", registry, "--name", "det2")
    _assert_one_line_error(proc, "det2.json: a folder of that name is in the way")
    assert _contents(registry) == {**before, "det2.json": None}
    load_model(str(registry / "det1.safetensors"), "detector")


def test_weights_and_results_are_readable_by_others_as_the_umask_allows(tmp_path):
    """safetensors and ``mkstemp`` create files for their owner alone: a run's weights and a result's JSON
    shared with a colleague (or published by another account) could not be read."""
    import os

    from EDIQALib.io import write_text

    mask = os.umask(0o022)  # a common umask, under which a new file is readable by all
    try:
        save_weights(Student("lite"), tmp_path / "w.safetensors")
        write_text("{}", tmp_path / "result.json")
    finally:
        os.umask(mask)
    for name in ("w.safetensors", "result.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "w.safetensors"]  # no temporary left


@pytest.mark.parametrize("gpus, name, says", [
    (2, "cuda:1", None), (2, "cuda", None), (2, "auto", None),
    (2, "cuda:2", "device cuda:2 was asked for but the CUDA devices here are cuda:0 to cuda:1"),
    (1, "cuda:1", "device cuda:1 was asked for but the CUDA devices here are cuda:0"),
    (0, "cuda:0", "device cuda:0 was asked for but no CUDA device is available"),
    (2, "cuda:one", "unknown device 'cuda:one'; choose auto, cpu, cuda, cuda:N")])
def test_a_gpu_is_chosen_by_its_index_among_those_present(monkeypatch, gpus, name, says):
    """``cuda:N`` names the GPU of index N (a machine's GPUs are stood in for: this one may have none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if says is None:
        assert resolve_device(name) == ("cuda" if name == "auto" else name)
    else:
        with pytest.raises(InputError, match=re.escape(says)):
            resolve_device(name)


def test_under_torchrun_a_gpu_index_is_refused_before_the_ranks_meet(monkeypatch):
    """Each rank takes the GPU of its local rank; an index would put every rank on one GPU."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match=r"--device cuda:1: under torchrun each rank takes the GPU of its local rank"):
        with distributed_context("cuda:1"):
            pytest.fail("the ranks met")


def _overflowing(state: dict) -> None:
    """Finite weights that overflow: every float scaled by 10^15 (float32's range is passed inside the net)."""
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = v * 1e15


def test_a_student_whose_outputs_overflow_is_refused_when_loaded(tmp_path):
    """Caught as the model loads, before a command writes anything (``label`` wrote its CSV and lock first)."""
    weights = _registered(tmp_path, "huge", _overflowing)
    read_weights(weights)  # finite as stored
    with pytest.raises(InputError, match=r"huge\.safetensors: the student gives NaN or infinite outputs"):
        load_model(str(weights), "student")


def test_a_detector_whose_logits_overflow_is_refused_when_loaded(tmp_path):
    """torchvision drops non-finite detections without a word: the teacher scored every image 0, exit 0."""
    from EDIQALib.detector import build_detector

    torch.manual_seed(0)
    save_weights(build_detector("lite"), tmp_path / "det.safetensors")
    state = load_file(str(tmp_path / "det.safetensors"))
    _overflowing(state)
    save_file(state, str(tmp_path / "det.safetensors"))
    weights = package_model(tmp_path / "det.safetensors", "hugedet", "detector", "lite", {}, tmp_path / "reg")
    with pytest.raises(InputError, match=r"hugedet\.safetensors: the detector gives NaN or infinite outputs"):
        load_model(str(weights), "detector")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_integers_where_the_network_holds_floats_are_refused(tmp_path, dtype):
    """They were cast to float and scored, wrongly, with exit 0."""
    def to_integers(state: dict) -> None:
        state["head.0.weight"] = state["head.0.weight"].to(dtype)

    weights = _registered(tmp_path, "ints", to_integers)
    shown = str(dtype).removeprefix("torch.")
    with pytest.raises(InputError, match=rf"'head\.0\.weight' is of type {shown}, the network's float32"):
        load_model(str(weights), "student")


def test_many_members_names_in_a_small_file_build_no_ensemble(tmp_path):
    """A file of 200 members' names and no whole member fits no network, and says so at once: the ensemble
    of 200 was built first (5 MB a member)."""
    from EDIQALib.student import StudentEnsemble, student_for

    state = {f"members.{i}.x": torch.zeros(1) for i in range(200)}
    assert not isinstance(student_for(state, "lite"), StudentEnsemble)
    save_file(state, str(tmp_path / "many.safetensors"))
    weights = package_model(tmp_path / "many.safetensors", "many", "student", "lite", {}, tmp_path / "reg")
    with pytest.raises(InputError, match="many.safetensors .* do not fit the network"):
        load_model(str(weights), "student")
    whole = {f"members.{i}.{k}": v for i in range(2) for k, v in Student("lite").state_dict().items()}
    assert isinstance(student_for(whole, "lite"), StudentEnsemble)


def test_a_card_written_with_an_uppercase_sha256_is_read(tmp_path):
    weights = _registered(tmp_path, "upper")
    card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    weights.with_suffix(".json").write_text(json.dumps({**card, "sha256": card["sha256"].upper()}), encoding="utf-8")
    assert load_model(str(weights), "student")[1].sha256 == card["sha256"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
def test_a_card_that_is_a_pipe_is_refused_not_waited_on(tmp_path):
    weights = _registered(tmp_path, "piped")
    weights.with_suffix(".json").unlink()
    os.mkfifo(weights.with_suffix(".json"))
    with pytest.raises(InputError, match=r"model card .*piped\.json is not a file"):
        find_model(str(weights))


def test_a_publish_whose_second_rename_fails_leaves_the_registry_as_it_was(tmp_path, monkeypatch):
    """The card is renamed into place before the weights: a failure between the two left the new card
    beside the old weights, a model that no longer loaded (sha256 mismatch). The first is put back."""
    registry = tmp_path / "reg"
    _registered(registry, "m")
    torch.manual_seed(1)
    save_weights(Student("lite"), tmp_path / "other.safetensors")
    before = _contents(registry)
    replace = os.replace

    def fail_on_the_weights(src, dst):
        if str(dst).endswith("m.safetensors"):
            raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_weights)
    with pytest.raises(PermissionError):
        package_model(tmp_path / "other.safetensors", "m", "student", "lite", {}, registry)
    monkeypatch.setattr(os, "replace", replace)
    assert _contents(registry) == before
    load_model(str(registry / "m.safetensors"), "student")


def test_a_name_that_ends_as_a_file_is_refused(tmp_path):
    """``--name x.safetensors`` published x.safetensors.safetensors, which ``--model x.safetensors`` (a path) missed."""
    proc = ediqa("publish-student", tmp_path, "--name", "x.safetensors", "--models-dir", tmp_path / "reg")
    assert proc.returncode == 2 and "give it without its '.safetensors'" in proc.stderr, proc.stderr
    assert not (tmp_path / "reg").exists()
