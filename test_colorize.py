"""The paper's tests, the ones to run before class:

    python -m pytest test_colorize.py      # about a minute on two cores
    python -m pytest -q -k lab             # the Lab conversion alone, a few seconds

Each test compares against a reference: Lab against scikit-image's published
values, the attention against a plain loop over its formula, the Inception
against timm's key set and parameter count and every weight file against the
logits of the model that wrote it, and the two commands run as a user runs them.
This file needs nothing but itself (and runs on any laptop, Windows too).

This file, by promise:

 1. Lab conversion is exact (lab.py)
        test_rgb_to_lab_matches_published_values
        test_lab_to_rgb_matches_published_out_of_gamut_values
 2. The colorizer is the paper's network (model.py)
        test_colorizer_output_has_the_input_size
        test_variants_differ_as_the_paper_says
        test_attention_on_both_paths_is_the_papers_formula
 3. The Inception gives the logits of its weights (inception.py)
        test_inception_matches_timm_keys_shapes_and_parameter_count
        test_inception_input_is_normalized_with_mean_and_std_one_half
        test_every_weight_format_loads_and_gives_identical_logits
 4. It learns: one photo overfitted (docs/overfit_one_photo.py)
        test_overfit_one_photo_learns_its_photo
 5. The two commands, end to end
        test_train_cli_writes_checkpoint_samples_curves_and_resumes
        test_colorize_py_keeps_the_inputs_lightness_in_every_mode_and_size
        test_the_python_api_keeps_the_inputs_lightness

The rest of the suite, a file per promise, is under tests/: `python -m pytest`
runs both, `python -m pytest -m "not slow"` all but the few slowest
(tests/conftest.py holds what those files share, and says why run() forks).

    test_lab.py            Lab beyond the references: batches, large images, uint8, gradients
    test_model.py          the colorizer's switches, a config judged, padding, a checkerboard learned
    test_inception_weights.py   every way a weights file is wrong; the download and the caches
    test_data.py           photos read as a viewer shows them; the split, the cache, --balance
    test_training.py       the loss goes down; best.pt, the average, divergence, --init, torchrun
    test_progress.py       the ETA follows the recent rate
    test_train_cli.py      train.py's flags and files checked before any work
    test_resume.py         --resume goes on as if the run had not stopped, or says why not
    test_run_folder.py     a run folder is never replaced unasked; the lock
    test_atomic_save.py    every file written whole or not at all
    test_checkpoints.py    bad checkpoints in one line; export; the newest run found
    test_signals.py        Ctrl-C, SIGTERM and SIGHUP stop cleanly
    test_colorize_cli.py   colorize.py's outputs: one set per input, nothing written over, never through a link
    test_colorize_inputs.py     colorize.py's bad flags and files, one line each
    test_colorize_api.py   colorize.colorize() from a notebook
    test_attention_maps.py      the statistics, the figure, the explorer page in a browser
    test_metrics.py        PSNR, colorfulness, all-gray, and how far a mean can be trusted
    test_demo.py           the bundled demo model
    test_course.py         docs/course.md's commands and the course scripts
    test_exercises.py      the exercise checker
    test_bench.py          bench.py and the GPU check
    test_docs.py           every link and anchor resolves; the module imports; the checker names mistakes
    test_readme.py         the README's commands, in order, write what they say
"""

import hashlib
import json
import math
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import colorize
import data
import inception
import lab
import model

# Two threads at most, and one where OMP_NUM_THREADS=1 asks for it: on cores shared with
# other work, a second thread that waits for the first makes small models many times slower.
torch.set_num_threads(min(2, torch.get_num_threads()))

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(HERE, "demo", "colorizer.pt")
# train.py at a tiny size: no Inception, 8 channels, 32 px crops, batches of 4, no loader workers
TINY = ["--inception", "none", "--width", "8", "--size", "32", "--batch-size", "4", "--workers", "0"]


# -----------------------------------------------------------------------------
# Helpers (tests/conftest.py imports the ones the other tests share)

