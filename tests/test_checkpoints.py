"""Checkpoints: a bad one is refused in one line that says why (colorize.py,
train.py --init), export makes a small inference copy, and colorize.py finds
the newest run's best.pt and says so."""

import dataclasses
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch

import colorize
import model
import runs
from conftest import TINY, colorize_cli, fake_run, make_photo, one_error_line, posix_only, run


def test_bad_checkpoints_get_a_short_safe_reason(tmp_path):
    """colorize.py --checkpoint: missing, another tool's, random bytes, cut
    short, a weight of the wrong shape, a global branch without its Inception:
    exit 2, one line that says why, and no advice to load it unsafely."""
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    torch.save({"config": {"variant": "attention"}, "model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    good = fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt"
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    ckpt = torch.load(good, weights_only=True)
    key = next(iter(ckpt["model"]))
    shape = tuple(ckpt["model"][key].shape)
    ckpt["model"][key] = torch.zeros(3, 5)
    torch.save(ckpt, tmp_path / "shape.pt")
    fake_run(tmp_path / "global", 4, files=("best.pt",), global_branch=True)
    for bad, said in [("nope.pt", "no such checkpoint"), ("other.pt", "not a compatible colorizer checkpoint"),
                      ("random.pt", "not a checkpoint file (UnpicklingError"),
                      ("cut.pt", "not a checkpoint file (RuntimeError"),
                      ("shape.pt", f"{key} has shape (3, 5), the model needs {shape}"),
                      ("global", "--inception PATH")]:
        r = colorize_cli(img, "--checkpoint", tmp_path / bad, "--inception", tmp_path / "nope.safetensors")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("error: ") and said in r.stderr, r.stderr
        assert "weights_only" not in r.stderr and "--inception none" not in r.stderr, r.stderr


def test_nan_and_malformed_checkpoints_are_one_line(tmp_path, photo_dir):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    good = fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt"
    ckpt = torch.load(good, weights_only=True)
    nan = {**ckpt, "model": {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in ckpt["model"].items()}}
    torch.save(nan, tmp_path / "nan.pt")
    r = colorize_cli(img, "--checkpoint", tmp_path / "nan.pt")
    assert r.returncode == 2 and "NaN or infinite" in r.stderr and not (tmp_path / "p_color.png").exists()
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "t", "--init", tmp_path / "nan.pt",
                       *TINY[:2]), "--init", "NaN or infinite")
    ckpt = torch.load(good, weights_only=True)
    for name, broken in [("width", {**ckpt, "config": {**ckpt["config"], "width": "8"}}),
                         ("zero", {**ckpt, "config": {**ckpt["config"], "width": 0}}),
                         ("huge", {**ckpt, "config": {**ckpt["config"], "width": 100000}}),
                         ("list", {**ckpt, "model": list(ckpt["model"].values())}),
                         ("args", {**ckpt, "args": [32]}), ("history", {**ckpt, "history": "0.01"})]:
        torch.save(broken, tmp_path / f"{name}.pt")
        r = colorize_cli(img, "--checkpoint", tmp_path / f"{name}.pt")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert "not a compatible colorizer checkpoint" in r.stderr, (name, r.stderr)
        if name in ("width", "zero", "huge", "list"):
            one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "t", "--init",
                               tmp_path / f"{name}.pt", *TINY[:2]), "--init", f"{name}.pt")


@pytest.mark.parametrize("name", ["size", "huge", "validation", "step", "sparse"])  # sparse: torch 2.14 warns of it
def test_odd_checkpoint_entries_are_one_line(tmp_path, name):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    good = torch.load(fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt", weights_only=True)
    broken = {"size": {**good, "args": {"size": "big"}}, "huge": {**good, "args": {"size": 10**9}},
              "validation": {**good, "validation": {"val_mse": "x"}},
              "step": {**good, "step": True},
              "sparse": {**good, "model": {k: v.to_sparse() if v.dim() else v for k, v in good["model"].items()}}}
    torch.save(broken[name], tmp_path / f"{name}.pt")
    r = colorize_cli(img, "--checkpoint", tmp_path / f"{name}.pt")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "compatible" in r.stderr, (name, r.stderr)


def test_validation_numbers_left_out_of_a_checkpoint_are_not_needed(tmp_path):
    """Left out or None (a hand-made file): the checkpoint is said without them."""
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    good = torch.load(fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt", weights_only=True)
    for name, odd in [("none", {**good, "validation": {"val_mse": None}}), ("other", {**good, "validation": {"psnr": 2.0}})]:
        torch.save(odd, tmp_path / f"{name}.pt")
        r = colorize_cli(img, "--checkpoint", tmp_path / f"{name}.pt", "--overwrite")
        assert r.returncode == 0 and f"{name}.pt (step 4)" in r.stderr, (name, r.stderr)


def test_fifo_checkpoints_are_refused_not_waited_on(tmp_path, photo_dir):
    os.mkfifo(tmp_path / "pipe.pt")
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli(img, "--checkpoint", tmp_path / "pipe.pt", timeout=60)
    assert r.returncode == 2 and "pipe.pt: not a regular file" in r.stderr, r.stderr
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--init", tmp_path / "pipe.pt",
                       *TINY, timeout=60), "--init", "not a regular file")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--inception",
                       tmp_path / "pipe.pt", timeout=60), "--inception", "regular file")


