"""sRGB <-> CIE L*a*b* (D65 white, 2 degree observer) in plain, batched torch.

The network sees only lightness L and predicts the two color channels a*, b* (paper
sections 1 and 3.1): every image starts and ends here. The formulas and constants are
scikit-image's (rgb2lab / lab2rgb), so our numbers check against its published values.

Tensors carry channels at dim -3: (3, H, W) or (B, 3, H, W). sRGB in [0, 1] (or uint8),
L in [0, 100], a and b roughly in [-128, 127]; differentiable, on any device and float dtype.

    python -c "import lab, torch; print(lab.rgb_to_lab(torch.ones(3, 1, 1)))"
"""
import torch

# sRGB primaries -> CIE XYZ (D65), as in scikit-image's xyz_from_rgb.
RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
WHITE_D65 = (0.95047, 1.0, 1.08883)  # reference white X, Y, Z

# The network's view of Lab, defined here and nowhere else: L/50 - 1 in [-1, 1] goes in, ab/128 comes out of a tanh.
L_CENTER = 50.0
AB_SCALE = 128.0


def _matmul_channels(matrix, x):
    """Apply a 3x3 matrix (a float64 tensor) to the channel axis (dim -3) of x."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(device=x.device, dtype=x.dtype), x)


def _per_channel(values, x):  # a (3, 1, 1) tensor of x's kind
    return torch.tensor(values, device=x.device, dtype=x.dtype).view(3, 1, 1)


# Each chain of linear steps folded into one 3x3 matrix: a few passes over the image, not a dozen.
_M = torch.tensor(RGB_TO_XYZ, dtype=torch.float64)
_WHITE = torch.tensor(WHITE_D65, dtype=torch.float64)
RGB_TO_XYZN = _M / _WHITE[:, None]                   # linear RGB -> XYZ / white
XYZN_TO_RGB = torch.linalg.inv(_M) * _WHITE[None, :]  # and back
F_TO_LAB = torch.tensor([[0, 116, 0], [500, -500, 0], [0, 200, -200]], dtype=torch.float64)
LAB_TO_F = torch.linalg.inv(F_TO_LAB)                # L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz)


def _srgb_to_linear(rgb):
    if rgb.dtype == torch.uint8:  # a speed-up, below
        return _linear_table(rgb)
    # Undo the sRGB gamma. Both branches of torch.where get gradients, so the
    # power is taken on a clamped input to keep the unused branch finite.
    return torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def _f(t):
    # The Lab companding; cbrt has an infinite slope at 0, hence the clamp (as above).
    return torch.where(t > 0.008856, t.clamp(min=0.008856) ** (1 / 3), 7.787 * t + 16 / 116)


def _rgb_to_lab(rgb):  # the formulas; rgb_to_lab below runs them in strips
    f = _f(_matmul_channels(RGB_TO_XYZN, _srgb_to_linear(rgb)))     # fx, fy, fz
    return _matmul_channels(F_TO_LAB, f) - _per_channel((16, 0, 0), f)


def _rgb_to_l(rgb):  # lightness alone: Y is the middle row of the matrix
    return 116 * _f(_matmul_channels(RGB_TO_XYZN[1:2], _srgb_to_linear(rgb))) - 16


def _lab_to_rgb(lab):  # the inverse formulas
    f = _matmul_channels(LAB_TO_F, lab + _per_channel((16, 0, 0), lab))  # fx, fy, fz
    # scikit-image sets a negative Z to 0 before inverting; x and y go through as they are
    f = f.clamp(min=_per_channel((-float("inf"), -float("inf"), 0), f))
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787)
    lin = _matmul_channels(XYZN_TO_RGB, xyz)
    rgb = torch.where(lin > 0.0031308,
                      1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055,
                      12.92 * lin)
    return rgb.clamp(0, 1)


def rgb_to_lab(rgb):
    """sRGB in [0, 1] (any float dtype) or uint8 in [0, 255] -> Lab.
    (..., 3, H, W) -> (..., 3, H, W)."""
    return _in_strips(_rgb_to_lab, rgb)


def rgb_to_l(rgb):
    """sRGB (float in [0, 1] or uint8) -> L alone, as rgb_to_lab(rgb)[..., :1, :, :]
    at half the cost. (..., 3, H, W) -> (..., 1, H, W)."""
    return _in_strips(_rgb_to_l, rgb)


def lab_to_rgb(lab):
    """Lab -> sRGB, clipped to [0, 1]. (..., 3, H, W) -> (..., 3, H, W)."""
    return _in_strips(_lab_to_rgb, lab)


def l_to_net(L):  # L in [0, 100] -> the network's input in [-1, 1]
    return L / L_CENTER - 1


def lab_to_net(lab):
    """Lab -> (L scaled to [-1, 1], ab scaled to about [-1, 1]): the network's units.
    (..., 3, H, W) -> (..., 1, H, W), (..., 2, H, W)."""
    return l_to_net(lab[..., :1, :, :]), lab[..., 1:, :, :] / AB_SCALE


def net_to_lab(lightness, ab):
    """Inverse of lab_to_net: (..., 1, H, W), (..., 2, H, W) -> (..., 3, H, W)."""
    return torch.cat([(lightness + 1) * L_CENTER, ab * AB_SCALE], dim=-3)


def gray_rgb(lightness):
    """The gray sRGB image (..., 3, H, W) of a lightness in network units (..., 1, H, W):
    what the Inception branch sees, the same luminance as the encoder's input."""
    no_color = torch.zeros_like(lightness).expand(*lightness.shape[:-3], 2, *lightness.shape[-2:])
    return lab_to_rgb(net_to_lab(lightness, no_color))


