"""Student networks: both presets run on odd-sized slices, give a score and a stride-4 map, and learn."""
from __future__ import annotations

import pytest
import torch

from EDIQALib.backbones import CompactStages, ConvNeXtTStages, SwinTStages
from EDIQALib.choices import PRESETS
from EDIQALib.student import STUDENT_SPECS
from EDIQALib.student import Student, StudentEnsemble, ensemble_state, student_for


@pytest.mark.parametrize("stages", [SwinTStages, ConvNeXtTStages, CompactStages])
def test_backbones_give_four_levels_at_their_strides(stages):
    net = stages().eval()
    with torch.inference_mode():
        feats = net(torch.rand(1, 3, 256, 256))
    assert [f.shape[1] for f in feats] == list(net.channels)
    assert [256 // f.shape[-1] for f in feats] == list(net.strides)


@pytest.mark.parametrize("preset", ["lite", "paper"])
def test_the_inference_path_keeps_the_outputs(preset):
    """for_inference folds BatchNorm and the input's normalisation into the convolutions: same outputs,
    also on a slice the backbones pad, with the first convolution reading the raw one-channel slice."""
    torch.manual_seed(0)
    net = Student(preset)
    net.train()(torch.rand(4, 1, 128, 128))  # move the running statistics off their defaults
    x = torch.rand(2, 1, 136, 120)
    with torch.inference_mode():
        before = net.eval()(x)
        after = net.for_inference()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    first = next(m for m in net.backbones[0].modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.shape[1] == 1
    for b, a in zip(before, after):
        assert b.shape == a.shape
        assert torch.allclose(b, a, atol=1e-4)


def test_the_student_has_exactly_the_presets_that_the_command_line_offers():
    assert set(STUDENT_SPECS) == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_student_outputs(preset):
    net = Student(preset).eval()
    with torch.inference_mode():
        score, heat = net(torch.rand(2, 1, 160, 144))
    assert score.shape == (2,)
    assert heat.shape == (2, 1, 40, 36)
    if preset == "paper":  # DESIGN §2: 4 levels × 512 channels → 1024 → 1
        assert net.head[0].in_features == 2048 and net.head[0].out_features == 1024


def test_lite_student_learns_to_separate_clean_from_noisy():
    torch.manual_seed(0)
    net = Student("lite")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    clean = torch.full((4, 1, 64, 64), 0.7)
    noisy = clean + 0.2 * torch.randn(4, 1, 64, 64)
    x, y = torch.cat([clean, noisy]), torch.tensor([0.8] * 4 + [0.2] * 4)
    losses = []
    for _ in range(30):
        score, _ = net(x)
        loss = torch.mean((torch.sigmoid(score) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.25 * losses[0]


def test_an_ensemble_averages_its_members_probabilities_and_loads_from_their_weights():
    torch.manual_seed(0)
    members = [Student("lite").eval() for _ in range(3)]
    state = ensemble_state([m.state_dict() for m in members])
    ensemble = student_for(state, "lite")
    assert isinstance(ensemble, StudentEnsemble) and len(ensemble.members) == 3
    ensemble.load_state_dict(state)
    assert isinstance(student_for(members[0].state_dict(), "lite"), Student)
    x = torch.rand(2, 1, 128, 96)
    with torch.inference_mode():
        outs = [m(x) for m in members]
        score, heat = ensemble.eval()(x)
        fast_score, fast_heat = ensemble.for_inference()(x)
    mean_score = torch.stack([torch.sigmoid(s) for s, _ in outs]).mean(dim=0)
    mean_heat = torch.stack([torch.sigmoid(h) for _, h in outs]).mean(dim=0)
    assert torch.allclose(torch.sigmoid(score), mean_score, atol=1e-6)
    assert torch.allclose(torch.sigmoid(heat), mean_heat, atol=1e-6)
    assert torch.allclose(torch.sigmoid(fast_score), mean_score, atol=1e-4)
    assert torch.allclose(torch.sigmoid(fast_heat), mean_heat, atol=1e-4)
    assert not torch.allclose(torch.sigmoid(outs[0][0]), mean_score, atol=1e-4)  # the members differ