def test_export_makes_a_half_precision_inference_copy(tiny_ckpt, tmp_path):
    runs.export_checkpoint(tiny_ckpt, tmp_path / "small.pt")
    small = torch.load(tmp_path / "small.pt", weights_only=True)
    assert "optimizer" not in small and small["args"] == {"size": 32}
    assert small["validation"]["step"] == 2
    assert os.path.getsize(tmp_path / "small.pt") < os.path.getsize(tiny_ckpt) / 2
    img = make_photo(tmp_path / "x.jpg")
    r = run("colorize.py", img, "--checkpoint", tmp_path / "small.pt")
    assert r.returncode == 0 and (tmp_path / "x_color.png").exists(), r.stderr


def test_export_blends_a_fine_tune_with_its_start_and_sets_the_size(tmp_path):
    net = model.Colorizer(model.ColorizerConfig(variant="attention", global_branch=False, width=8))
    ckpts = []
    for i in range(2):
        torch.manual_seed(i)
        state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
        ckpts.append({"config": dataclasses.asdict(net.config), "step": 10 * i, "inception": None, "args": {"size": 64},
                      "history": [{"step": 0, "val_mse": 0.1}], "model": state})
        torch.save(ckpts[-1], tmp_path / f"{i}.pt")
    runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "blend.pt", start=tmp_path / "0.pt", share=0.25, size=96)
    blend = torch.load(tmp_path / "blend.pt", weights_only=True)
    key = "encoder.layers.0.0.weight"
    expected = 0.25 * ckpts[1]["model"][key] + 0.75 * ckpts[0]["model"][key]
    assert torch.allclose(blend["model"][key].float(), expected, atol=2e-3)
    assert blend["args"] == {"size": 96} and blend["validation"] is None and blend["step"] == 10
    other = model.Colorizer(model.ColorizerConfig(variant="attention", global_branch=False, width=16))
    torch.save({**ckpts[0], "model": other.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="not the architecture"):
        runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "x.pt", start=tmp_path / "wide.pt")
    torch.save({**ckpts[0], "config": {**ckpts[0]["config"], "padding": "zeros"}}, tmp_path / "zeros.pt")
    with pytest.raises(ValueError, match="not the architecture"):
        runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "x.pt", start=tmp_path / "zeros.pt")
    for share, size in [(float("nan"), None), (1.5, None), (0.5, 0), (0.5, 100), (0.5, "64")]:
        with pytest.raises(ValueError, match="must be from 0 to 1"):
            runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "x.pt", start=tmp_path / "0.pt", share=share, size=size)
    assert not (tmp_path / "x.pt").exists()


def test_checkpoint_choice_prefers_best_pt_of_the_newest_run(tmp_path):
    old, new = fake_run(tmp_path / "out" / "old", 9), fake_run(tmp_path / "out" / "new", 4)
    for f in old.iterdir():
        os.utime(f, (1, 1))
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 0 and f"checkpoint: {os.path.join('out', 'new', 'best.pt')} (step 4" in r.stderr, r.stderr
    assert colorize.load(old).path == str(old / "best.pt")
    os.remove(old / "best.pt")  # a run from before best.pt: its ckpt.pt, with the averaged ("ema") weights
    assert colorize.load(old).path == str(old / "ckpt.pt")
    runs.export_checkpoint(old / "ckpt.pt", tmp_path / "small.pt")
    runs.export_checkpoint(new / "best.pt", tmp_path / "small_best.pt")
    for small in ("small.pt", "small_best.pt"):
        assert colorize.load(tmp_path / small).size == 32


