"""One contract that every registered architecture must pass."""

from __future__ import annotations

import pytest
import torch

from annot_denoise.models import MODELS, build_model, model_outputs


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_backward_any_size(name: str, channels: int, device: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, width=8, depth=3).to(device)
    for h, w in [(37, 51), (64, 64), (9, 130)]:
        x = torch.rand(2, channels, h, w, device=device)
        parts = model_outputs(model(x))
        assert parts["output"].shape == x.shape
        if getattr(model, "predicts_mask", False):
            assert parts["mask_logits"].shape == (2, 1, h, w)
            assert parts["content"].shape == x.shape
        sum(p.mean() for p in parts.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_inputs_are_padded_not_refused(name: str) -> None:
    model = build_model(name, in_channels=3, width=8, depth=3).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (1, 17), (5, 3)]:
            assert model_outputs(model(torch.rand(1, 3, h, w)))["output"].shape == (1, 3, h, w)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_round_trip(name: str) -> None:
    a = build_model(name, in_channels=3, width=8, depth=2).eval()
    b = build_model(name, in_channels=3, width=8, depth=2).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        for key, value in model_outputs(a(x)).items():
            assert torch.equal(value, model_outputs(b(x))[key]), key


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_unet_norms(norm: str) -> None:
    model = build_model("unet", in_channels=1, width=8, depth=2, norm=norm)
    assert model(torch.rand(2, 1, 20, 20)).shape == (2, 1, 20, 20)


@pytest.mark.parametrize("name", ["unet", "maskunet"])
def test_residual_models_start_as_identity(name: str) -> None:
    # The content head is zero-initialised: an untrained network changes nothing.
    model = build_model(name, in_channels=3, width=8, depth=2).eval()
    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        parts = model_outputs(model(x))
    assert torch.allclose(parts["output"], x, atol=1e-6)
    if "mask_logits" in parts:
        assert torch.sigmoid(parts["mask_logits"]).max() < 0.05  # "no annotation" at first


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ValueError, match="autoencoder"):
        build_model("resnet")


def test_config_literal_matches_registry() -> None:
    from typing import get_args

    from annot_denoise.config import ArchName

    assert set(get_args(ArchName)) == set(MODELS)


def test_fill_holes_is_harmonic_inside_and_exact_outside() -> None:
    from annot_denoise.models.maskunet import fill_holes

    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 40, 64).clone()
    hole = torch.zeros(1, 1, 40, 64)
    hole[..., 10:15, :] = 1
    hole[..., :, 30:34] = 1
    filled = fill_holes(ramp, hole, smooth_steps=200)
    assert torch.equal(filled[..., hole[0, 0] == 0], ramp[..., hole[0, 0] == 0])
    # A linear ramp is harmonic: the fill reproduces it closely (the image border,
    # where the hole's ends meet the edge, deviates a little).
    err = (filled - ramp).abs()[..., hole[0, 0] > 0]
    assert err.mean() < 0.005 and err.max() < 0.05
    assert torch.equal(fill_holes(ramp, torch.zeros_like(hole)), ramp)


def test_adaptive_hole_takes_the_fringe_not_the_background() -> None:
    from annot_denoise.models.maskunet import _adaptive_hole

    x = torch.full((1, 1, 20, 20), 0.3)
    x[..., 10, 5:15] = 1.0  # the stroke: detected
    x[..., 11, 5:15] = 0.6  # its anti-aliased fringe: not detected, but bright
    detected = torch.zeros(1, 1, 20, 20)
    detected[..., 10, 5:15] = 1
    hole = _adaptive_hole(x, detected, dilate=2, smooth_steps=10)
    assert hole[..., 11, 5:15].all() and hole[..., 10, 5:15].all()
    assert not hole[..., 9, 5:15].any()  # clean background next to the stroke stays


def test_sparse_hole_smoothing_gives_the_dense_bits() -> None:
    from annot_denoise.models.maskunet import _grow, fill_holes

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 67, 90, generator=gen)
    hole = _grow((torch.rand(2, 1, 67, 90, generator=gen) > 0.99).float(), 2)
    with torch.no_grad():
        sparse = fill_holes(x, hole, smooth_steps=4)  # visits only the hole pixels
    dense = fill_holes(x.clone().requires_grad_(), hole, smooth_steps=4)  # autograd: dense
    assert torch.equal(sparse, dense.detach())
    assert not torch.equal(sparse, fill_holes(x, hole, smooth_steps=0))  # the steps did work


@pytest.mark.parametrize("pixels", [1, 2, 3])
def test_grow_is_a_square_max_pool(pixels: int) -> None:
    import torch.nn.functional as F

    from annot_denoise.models.maskunet import _grow

    g = torch.Generator().manual_seed(pixels)
    for shape in [(2, 1, 37, 53), (1, 1, 4, 3), (1, 2, 9, 1)]:
        binary = (torch.rand(shape, generator=g) > 0.9).float()
        soft = torch.rand(shape, generator=g)
        for mask in (binary, soft, binary.bfloat16()):
            pool = F.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels)
            assert torch.equal(_grow(mask, pixels), pool)


def test_frozen_stage_keeps_weights_and_statistics() -> None:
    model = build_model("maskunet", width=8, depth=2, detector_width=4)
    assert model.detector.stem[0].out_channels == 4 and model.inpainter.stem[0].out_channels == 8
    model.freeze(["inpainter"])
    model.train()
    assert not model.inpainter.training and model.detector.training
    assert not any(p.requires_grad for p in model.content_head.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("inpainter.")}
    x = torch.rand(2, 3, 32, 32)
    out = model(x, true_mask=(torch.rand(2, 1, 32, 32) > 0.9).float())
    out["output"].mean().backward()  # batch-norm statistics would move here if training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.detector.stem[0].weight.grad is not None
    with pytest.raises(ValueError, match="unknown stage"):
        model.freeze(["decoder"])


def test_training_holes_grown_or_as_inference_cuts_them() -> None:
    model = build_model("maskunet").eval()  # a fresh mask head finds nothing
    x = torch.full((1, 3, 32, 32), 0.3)
    truth = torch.zeros(1, 1, 32, 32)
    truth[..., 10:14, 10:20] = 1
    x[..., 10:14, 10:20] = 1.0  # the mark
    x[..., 14, 10:20] = 0.6  # its fringe, left out of the mask
    with torch.no_grad():
        grown = model(x, true_mask=truth)["hole"]
        cut = model(x, true_mask=truth, train_holes="inference", dilate=1)["hole"]
        undilated = model(x, true_mask=truth, train_holes="inference", dilate=0)["hole"]
    assert torch.equal(grown[0, 0, 8:16, 8:22], torch.ones(8, 14))  # 2 px all round
    assert grown.sum() == 8 * 14
    fringe = torch.zeros_like(truth)
    fringe[..., 14, 10:20] = 1
    # As inference: the mark, and of the 1-px ring only the fringe.
    assert torch.equal(cut, truth + fringe)
    assert torch.equal(undilated, truth)
    with pytest.raises(ValueError, match="train_holes"):
        model(x, true_mask=truth, train_holes="wide")
