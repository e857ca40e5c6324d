"""Nothing lost, round four: a start that fails after --overwrite, checkpoints
that would cost gigabytes before they are refused, odd fields in a checkpoint,
and paths that would break a one-line error."""
import os
import resource
import subprocess
import sys
import zipfile

import pytest
import torch
from PIL import Image

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import runs  # noqa: E402

TINY = ["--inception", "none", "--width", "8", "--size", "32", "--batch-size", "4", "--workers", "0", "--cache", "0",
        "--device", "cpu"]
PHOTOS = sorted(os.path.join(HERE, "demo", "photos", n) for n in os.listdir(os.path.join(HERE, "demo", "photos"))
                if n.endswith(".jpg"))


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=HERE, capture_output=True, text=True, timeout=600)


def one_error_line(r, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run: its folder holds ckpt.pt, best.pt, log.csv, loss.png and samples.png."""
    out = tmp_path_factory.mktemp("run") / "run"
    data = tmp_path_factory.mktemp("photos")
    for p in PHOTOS[:8]:
        os.symlink(p, data / os.path.basename(p))
    r = run("train.py", "--data", data, "--out", out, "--max-steps", 2, "--eval-every", 1, "--val-fraction", 0.3, *TINY)
    assert r.returncode == 0, r.stderr
    return out


def copy_run(trained, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in os.listdir(trained):
        if not name.startswith("."):
            (out / name).write_bytes((trained / name).read_bytes())
    return out


def test_overwrite_loses_nothing_when_the_new_start_fails(trained, tmp_path):
    """--overwrite replaces the old run only when the new one first saves: a
    start that fails later (unusable validation photos) leaves every old file,
    the one --init reads from among them."""
    out = copy_run(trained, tmp_path)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    data = tmp_path / "gray"
    (data / "train").mkdir(parents=True)
    (data / "val").mkdir()
    for p in PHOTOS[:4]:
        os.symlink(p, data / "train" / os.path.basename(p))
    Image.open(PHOTOS[10]).convert("L").save(data / "val" / "g.jpg")
    r = run("train.py", "--data", data, "--out", out, "--overwrite", "--init", out / "best.pt", "--max-steps", 2,
            "--eval-every", 1, *TINY)
    one_error_line(r, "validation")
    assert {n: (out / n).read_bytes() for n in os.listdir(out) if n in before} == before


def test_overwrite_replaces_the_old_run_at_the_first_save(trained, tmp_path):
    out = copy_run(trained, tmp_path)
    os.utime(out / "loss.png", (0, 0))
    r = run("train.py", "--data", os.path.join(HERE, "demo", "photos"), "--out", out, "--overwrite",
            "--max-steps", 1, "--eval-every", 1, "--val-images", 2, *TINY)
    assert r.returncode == 0 and "--overwrite: replaced the old run" in r.stdout, r.stderr
    assert os.path.getmtime(out / "loss.png") > 0  # the old curves are gone, these are the new run's


def small_checkpoint(tmp_path, **changes):
    net = runs.model.Colorizer(runs.model.ColorizerConfig(width=8, global_branch=False))
    ckpt = {"config": {**vars(net.config)}, "model": net.state_dict(), "step": 3, **changes}
    path = tmp_path / "small.pt"
    torch.save(ckpt, path)
    return path


def test_a_small_file_declaring_a_huge_width_is_refused_without_building_it(tmp_path):
    path = small_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["width"] = 1024  # 6.7 GB of weights, if it were built
    torch.save(ckpt, path)
    code = ("import resource, sys, runs\n"
            f"try:\n    runs.open_colorizer({str(path)!r}, None)\nexcept runs.CheckpointError as e:\n    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = run("-c", code)
    message, peak_kb = r.stdout.strip().splitlines()
    assert "not a compatible colorizer checkpoint" in message and "shape" in message, r.stdout + r.stderr
    assert int(peak_kb) < 1.5 * 2**20, peak_kb  # KB: far below the 6.7 GB the width asks for


def test_compressed_checkpoint_entries_are_refused_before_they_inflate(tmp_path):
    path = small_checkpoint(tmp_path)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(runs.CheckpointError, match="compressed"):
        runs.read_checkpoint(deflated)
    one_error_line(run("colorize.py", PHOTOS[0], "-o", tmp_path, "--checkpoint", deflated), "compressed")


@pytest.mark.parametrize("record", [{"file": "x.safetensors", "sha256": 7}, {"file": 3, "sha256": "ab"}])
def test_an_inception_record_of_other_types_is_refused_in_one_line(tmp_path, record):
    path = small_checkpoint(tmp_path, inception=record)
    with pytest.raises(runs.CheckpointError, match="inception"):
        runs.read_checkpoint(path)


@pytest.mark.parametrize("key", ["loss", "val_mse"])
def test_a_resumed_history_that_is_not_finite_is_refused_before_any_work(trained, tmp_path, key):
    out = copy_run(trained, tmp_path)
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    row = next(r for r in ckpt["history"] if key in r)
    row[key] = float("inf")
    torch.save(ckpt, out / "ckpt.pt")
    r = run("train.py", "--data", os.path.join(HERE, "demo", "photos"), "--out", out, "--resume", "--max-steps", 4,
            *TINY)
    one_error_line(r, "history")


def test_a_newline_in_out_keeps_every_error_on_one_line(tmp_path):
    out = tmp_path / "a\nb"
    out.write_text("a file, not a folder")
    one_error_line(run("train.py", "--data", os.path.join(HERE, "demo", "photos"), "--out", out, *TINY), "a\\nb")
    os.remove(out)
    out.mkdir()
    (out / "ckpt.pt").write_text("x")
    one_error_line(run("train.py", "--data", os.path.join(HERE, "demo", "photos"), "--out", out, *TINY), "a\\nb")


@pytest.mark.parametrize("flag", ["--workers", "--batch-size"])
def test_a_typo_of_a_billion_is_one_line(flag, tmp_path):
    one_error_line(run("train.py", "--data", os.path.join(HERE, "demo", "photos"), "--out", tmp_path / "r",
                       *TINY, flag, 10**9), flag)