def test_the_checkpoint_found_by_search_says_where_and_how_to_choose(tmp_path):
    (tmp_path / "out" / "other").mkdir(parents=True)
    torch.save({"config": {"variant": "attention"}, "model": {"w": torch.zeros(1)}},
               tmp_path / "out" / "other" / "best.pt")  # some other tool's best.pt
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 2 and "newest run under runs/ or out/" in r.stderr and "--checkpoint" in r.stderr, r.stderr
    fake_run(tmp_path / "out" / "mine", 4)
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 0 and "newest run under runs/ or out/, --checkpoint PATH chooses another" in r.stderr, r.stderr
    # runs/, where the README and the course train, is searched too: the newest of both wins
    fake_run(tmp_path / "runs" / "first", 7)
    r = colorize_cli("p.jpg", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0 and f"checkpoint: {os.path.join('runs', 'first', 'best.pt')} (step 7" in r.stderr, r.stderr


@posix_only  # links
def test_the_newest_run_search_does_not_follow_links_round_in_circles(tmp_path):
    run_dir = fake_run(tmp_path / "out" / "run", 4)
    os.symlink("..", run_dir / "up")
    os.symlink("../..", run_dir / "up2")
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli("p.jpg", cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and os.path.join("out", "run", "best.pt") in r.stderr, r.stderr
    # a link to nothing where a checkpoint would be is no run (and no traceback)
    (tmp_path / "runs" / "gone").mkdir(parents=True)
    os.symlink(tmp_path / "nothing", tmp_path / "runs" / "gone" / "best.pt")
    r = colorize_cli("p.jpg", "--overwrite", cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and os.path.join("out", "run", "best.pt") in r.stderr, r.stderr


def small_checkpoint(path, **changes):
    net = model.Colorizer(model.ColorizerConfig(width=8, global_branch=False))
    torch.save({"config": dataclasses.asdict(net.config), "model": net.state_dict(), "step": 3, **changes}, path)
    return path


@posix_only  # resource
def test_a_small_file_declaring_a_huge_width_is_refused_without_building_it(tmp_path):
    """Names and shapes are compared against a network of no memory first: a
    1.7 KB file declaring width 1024 would otherwise build 6.7 GB of weights."""
    path = small_checkpoint(tmp_path / "small.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["width"] = 1024
    torch.save(ckpt, path)
    code = ("import resource, runs\n"
            f"try:\n    runs.open_colorizer({str(path)!r}, None)\nexcept runs.CheckpointError as e:\n    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = run("-c", code)
    message, peak_kb = r.stdout.strip().splitlines()
    assert "not a compatible colorizer checkpoint" in message and "shape" in message, r.stdout + r.stderr
    assert int(peak_kb) < 1.5 * 2**20, peak_kb  # KB: far below what the width asks for


def test_compressed_checkpoint_entries_are_refused_before_they_inflate(tmp_path):
    """torch.save never compresses; a deflated entry can inflate a thousandfold
    in memory before any check, so it is refused before loading."""
    path = small_checkpoint(tmp_path / "small.pt")
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(runs.CheckpointError, match="compressed"):
        runs.read_checkpoint(deflated)
    one_error_line(run("colorize.py", make_photo(tmp_path / "p.jpg"), "-o", tmp_path, "--checkpoint", deflated),
                   "compressed")


@pytest.mark.parametrize("record", [{"file": "x.safetensors", "sha256": 7}, {"file": 3, "sha256": "ab"}])
def test_an_inception_record_of_other_types_is_refused_in_one_line(tmp_path, record):
    path = small_checkpoint(tmp_path / "small.pt", inception=record)
    with pytest.raises(runs.CheckpointError, match="inception"):
        runs.read_checkpoint(path)


@pytest.mark.parametrize("edit", [{"history": [{"step": 1, "val_mse": 10**400}]}, {"validation": {"val_mse": 10**400}},
                                  {"model": "quantized"}])
def test_numbers_past_a_float_and_weights_of_other_kinds_are_one_line(tmp_path, edit):
    path = small_checkpoint(tmp_path / "small.pt")
    ckpt = torch.load(path, weights_only=True)
    if edit.get("model") == "quantized":
        key = next(k for k, v in ckpt["model"].items() if v.dim() == 4)
        with warnings.catch_warnings():  # torch 2.14 warns that quantized tensors are on their way out
            warnings.simplefilter("ignore")
            edit = {"model": {**ckpt["model"], key: torch.quantize_per_tensor(ckpt["model"][key], 0.1, 0, torch.qint8)}}
    torch.save({**ckpt, **edit}, path)
    one_error_line(run("colorize.py", make_photo(tmp_path / "p.jpg"), "-o", tmp_path, "--checkpoint", path),
                   "not a compatible colorizer checkpoint")
