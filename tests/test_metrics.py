"""The metrics say how far they can be trusted: PSNR and colorfulness against
values by hand, a mean over few images with its uncertainty, all-gray as the
photo's own lightness with no color."""

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

import lab
import outputs
from conftest import run


def test_psnr_and_colorfulness_against_hand_computed_values():
    a = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 48  # one error of 48 in 48 values: MSE 48, PSNR = 20 log10(255 / sqrt(48))
    assert lab.psnr(b, a).item() == pytest.approx(20 * math.log10(255 / math.sqrt(48)))
    gray = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    assert lab.colorfulness(gray).item() == 0
    red = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 255  # rg = 255, yb = 127.5 everywhere: no spread, 0.3 * |mean|
    assert lab.colorfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5))


def test_metrics_say_how_far_a_mean_over_few_images_can_be_trusted():
    rows = [{"m": (21, 0.01, 5), "all-gray": (20, 0.02, 0)}, {"m": (23, 0.03, 9), "all-gray": (20, 0.04, 0)}]
    text = outputs.uncertainty(rows, "m")
    assert text.startswith("against all-gray: PSNR +2.00 dB (standard error 1.00), ab MSE 0.667x"), text
    low, high = map(float, re.findall(r"([\d.]+)x", text.split("resamplings: ")[1]))
    assert 0.5 <= low < 0.667 < high <= 0.75  # between the two images' own ratios


def test_all_gray_is_the_inputs_own_lightness_with_no_color(tiny_ckpt, tmp_path):
    # Saturated red, green and blue: Pillow's Rec. 601 luma grays them far from their CIE L*
    pixels = np.zeros((48, 96, 3), np.uint8)
    pixels[:, :32, 0], pixels[:, 32:64, 1], pixels[:, 64:, 2] = 230, 200, 255
    pixels += np.random.default_rng(0).integers(0, 20, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    r = run("colorize.py", tmp_path / "rgb.png", "--checkpoint", tiny_ckpt, "--metrics", "--compare")
    assert r.returncode == 0, r.stderr
    said = float(re.search(r"all-gray PSNR ([\d.]+) dB", r.stdout).group(1))
    # what the model keeps: the photo's own L, with a* = b* = 0
    L = lab.rgb_to_lab(torch.from_numpy(pixels).permute(2, 0, 1)[None])[:, :1]
    gray = (lab.lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1)) * 255).round().byte()
    truth = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    assert said == pytest.approx(lab.psnr(gray, truth).item(), abs=0.006)
    luma = torch.from_numpy(np.array(Image.fromarray(pixels).convert("L").convert("RGB"))).permute(2, 0, 1)[None]
    assert abs(lab.psnr(luma, truth).item() - said) > 0.5  # the two grays do differ here
    # the compare sheet shows that same gray as "gray input"
    panel = np.asarray(Image.open(tmp_path / "rgb_compare.png").convert("RGB"))[18:, :96]
    assert np.abs(panel.astype(int) - gray[0].permute(1, 2, 0).numpy()).max() <= 1


def test_metrics_in_strips_match_the_formulas_over_the_whole_image():
    """lab's metrics sum over strips of rows (bounded memory); the numbers are
    the textbook formulas' over the whole image, and outputs.image_metrics is
    those same functions."""
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (1, 3, 600, 50), dtype=np.uint8) for _ in range(2))  # 600 rows: three strips
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    mse = (a.double() - b.double()).pow(2).mean()
    assert lab.psnr(a, b).item() == pytest.approx(20 * math.log10(255 / math.sqrt(mse)), rel=1e-12)
    ab = (lab.rgb_to_lab(a)[:, 1:] - lab.rgb_to_lab(b)[:, 1:]).double() / lab.AB_SCALE
    assert lab.ab_mse(a, b).item() == pytest.approx(ab.pow(2).mean().item(), rel=1e-9)
    r, g, bl = a.double()[0]
    rg, yb = (r - g).abs(), ((r + g) / 2 - bl).abs()
    hasler = math.hypot(rg.std(unbiased=False), yb.std(unbiased=False)) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert lab.colorfulness(a).item() == pytest.approx(hasler, rel=1e-9)
    pictures = [Image.fromarray(x[0].permute(1, 2, 0).numpy()) for x in (a, b)]
    assert outputs.image_metrics(*pictures) == (lab.psnr(a, b).item(), lab.ab_mse(a, b).item(),
                                                lab.colorfulness(a).item())
