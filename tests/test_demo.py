"""The bundled demo model (demo/colorizer.pt): small, loads with
weights_only, used by a fresh clone, paints the sky blue and the held-out
faces warm."""

import os
import sys

import numpy as np
import torch
from PIL import Image

import colorize
import lab
import model
import runs
from conftest import DEMO, HERE, make_photo, run

sys.path.insert(0, os.path.join(HERE, "docs"))
import faces  # noqa: E402  (docs/faces.py)


HELD_OUT_PHOTO = os.path.join(HERE, "demo", "photos", "gcompris_categorization_0028.jpg")


def test_bundled_demo_checkpoint_is_small_and_loads_with_weights_only():
    assert os.path.getsize(DEMO) < 15 * 2**20
    ckpt = runs.read_checkpoint(DEMO)
    config = model.ColorizerConfig(**ckpt["config"])
    assert config.global_branch is False and ckpt["inception"] is None
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    model.Colorizer(config).load_state_dict({k: v.float() for k, v in ckpt["model"].items()})


def test_a_fresh_clone_colorizes_with_the_bundled_demo(tmp_path):
    """No checkpoint given or found (an empty working folder): the demo is used,
    said once, and on a held-out photo it paints the sky blue."""
    src = HELD_OUT_PHOTO if os.path.exists(HELD_OUT_PHOTO) else make_photo(tmp_path / "p.jpg", (256, 160))
    Image.open(src).convert("L").save(tmp_path / "old.jpg")
    r = run(os.path.join(HERE, "colorize.py"), "old.jpg", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("bundled demo model") == 1
    out = np.array(Image.open(tmp_path / "old_color.png"))
    ab = lab.rgb_to_lab(torch.from_numpy(out).permute(2, 0, 1).float() / 255)[1:]
    if src == HELD_OUT_PHOTO:
        chroma = ab.pow(2).sum(0).sqrt().mean().item()
        sky_b = ab[1, :ab.shape[1] // 5].mean().item()  # the top fifth of the picture is sky
        assert chroma > 5 and sky_b < -10, (chroma, sky_b)  # all-gray: 0 and 0; blue: b* < 0


def test_the_demo_paints_the_held_out_faces_warm():
    """The promise of the demo's fine-tune: on the validation photos with people
    (docs/faces.txt), every face has a* > 0 (the first demo painted them green)."""
    loaded = colorize.load(DEMO, device="cpu")
    for name, box in faces.read_boxes(os.path.join(HERE, "docs", "faces.txt")):
        photo = Image.open(os.path.join(HERE, "demo", "photos", name))
        a, b = faces.face_ab(colorize.colorize(photo.convert("L"), loaded), box)
        assert a > 0 and b > 0, (name, box, a, b)