def run(*cmd, cwd=HERE, timeout=300):
    """python CMD... in cwd, as a user runs it: a subprocess.CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, cmd)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def make_photo(path, size=(96, 64), seed=0, **save_args):
    """A small color picture: smooth gradients in two hues plus noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.uniform(0.2, 0.8, 3)
    img = np.stack([base[0] + 0.3 * x, base[1] + 0.3 * y, base[2] - 0.3 * x * y], -1)
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path, **save_args)
    return path


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i in range(6):
        make_photo(d / f"p{i}.jpg", size=(80 + 8 * i, 64), seed=i)
    return d


def odd_images(d):
    """Every Pillow mode colorize.py promises, at an odd size (333 x 517)."""
    src = Image.open(make_photo(d / "src.png", size=(333, 517)))
    gray16 = Image.fromarray(np.asarray(src.convert("L"), dtype=np.uint16) * 257)
    p_alpha = src.convert("P")
    p_alpha.info["transparency"] = 0
    made = {"gray.png": src.convert("L"), "gray_alpha.png": src.convert("LA"), "rgb.jpg": src,
            "rgba.png": src.convert("RGBA"), "palette.png": src.convert("P"),
            "palette_alpha.png": p_alpha, "cmyk.jpg": src.convert("CMYK"),
            "gray16.png": gray16, "gray16.tif": gray16}
    for name, im in made.items():
        im.save(d / name)
    os.remove(d / "src.png")
    return sorted(made)


def lightness(image):
    """L* (H, W), 0 to 100, of a PIL image's RGB channels."""
    return lab.rgb_to_lab(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))[0]


def assert_keeps_lightness(source, out, what):
    """out, colorized from source (the RGB picture as data.py reads the input),
    is at source's size and has source's L pixel for pixel, to within the
    rounding to 8 bits (0.25 L* at most), wherever lab_to_rgb clipped no channel
    at the gamut's edge; and it has color, so a*b* did change."""
    assert out.size == source.size, (what, out.size, source.size)
    rgb = np.array(out.convert("RGB"))
    inside = torch.from_numpy(((rgb > 0) & (rgb < 255)).all(-1))  # no channel clipped here
    assert inside.float().mean() > 0.95, (what, inside.float().mean())
    difference = (lightness(out) - lightness(source)).abs()[inside]
    assert difference.max() < 0.3, (what, difference.max())
    chroma = lab.rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1))[1:].norm(dim=0).mean()
    assert chroma > 3, (what, chroma)


