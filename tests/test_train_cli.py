"""train.py checks what it is given before any work, in one line: every flag,
the files and folders, names that are not UTF-8, and a loader worker that
fails ends the run at once."""

import os
import time

import pytest
from PIL import Image

from conftest import TINY, make_photo, one_error_line, posix_only, run


@pytest.mark.parametrize("flag,value", [
    ("--batch-size", 0), ("--eval-every", 0), ("--log-every", 0), ("--lr", "nan"), ("--lr", "-1"),
    ("--workers", -1), ("--cache", -1), ("--width", 0), ("--width", 1), ("--val-images", 0), ("--size", 0), ("--size", -8),
    ("--size", 100000), ("--size", 30), ("--max-steps", 0), ("--ema", 1), ("--val-fraction", 0),
    ("--seed", -1), ("--seed", 2**63 - 1), ("--lr", "abc"), ("--workers", 10**9), ("--batch-size", 10**9),
    ("--warmup", 10**400), ("--max-steps", 10**400), ("--lr", "1e300")])
def test_train_checks_every_flag_before_any_work(photo_dir, tmp_path, flag, value):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "run", *TINY, flag, value)
    one_error_line(r, flag)
    assert not (tmp_path / "run").exists()


@posix_only  # a newline in a file name
def test_a_newline_in_out_keeps_every_error_on_one_line(photo_dir, tmp_path):
    """Every path in every message goes through one printable form."""
    out = tmp_path / "a\nb"
    out.write_text("a file, not a folder")
    one_error_line(run("train.py", "--data", photo_dir, "--out", out, *TINY), "a\\nb", "a file")
    os.remove(out)
    out.mkdir()
    (out / "ckpt.pt").write_text("x")
    one_error_line(run("train.py", "--data", photo_dir, "--out", out, *TINY), "a\\nb", "holds a run")
    one_error_line(run("train.py", "--data", photo_dir, "--out", out, "--resume", *TINY), "a\\nb")


def test_compile_on_the_cpu_is_refused_in_one_line(photo_dir, tmp_path):
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--device", "cpu", "--compile",
                       *TINY), "--compile", "CUDA")
    assert not (tmp_path / "run").exists()


@posix_only  # /dev/null, links
def test_train_checks_files_and_folders_before_any_work(photo_dir, tmp_path):
    for folder in (tmp_path / "missing", tmp_path):  # --data: no such folder, and a folder with no photo
        one_error_line(run("train.py", "--data", folder, "--inception", "none"), folder)
    one_error_line(run("train.py", "--data", photo_dir, "--inception", tmp_path), "--inception")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08" + bytes(71))  # a weights file in name only
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "junk", "--inception", tmp_path / "junk.safetensors",
            *TINY[2:])
    one_error_line(r, "--inception", "junk.safetensors")
    assert not (tmp_path / "junk").exists() and "data:" not in r.stdout  # before the photos are read
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        one_error_line(run("train.py", "--data", photo_dir, "--out", out, *TINY), "--out", out)
    one_error_line(run("train.py", "--data", photo_dir, "--out", "/dev/null", *TINY), "--out /dev/null: not a folder")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "dangling", *TINY), "a link to nothing")
    # a validation split with nothing usable in it (old scans, broken files) stops before step 1
    d = tmp_path / "data"
    (d / "train").mkdir(parents=True)
    (d / "val").mkdir()
    make_photo(d / "train" / "a.jpg")
    Image.open(d / "train" / "a.jpg").convert("L").save(d / "val" / "scan.png")
    (d / "val" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    r = run("train.py", "--data", d, "--out", tmp_path / "run", *TINY)
    assert "scan.png: grayscale" in r.stdout and "broken.jpg: unreadable" in r.stdout
    one_error_line(r, "--data", "validation")
    assert not (tmp_path / "run" / "ckpt.pt").exists()


@posix_only  # a name of bytes that are not UTF-8
def test_train_names_files_whose_names_are_not_utf8(photo_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for p in photo_dir.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    bad = os.path.join(os.fsencode(d), b"caf\xe9.jpg")  # Latin-1 bytes, as old cameras wrote them
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    r = run("train.py", "--data", d, "--out", tmp_path / "run", "--max-steps", 4, "--eval-every", 4,
            "--val-fraction", 0.5, *TINY)
    assert r.returncode == 0, r.stderr
    assert "caf\\xe9.jpg: unreadable" in r.stdout, r.stdout


def test_a_worker_that_fails_ends_the_run_in_seconds(tmp_path):
    """Every training photo grayscale, one loader worker: the error line and
    exit status 2 at once (it used to wait for ever for a worker that
    ignores SIGTERM, holding --out/.lock)."""
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    for i in range(6):
        Image.open(make_photo(tmp_path / "d" / "train" / f"g{i}.jpg", size=(40, 40), seed=i)).convert("L").convert(
            "RGB").save(tmp_path / "d" / "train" / f"g{i}.jpg")
    make_photo(tmp_path / "d" / "val" / "c.jpg", size=(40, 40))
    start = time.monotonic()
    r = run("train.py", "--data", tmp_path / "d", "--out", tmp_path / "run", "--max-steps", 5, *TINY[:-1], "1",
            timeout=120)
    assert r.returncode == 2 and "no usable color image among 6 files" in r.stderr, r.stderr
    assert time.monotonic() - start < 60
