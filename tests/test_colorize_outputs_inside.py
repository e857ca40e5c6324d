"""Tests: colorize.py's outputs stay inside --out, every run says what it did,
and the pieces it shares with the other scripts (the photo listing, the image
conversions, the metrics, the attention crop and page) match their references.

    python -m pytest tests/test_colorize_outputs_inside.py

Self-contained: the repository root goes on sys.path here, and the scripts run
in processes of their own, as a user runs them.
"""
import base64
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import attention_maps  # noqa: E402
import colorize  # noqa: E402
import data  # noqa: E402
import lab  # noqa: E402
import model  # noqa: E402
import outputs  # noqa: E402


def run(*cmd, timeout=300, cwd=HERE):
    """python CMD... as a user runs it: a subprocess.CompletedProcess with text output."""
    return subprocess.run([sys.executable, *map(str, cmd)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def make_photo(path, size=(48, 32), seed=0):
    """A small color picture: smooth gradients in two hues plus noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.uniform(0.2, 0.8, 3)
    img = np.stack([base[0] + 0.3 * x, base[1] + 0.3 * y, base[2] - 0.3 * x * y], -1)
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """An untrained attention model of width 8 at a short side of 32: seconds, not minutes."""
    torch.manual_seed(0)
    net = model.Colorizer(model.ColorizerConfig(width=8, global_branch=False))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"config": dataclasses.asdict(net.config), "model": net.state_dict(), "step": 0,
                "args": {"size": 32}}, path)
    return path


# -----------------------------------------------------------------------------
# Writing stays inside --out

def test_a_link_planted_in_a_folder_under_out_is_never_written_through(tiny_ckpt, tmp_path):
    """out/docs -> ../victim and out/a/b -> ../../victim: the inputs that would
    go there are refused in one line naming the link, with or without
    --overwrite, and nothing outside --out is written or replaced."""
    src, out, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    for folder in (src / "docs", src / "a" / "b", out / "a", victim):
        folder.mkdir(parents=True)
    make_photo(src / "top.jpg")
    make_photo(src / "docs" / "notes.jpg", seed=1)
    make_photo(src / "a" / "b" / "deep.jpg", seed=2)
    os.symlink(os.path.join("..", "victim"), out / "docs")
    os.symlink(os.path.join("..", "..", "victim"), out / "a" / "b")
    r = run("colorize.py", src, "-o", out, "--checkpoint", tiny_ckpt)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(victim) == [] and (out / "top_color.png").is_file()
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, r.stderr
    assert any("notes.jpg" in e and f"{out / 'docs'} is a link" in e for e in errors), errors
    assert any("deep.jpg" in e and f"{out / 'a' / 'b'} is a link" in e for e in errors), errors
    # a file of the user's behind the link is not replaced by --overwrite either
    (victim / "notes_color.png").write_bytes(b"the user's own file")
    r = run("colorize.py", src, "-o", out, "--checkpoint", tiny_ckpt, "--overwrite")
    assert r.returncode == 1 and "is a link" in r.stderr, r.stderr
    assert sorted(os.listdir(victim)) == ["notes_color.png"]
    assert (victim / "notes_color.png").read_bytes() == b"the user's own file"


# -----------------------------------------------------------------------------
# Every run says what it did

def test_outputs_that_exist_still_give_metrics_and_a_run_that_writes_nothing_says_so(tiny_ckpt, tmp_path):
    """The README's second command after its first: the outputs exist, so they
    are kept; --metrics are still computed (they need no file), and the last
    line says loudly that nothing was written and how to write, exit status 3."""
    photo = make_photo(tmp_path / "p.jpg")
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--compare")
    assert r.returncode == 0 and "nothing written" not in r.stderr, r.stderr
    kept = {name: digest(tmp_path / name) for name in ("p_color.png", "p_compare.png")}
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--compare", "--metrics")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "skip: " in r.stdout and re.search(r"metrics: .*p\.jpg: colorized PSNR [\d.]+ dB", r.stdout), r.stdout
    assert "mean over 1 color images" in r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("nothing written: ") and "--overwrite" in last and "-o DIR" in last, r.stderr
    assert {name: digest(tmp_path / name) for name in kept} == kept
    # one input with something to write: no such line, exit status 0
    r = run("colorize.py", photo, make_photo(tmp_path / "q.jpg", seed=1), "--checkpoint", tiny_ckpt, "--compare")
    assert r.returncode == 0 and "nothing written" not in r.stderr and "q_color.png" in r.stdout, r.stderr
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--compare", "--overwrite")
    assert r.returncode == 0 and "p_compare.png" in r.stdout and "nothing written" not in r.stderr, r.stderr


def test_the_progress_clock_starts_at_the_first_photo(tiny_ckpt, tmp_path):
    """Time spent before the first photo (loading models: seconds) is not
    progress: the first line's rate and time left come from the photos alone."""
    photos = [str(make_photo(tmp_path / f"p{i}.jpg", seed=i)) for i in range(3)]
    code = ("import sys, time, colorize, outputs\n"
            "made = outputs.OutputPlan.__init__\n"
            "def slow(self, args):\n"
            "    made(self, args)\n"
            "    time.sleep(3)  # as a large model loading after the plan is made\n"
            "outputs.OutputPlan.__init__ = slow\n"
            f"sys.exit(colorize.main({photos!r} + ['--checkpoint', {str(tiny_ckpt)!r}]))")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    rate, minutes, seconds = re.search(r"\| ([\d.]+) img/s \| eta (\d+)m(\d+)s", first).groups()
    assert float(rate) > 1 and 60 * int(minutes) + int(seconds) < 3, first  # with the 3 s: 0.33 img/s, eta 0m06s


# -----------------------------------------------------------------------------
# One listing of image files: bench.py does not wait on a FIFO

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here (not POSIX)")
def test_bench_passes_over_a_fifo_among_its_photos_instead_of_waiting_on_it(tmp_path):
    """A FIFO named a.jpg beside a broken JPEG: bench.py lists photos as every
    script does (data.find_images), passes the FIFO over unopened, and stops in
    one line before any work, in seconds."""
    os.mkfifo(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not a JPEG")
    r = run("bench.py", "--quick", "--photos", tmp_path, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith("error: --photos ") and r.stderr.count("\n") == 1, r.stderr
    assert "a.jpg: not a regular file" in r.stderr, r.stderr


# -----------------------------------------------------------------------------
# The notebook API: anything that is not an image is one line

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


# -----------------------------------------------------------------------------
# One conversion each way, one definition of each metric

def test_to_tensor_and_to_uint8_are_each_others_inverse():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    t = data.to_tensor(Image.fromarray(rgb))
    assert t.shape == (3, 7, 9) and t.dtype == torch.uint8 and torch.equal(t.permute(1, 2, 0), torch.from_numpy(rgb))
    assert data.to_tensor(Image.fromarray(rgb[..., 0])).shape == (1, 7, 9)  # a gray image: one channel
    assert torch.equal(lab.to_uint8(t / 255), t)
    assert lab.to_uint8(torch.tensor([-0.5, 0.0, 0.6 / 255, 0.499, 1.0, 7.0])).tolist() == [0, 0, 1, 127, 255, 255]


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


# -----------------------------------------------------------------------------
# The attention colorize.py keeps, and the page that shows it

def test_the_attention_kept_is_the_networks_own_among_the_pictures_positions(tiny_ckpt):
    """predict_ab pads the copy by PAD pixels; the attention it returns is the
    network's, its rows and columns of the border cells dropped, renormalized."""
    loaded = colorize.load(tiny_ckpt, device="cpu")
    copy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    _, alpha = colorize.predict_ab(loaded, [copy], return_attention=True)
    gh, gw, cut = 32 // 8, 48 // 8, colorize.PAD // 8
    lightness = lab.l_to_net(lab.rgb_to_l(data.to_tensor(copy)[None]))
    padded = torch.nn.functional.pad(lightness, (colorize.PAD,) * 4, mode="replicate")
    with torch.no_grad():
        _, full = loaded.net(padded, None, return_attention=True)  # over the padded grid
    width = gw + 2 * cut
    inside = [(y + cut) * width + x + cut for y in range(gh) for x in range(gw)]
    expected = full[0][inside][:, inside]
    expected = expected / expected.sum(-1, keepdim=True)
    assert alpha.shape == (1, gh * gw, gh * gw) and torch.allclose(alpha[0], expected, atol=1e-6)


def page_data(text):
    """The dict an explorer page embeds, read from its script element id="data"."""
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))


def page_weights(page, n):
    """The weights a page draws, decoded as its script decodes them: multiples of uniform, over n."""
    codes = np.frombuffer(base64.b64decode(page["weights"]), np.uint8).reshape(-1, n).astype(np.float64)
    return torch.from_numpy(2.0 ** ((codes - page["uniform_code"]) / page["steps"]) / n)


def test_the_explorer_page_carries_the_weights_and_how_to_read_them():
    """Read back from the page alone (no helper of the module): every weight
    within half a quantization step, for a name that tries to close the script."""
    picture = Image.new("RGB", (64, 48), (90, 120, 60))
    alpha = torch.softmax(3 * torch.randn(48, 48, generator=torch.Generator().manual_seed(0)), dim=-1)
    page = page_data(attention_maps.attention_page(picture, alpha, "x</script>.png"))
    assert page["title"] == "x</script>.png" and page["grid"] == [6, 8] and page["stride"] == 1
    kept = (alpha * 48 > 1 / 250) & (alpha * 48 < 125)
    ratio = page_weights(page, 48)[kept] / alpha.double()[kept]
    assert kept.float().mean() > 0.5 and 2 ** (-1 / 32) - 1e-6 < ratio.min() <= ratio.max() < 2 ** (1 / 32) + 1e-6
