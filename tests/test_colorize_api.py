"""colorize.load() and colorize.colorize() from a notebook: paths, PIL images
and arrays, transparency kept, photos turned upright, and what cannot be
colorized raises one ColorizeError line. (That the output keeps the input's
L is test_colorize.py's test_the_python_api_keeps_the_inputs_lightness.)"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import colorize
from conftest import DEMO, make_photo


def test_the_api_takes_paths_images_and_arrays_keeps_alpha_and_turns_photos_upright(tmp_path):
    """(Arrays of 8-bit color and float gray, at their size: test_colorize.py.)"""
    path = make_photo(tmp_path / "p.png", size=(50, 30))
    colorizer = colorize.load(DEMO, device="cpu")
    out = colorize.colorize(path, colorizer)
    assert out.size == (50, 30) and out.mode == "RGB"
    rgba = Image.open(path).convert("RGBA")
    rgba.putalpha(128)
    out = colorize.colorize(rgba, colorizer)
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 128
    assert colorize.colorize(Image.open(path).convert("L"), DEMO).size == (50, 30)  # a checkpoint's path will do
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": a phone photo held upright
    Image.open(path).convert("RGB").save(tmp_path / "turned.jpg", exif=exif)
    from_path = colorize.colorize(tmp_path / "turned.jpg", colorizer)
    from_image = colorize.colorize(Image.open(tmp_path / "turned.jpg"), colorizer)
    assert from_path.size == from_image.size == (30, 50)


def test_what_the_api_cannot_colorize_raises_one_line_that_says_why(tmp_path):
    colorizer = colorize.load(DEMO, device="cpu")
    path = make_photo(tmp_path / "p.jpg", size=(60, 40))
    rgb = np.asarray(Image.open(path))
    with pytest.raises(colorize.ColorizeError, match=r"missing\.jpg: no such file$"):
        colorize.colorize(tmp_path / "missing.jpg", colorizer)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(colorize.CheckpointError, match="bad.pt: not a checkpoint file"):
        colorize.colorize(path, tmp_path / "bad.pt")
    with pytest.raises(colorize.ColorizeError, match="not an image"):
        colorize.colorize(None, DEMO)
    with pytest.raises(colorize.ColorizeError, match="empty image"):
        colorize.colorize(Image.new("RGB", (0, 0)), colorizer)
    with pytest.raises(colorize.ColorizeError, match="not an image"):
        colorize.colorize(np.zeros((2, 3, 4, 5)), colorizer)
    # 0-255 in another dtype would read as almost white: refused, with what to give instead
    with pytest.raises(colorize.ColorizeError, match="dtype int64 is not an image: give uint8"):
        colorize.colorize(rgb.astype(np.int64), colorizer)
    with pytest.raises(colorize.ColorizeError, match="must hold values from 0 to 1, this one [0-9.]+ to 1.8"):
        colorize.colorize(rgb.astype(np.float64) / 127, colorizer)
    # a lazily opened image is decoded by colorize(): a truncated file is an image error, not an OSError
    whole = make_photo(tmp_path / "whole.jpg", size=(200, 150)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) // 2])  # its header whole, half its pixels
    with pytest.raises(colorize.ColorizeError, match="the PIL image is not a readable image"):
        colorize.colorize(Image.open(tmp_path / "cut.jpg"), colorizer)
    with pytest.raises(colorize.ColorizeError, match="cpu or cuda"):
        colorize.load(DEMO, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(colorize.ColorizeError, match="no CUDA device"):
            colorize.load(DEMO, device="cuda")


def test_the_python_api_refuses_arrays_that_are_not_images_in_one_line_without_warnings(tiny_ckpt):
    loaded = colorize.load(tiny_ckpt, device="cpu")
    for array, said in [(np.array(7, np.uint8), "shape ()"), (np.zeros(7200, np.uint8), "shape (7200,)"),
                        (np.zeros((4, 5, 2), np.uint8), "shape (4, 5, 2)"),
                        (np.zeros((4, 5, 1), np.uint8), "shape (4, 5, 1)"),
                        (np.zeros((2, 3, 4, 5)), "shape (2, 3, 4, 5)"), (np.zeros((0, 5, 3), np.uint8), "empty"),
                        (np.full((4, 5), np.nan), "NaN"), (np.full((4, 5, 3), np.inf, np.float32), "NaN or inf"),
                        (np.zeros((4, 5, 3), bool), "dtype bool")]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(colorize.ColorizeError) as e:
                colorize.colorize(array, loaded)
        assert said in str(e.value) and "\n" not in str(e.value), (array.shape, str(e.value))
        assert not caught, [str(w.message) for w in caught]
    # what the docstring promises still works: (H, W), (H, W, 3) and (H, W, 4), uint8 or floats in [0, 1]
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for array, mode in [(rgb[..., 0], "RGB"), (rgb, "RGB"), (rgb / 255, "RGB"), (rgb[::2, ::-1], "RGB"),
                        (np.dstack([rgb, rgb[..., :1]]), "RGBA")]:
        out = colorize.colorize(array, loaded)
        assert out.size == (array.shape[1], array.shape[0]) and out.mode == mode