# -----------------------------------------------------------------------------
# Speed-ups: the same numbers, faster (bench.py measures them)

def _in_strips(per_pixel, x, elements=1 << 20):
    """per_pixel(x) on strips of rows of about `elements` values: the dozen temporaries
    of a conversion stay in cache instead of streaming through memory (2-3x faster)."""
    rows = max(1, elements // max(1, x[..., :1, :].numel()))  # max: an empty image is converted too
    if x.shape[-2] <= rows:
        return per_pixel(x)
    return torch.cat([per_pixel(strip) for strip in x.split(rows, dim=-2)], dim=-2)


def _linear_table(rgb):  # 8-bit pixels: look up 256 linear values instead of a power per pixel
    return _srgb_to_linear(torch.arange(256, device=rgb.device) / 255)[rgb.long()]


# Metrics on uint8 RGB (B, 3, H, W) -> (B,), as colorization papers report them. Sums
# run over strips of rows: a 24-megapixel photo in float64 at once would take gigabytes.

def to_uint8(rgb):  # sRGB in [0, 1] -> uint8 in [0, 255], rounded: what an image file holds
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def _pixel_mean(per_pixel, *images, rows=256):  # per_pixel(*strips) (..., h, W), averaged over H and W
    total = sum(per_pixel(*strips).sum(dim=(-2, -1)) for strips in zip(*(x.split(rows, dim=-2) for x in images)))
    return total / (images[0].shape[-2] * images[0].shape[-1])


def psnr(pred, target):  # peak signal-to-noise ratio in dB over all channels; identical images give inf
    mse = _pixel_mean(lambda p, t: (p.double() - t.double()).pow(2).mean(-3), pred, target)
    return 20 * torch.log10(255 / mse.sqrt())


def ab_mse(pred, target):  # mean squared a*b* error, in the network's ab/128 units
    return _pixel_mean(lambda p, t: ((rgb_to_lab(p) - rgb_to_lab(t))[..., 1:, :, :].double() / AB_SCALE)
                       .pow(2).mean(-3), pred, target)


def colorfulness(rgb):
    """Hasler and Suesstrunk (2003), the variant of DDColor and CT2, on |rg| and |yb|:
    M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)."""
    def moments(x):  # |rg|, |rg|^2, |yb|, |yb|^2: (B, 4, h, W)
        r, g, b = x.double().unbind(-3)
        rg, yb = (r - g).abs(), ((r + g) / 2 - b).abs()
        return torch.stack([rg, rg ** 2, yb, yb ** 2], dim=-3)
    rg, rg2, yb, yb2 = _pixel_mean(moments, rgb).unbind(-1)
    return (rg2 - rg ** 2 + yb2 - yb ** 2).clamp(min=0).sqrt() + 0.3 * (rg ** 2 + yb ** 2).sqrt()
