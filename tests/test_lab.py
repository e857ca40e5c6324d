"""Lab conversion beyond the published values (those are in test_colorize.py):
batches and sizes, large images, 8-bit input, gradients, the clip, the network's units."""

import numpy as np
import torch
from PIL import Image

import data
import lab


def test_lab_round_trip_batched_and_unbatched():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 16, 24, dtype=torch.float64)
    batched = lab.rgb_to_lab(rgb)
    assert batched.shape == rgb.shape
    assert torch.allclose(lab.rgb_to_lab(rgb[1]), batched[1])  # (3, H, W) gives the same
    assert torch.allclose(lab.lab_to_rgb(batched), rgb, atol=1e-6)
    L = batched[:, 0]
    assert L.min() >= 0 and L.max() <= 100
    # float32 agrees with float64 closely enough for 8-bit images
    assert torch.allclose(lab.rgb_to_lab(rgb.float()).double(), batched, atol=2e-3)
    for empty in ((0, 3, 4, 4), (1, 3, 0, 4), (1, 3, 4, 0)):  # no pixels: no error either
        assert lab.lab_to_rgb(lab.rgb_to_lab(torch.zeros(empty, dtype=torch.uint8))).shape == empty


def lab_by_the_formulas(rgb):
    """sRGB (3, H, W) float64 -> Lab, step by step in numpy, with scikit-image's
    constants (rgb2lab: sRGB gamma, xyz_from_rgb, the D65 white, the Lab companding)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz_from_rgb = np.array([[0.412453, 0.357580, 0.180423],
                             [0.212671, 0.715160, 0.072169],
                             [0.019334, 0.119193, 0.950227]])
    xyz = np.einsum("ij,jhw->ihw", xyz_from_rgb, linear) / np.array([0.95047, 1.0, 1.08883])[:, None, None]
    fx, fy, fz = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)])


def test_a_large_image_converts_to_the_numbers_of_the_formulas():
    """A photo of over a million values (lab.py converts large images a part
    at a time, to stay in the cache): the numbers of the formulas, every row
    in its place, and back; and the same as its rows converted apart."""
    torch.manual_seed(0)
    big = torch.rand(3, 700, 600, dtype=torch.float64)  # 1.26 million values
    got = lab.rgb_to_lab(big)
    assert np.abs(got.numpy() - lab_by_the_formulas(big.numpy())).max() < 1e-9
    assert torch.allclose(lab.rgb_to_l(big), got[:1], rtol=0, atol=1e-9)
    back = lab.lab_to_rgb(got)
    assert torch.allclose(back, big, rtol=0, atol=1e-9)
    rows = torch.cat([lab.lab_to_rgb(got[:, i:i + 7]) for i in range(0, 700, 7)], dim=1)  # 12600 values each
    assert torch.allclose(back, rows, rtol=0, atol=1e-12)
    # float32, as colorize.py converts a full-resolution photo: as close as float32 gets to float64
    assert (lab.rgb_to_lab(big.float()).double() - got).abs().max() < 2e-3


def test_uint8_input_gives_the_numbers_of_float_input():
    rgb8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    as_float = lab.rgb_to_lab(rgb8.double() / 255)
    assert lab.rgb_to_lab(rgb8).dtype == torch.float32
    assert torch.allclose(lab.rgb_to_lab(rgb8).double(), as_float, atol=1e-3)
    assert torch.allclose(lab.rgb_to_l(rgb8).double(), as_float[:, :1], atol=1e-3)
    # published values hold through the table too: scikit-image's red (test_colorize.py)
    assert torch.allclose(lab.rgb_to_lab(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)).flatten(),
                          torch.tensor([53.240588, 80.092308, 67.202751]), atol=1e-3)


def test_rgb_to_l_is_the_l_of_rgb_to_lab():
    rgb = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    assert torch.allclose(lab.rgb_to_l(rgb), lab.rgb_to_lab(rgb)[:, :1], rtol=0, atol=1e-10)


def test_lab_is_differentiable_everywhere_including_black():
    rgb = torch.cat([torch.zeros(1, 3, 2, 2), torch.rand(1, 3, 2, 2)]).requires_grad_()
    lab.lab_to_rgb(lab.rgb_to_lab(rgb)).sum().backward()
    assert torch.isfinite(rgb.grad).all()


def test_lab_to_rgb_clips_to_unit_range():
    wild = torch.tensor([[100.0, 120.0, -120.0], [0.0, -100.0, 100.0]]).T.reshape(3, 1, 2)
    out = lab.lab_to_rgb(wild)
    assert out.min() >= 0 and out.max() <= 1


def test_network_scaling_round_trips():
    lab_img = lab.rgb_to_lab(torch.rand(2, 3, 8, 8))
    lightness, ab = lab.lab_to_net(lab_img)
    assert lightness.shape == (2, 1, 8, 8) and ab.shape == (2, 2, 8, 8)
    assert lightness.min() >= -1 and lightness.max() <= 1 and ab.abs().max() <= 1
    assert torch.allclose(lab.net_to_lab(lightness, ab), lab_img)


def test_gray_rgb_has_the_same_lightness_and_no_color():
    lightness, _ = lab.lab_to_net(lab.rgb_to_lab(torch.rand(1, 3, 8, 8, dtype=torch.float64)))
    gray = lab.gray_rgb(lightness)
    assert gray.shape == (1, 3, 8, 8)
    back = lab.rgb_to_lab(gray)
    assert torch.allclose(back[:, :1] / 50 - 1, lightness, atol=1e-4)
    assert back[:, 1:].abs().max() < 0.01


def test_to_tensor_and_to_uint8_are_each_others_inverse():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    t = data.to_tensor(Image.fromarray(rgb))
    assert t.shape == (3, 7, 9) and t.dtype == torch.uint8 and torch.equal(t.permute(1, 2, 0), torch.from_numpy(rgb))
    assert data.to_tensor(Image.fromarray(rgb[..., 0])).shape == (1, 7, 9)  # a gray image: one channel
    assert torch.equal(lab.to_uint8(t / 255), t)
    assert lab.to_uint8(torch.tensor([-0.5, 0.0, 0.6 / 255, 0.499, 1.0, 7.0])).tolist() == [0, 0, 1, 127, 255, 255]
