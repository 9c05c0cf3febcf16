"""Student networks: both presets run on odd-sized slices, give a score and a stride-4 map, and learn."""
from __future__ import annotations

import pytest
import torch

from EDIQALib.backbones import ConvNeXtTStages, MobileNetV3SmallStages, SwinTStages
from EDIQALib.student import Student


@pytest.mark.parametrize("stages", [SwinTStages, ConvNeXtTStages, MobileNetV3SmallStages])
def test_backbones_give_four_levels_at_strides_4_to_32(stages):
    net = stages().eval()
    with torch.inference_mode():
        feats = net(torch.rand(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == list(net.channels)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]


@pytest.mark.parametrize("preset", ["lite", "paper"])
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
        losses.append(float(loss))
    assert losses[-1] < 0.25 * losses[0]