# scikit-image 0.26 rgb2lab, its published values
RGB2LAB = [
    ((1, 0, 0), (53.240588, 80.092308, 67.202751)),
    ((0, 1, 0), (87.735099, -86.183030, 83.179703)),
    ((0, 0, 1), (32.295673, 79.185591, -107.857300)),
    ((1, 1, 1), (100.0, -0.002455, 0.004653)),
    ((0.5, 0.5, 0.5), (53.388965, -0.001468, 0.002784)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
]


# scikit-image lab2rgb, out of gamut, to 3 decimals
LAB2RGB = [
    ((50, -12, 85), (0.501, 0.481, 0.0)),
    ((50, 12, -85), (0.0, 0.482, 1.0)),
    ((90, -4, -47), (0.578, 0.914, 1.0)),
]


def pixel(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype).view(3, 1, 1)


def attention_by_the_formula(att, h):
    """model.Attention's formula (paper 3.5) computed independently: a loop over
    query positions t, in float64, from the module's own weights W_a and W_c.
    h (B, C, H, W) -> out (B, C, H, W), alpha (B, N, N), positions s = y * W + x."""
    B, C, H, W = h.shape
    W_a = att.W_a.weight[:, :, 0, 0].detach().double()  # (C, C)
    W_c = att.W_c.weight[:, :, 0, 0].detach().double()  # (C, 2C)
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    alpha = torch.zeros(B, H * W, H * W, dtype=torch.float64)
    for b in range(B):
        positions = [h[b, :, y, x].double() for y in range(H) for x in range(W)]
        for t, h_t in enumerate(positions):
            q_t = W_a @ h_t
            scores = torch.stack([q_t @ h_s for h_s in positions]) / math.sqrt(C)
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            c_t = sum(w * h_s for w, h_s in zip(weights, positions))
            out[b, :, t // W, t % W] = torch.tanh(W_c @ torch.cat([c_t, h_t]))
            alpha[b, t] = weights
    return out, alpha


def random_inception():
    """A randomly initialized Inception with non-trivial BatchNorm statistics,
    so a wrongly loaded buffer changes the logits."""
    torch.manual_seed(0)
    net = inception.InceptionResNetV2()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def inception_net():
    return random_inception()


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(1)
    return torch.rand(2, 3, 99, 99) * 2 - 1  # small input: the net only needs >= 75 px


def write_safetensors(tensors, path, metadata=None):
    """Writes the safetensors layout by hand (the reference format, so the
    reader is tested against bytes it did not write itself)."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.uint8: "U8"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


@pytest.fixture(scope="module")
def weight_files(inception_net, tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    state = inception_net.state_dict()
    files = {}
    files["safetensors"] = d / "model.safetensors"
    write_safetensors(state, files["safetensors"], metadata={"format": "pt"})
    files["timm's state dict"] = d / "pytorch_model.bin"
    torch.save(state, files["timm's state dict"])
    return files


# -----------------------------------------------------------------------------
# 1. Lab conversion is exact (lab.py): sRGB to CIELAB and back against scikit-image's values

@pytest.mark.parametrize("rgb,expected", RGB2LAB)
def test_rgb_to_lab_matches_published_values(rgb, expected):
    got = lab.rgb_to_lab(pixel(rgb)).flatten()
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-3), got


@pytest.mark.parametrize("lab_value,expected", LAB2RGB)
def test_lab_to_rgb_matches_published_out_of_gamut_values(lab_value, expected):
    got = lab.lab_to_rgb(pixel(lab_value)).flatten()
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1.5e-3), got


# -----------------------------------------------------------------------------
# 2. The colorizer is the paper's network (model.py): its shapes, its variants, the attention against its formula

@pytest.mark.parametrize("variant,global_branch", [("attention", True), ("attention", False),
                                                   ("baseline", True), ("baseline", False)])
@pytest.mark.parametrize("size", [(64, 64), (48, 104)])
def test_colorizer_output_has_the_input_size(variant, global_branch, size):
    net = model.Colorizer(model.ColorizerConfig(variant=variant, global_branch=global_branch, width=16))
    lightness = torch.rand(2, 1, *size) * 2 - 1
    ab = net(lightness, torch.randn(2, 1000) if global_branch else None)
    assert ab.shape == (2, 2, *size)


def parameters(**config):
    return sum(p.numel() for p in model.Colorizer(model.ColorizerConfig(**config)).parameters())


def test_variants_differ_as_the_paper_says():
    """The paper's model: attention, and CoordConv's x and y beside L; the
    baseline (Deep Koalarization): neither. Both fuse the Inception's 1000
    logits into every position of the encoder's 256 channels."""
    flat = torch.full((1, 1, 48, 64), 0.3)  # a flat gray photo: the same everywhere
    for variant, attends_and_knows_where in [("attention", True), ("baseline", False)]:
        torch.manual_seed(0)
        config = model.ColorizerConfig(variant=variant, coords=attends_and_knows_where, global_branch=False, width=8)
        net = model.Colorizer(config)
        with torch.no_grad():  # training mode: BatchNorm scales whatever varies to a spread of one
            ab, alpha = net.train()(flat, return_attention=True)
        assert (alpha is not None) == attends_and_knows_where, variant  # where each position looks: (1, N, N)
        # replicate padding sees no edge: only the coordinates can color a flat photo unevenly
        spread = ab.std(dim=(2, 3)).max().item()
        assert (spread > 0.05) if attends_and_knows_where else (spread < 1e-6), (variant, spread)
    # the fusion: a 1x1 convolution that takes the 1000 logits beside the 4 x 64 = 256 encoder channels
    assert parameters(global_branch=True) - parameters(global_branch=False) == 1000 * 256
    net = model.Colorizer(model.ColorizerConfig(width=8)).eval()
    lightness = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(net(lightness, torch.randn(1, 1000)), net(lightness, torch.randn(1, 1000)))


def test_attention_on_both_paths_is_the_papers_formula():
    """The fused path (scaled_dot_product_attention, no N x N matrix) and the
    readable one (return_attention=True, and its alpha) against a plain loop over
    query positions: q_t = W_a h_t, alpha_ts = softmax_s(q_t . h_s / sqrt(C)),
    c_t = sum_s alpha_ts h_s, out_t = tanh(W_c [c_t; h_t]). A map that is not
    square (4 x 6), a batch of 2."""
    torch.manual_seed(0)
    att = model.Attention(16)
    h = 2 * torch.randn(2, 16, 4, 6)
    expected_out, expected_alpha = attention_by_the_formula(att, h)
    assert expected_alpha.max() > 0.3 and expected_alpha.min() < 1e-3  # far from uniform: the order of s matters
    with torch.no_grad():
        fused, no_alpha = att(h)
        readable, alpha = att(h, return_attention=True)
    assert no_alpha is None and fused.shape == readable.shape == (2, 16, 4, 6) and alpha.shape == (2, 24, 24)
    for path, got, expected in [("fused", fused, expected_out), ("readable", readable, expected_out),
                                ("alpha", alpha, expected_alpha)]:
        error = (got.double() - expected).abs().max().item()
        assert error < 1e-5, (path, error)


# -----------------------------------------------------------------------------
# 3. The Inception gives the logits of its weights (inception.py): timm's keys, its input, every file format

def test_inception_matches_timm_keys_shapes_and_parameter_count(inception_net):
    state = inception_net.state_dict()
    assert len(state) == 1306
    assert sum(k.endswith("num_batches_tracked") for k in state) == 204
    assert sum(p.numel() for p in inception_net.parameters()) == 55_843_464
    expected_shapes = {
        "conv2d_1a.conv.weight": (32, 3, 3, 3),
        "mixed_5b.branch0.conv.weight": (96, 192, 1, 1),
        "repeat.0.branch0.conv.weight": (32, 320, 1, 1),
        "mixed_6a.branch0.conv.weight": (384, 320, 3, 3),
        "mixed_7a.branch0.1.conv.weight": (384, 256, 3, 3),
        "repeat_1.0.branch0.conv.weight": (192, 1088, 1, 1),
        "block8.branch0.conv.weight": (192, 2080, 1, 1),
        "mixed_5b.branch1.1.conv.weight": (64, 48, 5, 5),
        "mixed_5b.branch3.1.conv.weight": (64, 192, 1, 1),
        "repeat.9.conv2d.weight": (320, 128, 1, 1),
        "repeat.9.conv2d.bias": (320,),
        "mixed_6a.branch1.2.conv.weight": (384, 256, 3, 3),
        "repeat_1.19.branch1.1.conv.weight": (160, 128, 1, 7),
        "repeat_1.19.branch1.2.conv.weight": (192, 160, 7, 1),
        "mixed_7a.branch2.2.conv.weight": (320, 288, 3, 3),
        "repeat_2.8.branch1.1.conv.weight": (224, 192, 1, 3),
        "block8.conv2d.weight": (2080, 448, 1, 1),
        "conv2d_7b.conv.weight": (1536, 2080, 1, 1),
        "classif.weight": (1000, 1536),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "repeat_2.9.conv2d.weight" not in state and "block8.relu" not in str(list(state))


def test_inception_input_is_normalized_with_mean_and_std_one_half(inception_net):
    """Gray 0.5 is the middle of [-1, 1]: the logits of an all-zeros input."""
    gray = torch.full((1, 3, 64, 80), 0.5)
    with torch.no_grad():
        expected = inception_net(torch.zeros(1, 3, 299, 299))
    got = inception.inception_embedding(inception_net, gray)
    assert torch.allclose(got, expected), f"max difference {(got - expected).abs().max():.1e}"


@pytest.mark.parametrize("kind", ["safetensors", "timm's state dict"])
def test_every_weight_format_loads_and_gives_identical_logits(kind, weight_files, inception_net, probe):
    loaded = inception.load_inception(weight_files[kind])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(probe), inception_net(probe))


# -----------------------------------------------------------------------------
# 4. It learns: docs/overfit_one_photo.py, the whole method on one photo

def test_overfit_one_photo_learns_its_photo(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    r = run("docs/overfit_one_photo.py", photo, "--steps", 40, "--size", 32, "--width", 8, "--out", tmp_path / "o.png")
    assert r.returncode == 0, r.stderr
    ratios = [float(x) for x in re.findall(r"\(([\d.]+)x all-gray\)", r.stdout)]
    assert ratios[0] > 1 and ratios[-1] < 0.5, ratios  # from worse than all-gray to far better
    assert Image.open(tmp_path / "o.png").size == (3 * 32, 32)  # gray | prediction | original


# -----------------------------------------------------------------------------
# 5. The two commands, end to end: train.py writes a run and goes on with it; colorize.py keeps the input's L

def test_train_cli_writes_checkpoint_samples_curves_and_resumes(photo_dir, tmp_path):
    out = tmp_path / "run"
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 6, "--eval-every", 3,
            "--log-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    assert "step 6/6 | loss" in r.stdout and "img/s | eta" in r.stdout
    assert "data: 5 of the 5 training photos decoded into memory once" in r.stdout, r.stdout
    for name in ("ckpt.pt", "best.pt", "samples.png", "loss.png", "log.csv"):
        assert (out / name).exists(), name
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["config"]["width"] == 8 and ckpt["inception"] is None
    assert Image.open(out / "samples.png").size == (3 * 32, 32)  # gray | prediction | truth
    rows = (out / "log.csv").read_text().splitlines()
    # a header, 3 logged steps, and validation before the first step and at steps 3 and 6
    assert rows[0] == "step,loss,lr,img_per_s,val_mse,val_psnr,val_mse_raw,val_mse_gray" and len(rows) == 1 + 3 + 3
    assert rows[1].startswith("0,,,,0.") and rows[2].startswith("2,0.")  # the untrained model comes first

    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 10, "--eval-every", 3,
            "--log-every", 2, "--resume", *TINY)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "at step 6" in r.stdout
    assert "step 8/10 | loss" in r.stdout and "step 2/" not in r.stdout
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 10
    steps = [row["step"] for row in ckpt["history"] if "loss" in row]
    assert steps == [2, 4, 6, 8, 10]  # the same curve, continued
    assert [row["step"] for row in ckpt["history"] if "val_mse" in row] == [0, 3, 6, 9, 10]  # step 6 not twice


def test_colorize_py_keeps_the_inputs_lightness_in_every_mode_and_size(tmp_path):
    """The central promise: colorization changes only a*b*. colorize.py on every
    mode it takes (333 x 517), a small photo (40 x 32) and a 1000 x 120 panorama
    (wider than the network's 4:1): each output's L is its input's, pixel for
    pixel, at full resolution, though the network saw a copy 64 px high (32 for
    the panorama). Transparency is kept, and the inputs are left as they were."""
    names = odd_images(tmp_path) + ["small.png", "wide.jpg"]
    make_photo(tmp_path / "small.png", size=(40, 32), seed=1)
    make_photo(tmp_path / "wide.jpg", size=(1000, 120), seed=2)
    before = {n: digest(tmp_path / n) for n in names}
    r = run("colorize.py", *[tmp_path / n for n in names], "--checkpoint", DEMO, "--size", 64)
    assert r.returncode == 0, r.stderr
    for n in names:
        stem, ext = os.path.splitext(n)  # gray16.png and gray16.tif: one output each, named by extension
        out = tmp_path / (stem + ("_" + ext[1:] if stem == "gray16" else "") + "_color.png")
        assert str(out) in r.stdout, (n, r.stdout)
        image = Image.open(out)
        assert image.mode == ("RGBA" if "alpha" in n or n == "rgba.png" else "RGB"), n
        assert_keeps_lightness(data.load_image(tmp_path / n)[0], image, n)
        assert digest(tmp_path / n) == before[n], n


def test_the_python_api_keeps_the_inputs_lightness(tmp_path):
    """colorize.colorize() from a notebook keeps the L of whatever it is given:
    a path, PIL images of several modes, arrays of 8-bit color and float gray."""
    colorizer = colorize.load(DEMO, device="cpu")._replace(size=64)  # the network's copy: 64 px high
    path = make_photo(tmp_path / "p.png", size=(250, 170))
    photo = Image.open(path)
    for what, image in [("path", path), ("RGB", photo.convert("RGB")), ("L", photo.convert("L")),
                        ("RGBA", photo.convert("RGBA")), ("uint8 array", np.asarray(photo)),
                        ("float gray array", np.asarray(photo.convert("L"), dtype=np.float32) / 255)]:
        source, _ = data.image_input(image)
        assert_keeps_lightness(source, colorize.colorize(image, colorizer), what)
