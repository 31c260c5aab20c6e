"""The weighted loss and the image metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from annot_denoise.evaluation.metrics import mask_scores, mean_abs_change, psnr, ssim
from annot_denoise.training.losses import content_loss, restoration_loss, weighted_mse


def test_weighted_mse_matches_the_formula() -> None:
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.8).float()
    w = torch.where(mask > 0, 60.0, 1.0).expand_as(pred)
    expected = (w * (pred - target) ** 2).sum() / w.sum()
    assert torch.allclose(weighted_mse(pred, target, mask, 60.0, 1.0), expected)


def test_alpha_weights_annotated_errors_more() -> None:
    target = torch.zeros(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    inside, outside = target.clone(), target.clone()
    inside[..., 0, 0] = 1
    outside[..., 3, 3] = 1
    assert weighted_mse(inside, target, mask, 60, 1) > 10 * weighted_mse(
        outside, target, mask, 60, 1
    )


def test_beta_zero_ignores_unannotated_pixels() -> None:
    target, mask = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    pred = target.clone()
    pred[..., 2, 2] = 1
    assert weighted_mse(pred, target, mask, 60, 0) == 0


def test_interface_weight_makes_taking_the_interface_costlier() -> None:
    target = torch.zeros(1, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 6:, :] = 1  # a mark along the bottom
    logits = torch.full((1, 1, 8, 8), -4.0)
    logits[..., 6:, :] = 4.0  # found
    logits[..., :2, :] = 4.0  # and the interface along the top taken with it
    top, bottom = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    top[..., :2, :], bottom[..., 6:, :] = 1, 1

    def loss(interface, weight):
        return restoration_loss(
            target, target, mask, alpha=60, beta=1, mask_logits=logits,
            interface=interface, interface_weight=weight,
        )  # fmt: skip

    plain = loss(None, 1.0)
    assert loss(top, 1.0) == plain
    assert loss(top, 10.0) > 2 * plain
    # Where a mark lies over the interface it is a mark: no weight there.
    assert torch.isclose(loss(bottom, 10.0), plain)


def _two_patches(easy: float, hard: float) -> tuple[torch.Tensor, ...]:
    """A mark in each of two patches; the content is off by ``easy`` in the first
    and by ``hard`` in the second, on and around the marks."""
    target = torch.full((2, 1, 16, 16), 0.5)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 6:10, 6:10] = 1
    content = target.clone()
    content[0] += easy
    content[1] += hard
    return content, target, mask


def test_log_content_counts_every_patch_alike() -> None:
    def drop(metric: str, halve: int) -> float:
        errors = [4 / 255, 0.2]
        before = content_loss(*_two_patches(*errors), metric=metric)
        errors[halve] /= 2
        return float(before - content_loss(*_two_patches(*errors), metric=metric))

    # Pooled, the textured patch's large error is nearly all of the loss.
    assert drop("mse", halve=1) > 100 * drop("mse", halve=0)
    # In the log, halving either patch's error is worth the same.
    assert drop("log_mse", halve=0) == pytest.approx(drop("log_mse", halve=1), rel=0.01)


def test_log_content_ignores_patches_without_marks() -> None:
    content, target, mask = _two_patches(1 / 255, 0.2)
    plain = content_loss(content, target, mask, metric="log_mse")
    noisy = torch.rand(1, 1, 16, 16)  # nothing to paint there: its content is never used
    more = content_loss(
        torch.cat([content, noisy]),
        torch.cat([target, torch.zeros(1, 1, 16, 16)]),
        torch.cat([mask, torch.zeros(1, 1, 16, 16)]),
        metric="log_mse",
    )
    assert torch.isclose(plain, more)
    none = torch.zeros_like(mask)
    assert content_loss(content, target, none, metric="log_mse") == 0


def test_ssim_term_is_differentiable() -> None:
    pred = torch.rand(1, 1, 32, 32, requires_grad=True)
    target, mask = torch.rand(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    loss = restoration_loss(pred, target, mask, alpha=60, beta=1, ssim_weight=0.5)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert loss > weighted_mse(pred, target, mask, 60, 1)


def test_psnr() -> None:
    a = np.zeros((10, 10))
    b = a.copy()
    assert psnr(a, b) == math.inf
    b[:] = 0.1
    assert psnr(a, b) == pytest.approx(20.0)
    mask = np.zeros((10, 10), bool)
    assert math.isnan(psnr(a, b, mask))
    mask[0, 0] = True
    b[0, 0] = 0.01
    assert psnr(a, b, mask) == pytest.approx(40.0)


def test_ssim_identical_and_different() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((32, 32)).astype(np.float32)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, rng.random((32, 32)).astype(np.float32)) < 0.2
    assert math.isnan(ssim(a[:5, :5], a[:5, :5]))


def test_mean_abs_change_in_8bit_levels() -> None:
    a, b = np.zeros((4, 4)), np.full((4, 4), 2 / 255)
    region = np.ones((4, 4), bool)
    assert mean_abs_change(a, b, region) == pytest.approx(2.0)


def test_mask_scores() -> None:
    truth = np.zeros((4, 4), bool)
    truth[0, :2] = True
    pred = np.zeros((4, 4), bool)
    pred[0, 1:3] = True
    s = mask_scores(pred, truth)
    assert s["precision"] == 0.5 and s["recall"] == 0.5
    assert s["f1"] == pytest.approx(0.5) and s["iou"] == pytest.approx(1 / 3)
