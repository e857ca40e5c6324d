"""A run folder is never replaced unasked (train.py --out): a finished run,
any file train.py writes, --overwrite, the lock, two runs on one folder."""

import argparse
import os
import subprocess
import sys

import pytest
import torch

import runs
from conftest import HERE, TINY, fake_run, make_photo, one_error_line, posix_only, run


def test_train_never_replaces_a_run_unasked(photo_dir, tmp_path):
    args = ["train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 2, "--eval-every", 2, *TINY]
    assert run(*args).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    one_error_line(run(*args), "--resume", "--overwrite", tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    r = run(*args, "--overwrite", "--seed", 1)
    assert r.returncode == 0, r.stderr
    # a folder where train.py writes a file is refused, --overwrite or not
    (tmp_path / "log.csv").unlink()
    (tmp_path / "log.csv").mkdir()
    for more in ([], ["--overwrite"], ["--resume", "--max-steps", 4]):
        one_error_line(run(*args, *more), "log.csv is a folder")
    # nor is a run written into the photos it trains on
    one_error_line(run("train.py", "--data", photo_dir, "--out", photo_dir, *TINY), "--out", "folder of its own")


def test_a_run_written_while_another_started_is_seen_under_the_lock(tmp_path):
    """What start_training saw is looked at again once the lock is held: a
    run another train.py wrote meanwhile is not replaced, and a --resume whose
    ckpt.pt another train.py went on with does not continue a stale copy."""
    fake_run(tmp_path / "new", 4, files=("ckpt.pt",))  # written after the first look, before the lock
    new = argparse.Namespace(out=str(tmp_path / "new"), resume=False, overwrite=False)
    with pytest.raises(SystemExit) as stop:
        runs.prepare_folder(new)
    assert stop.value.code == 2 and (tmp_path / "new" / "ckpt.pt").exists()
    fake_run(tmp_path / "old", 9, files=("ckpt.pt",))  # read at step 4; step 9 now
    old = argparse.Namespace(out=str(tmp_path / "old"), resume=True, overwrite=False)
    with pytest.raises(SystemExit) as stop:
        runs.prepare_folder(old, {"step": 4})
    assert stop.value.code == 2
    fake_run(tmp_path / "same", 9, files=("ckpt.pt",))
    same = argparse.Namespace(out=str(tmp_path / "same"), resume=True, overwrite=False)
    runs.prepare_folder(same, {"step": 9})[0].close()  # unchanged: it goes on


@pytest.mark.parametrize("present", ["log.csv", "samples.png", "best.pt"])
def test_any_file_train_writes_makes_a_folder_a_run(photo_dir, tmp_path, present):
    (tmp_path / present).write_bytes(b"the user's own")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path, *TINY), "--overwrite", present)
    assert (tmp_path / present).read_bytes() == b"the user's own"


def test_overwrite_replaces_the_old_run_only_when_the_new_one_first_saves(photo_dir, tmp_path):
    """--overwrite: a start that fails after the checks of the flags (a
    validation split with no usable photo) leaves every file of the old run,
    the one --init reads from among them; a start that gets to its first save
    replaces them all, so no stale loss.png or best.pt of the old run stays."""
    fake_run(tmp_path, 999)
    for name in ("loss.png", "samples.png", "log.csv"):
        (tmp_path / name).write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    d = tmp_path / "data"  # a validation split that stops the new run before its first save
    (d / "train").mkdir(parents=True)
    (d / "val").mkdir()
    make_photo(d / "train" / "a.jpg")
    (d / "val" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    r = run("train.py", "--data", d, "--out", tmp_path, "--overwrite", "--init", tmp_path / "best.pt", *TINY)
    one_error_line(r, "validation")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--overwrite", "--max-steps", 1, "--eval-every", 5,
            *TINY)
    assert r.returncode == 0 and "--overwrite: replaced the old run's" in r.stdout, r.stderr
    assert not any(p.read_bytes() == b"old" for p in tmp_path.iterdir() if p.is_file())
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 1


@posix_only  # flock, kill -9
def test_a_second_train_on_the_same_out_is_refused_and_a_killed_one_leaves_no_stuck_lock(photo_dir, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # as a running train.py holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (out / "ckpt.pt.tmp4242").write_bytes(b"the other run's save in flight")
        one_error_line(run("train.py", "--data", photo_dir, "--out", out, "--overwrite", *TINY),
                       "another train.py", "--out")
        assert (out / "ckpt.pt.tmp4242").exists()  # its save in flight was not touched
    cmd = [sys.executable, "train.py", "--data", str(photo_dir), "--out", str(out), "--overwrite", "--max-steps",
           "100000", "--eval-every", "100000", *TINY]
    p = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if "| loss" in line:
            break
    p.kill()  # kill -9: no clean-up at all
    p.wait()
    r = run("train.py", "--data", photo_dir, "--out", out, "--overwrite", "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr


def test_an_unwritable_cache_is_one_line_and_leaves_no_empty_run_folder(photo_dir, tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "not-a-folder"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": ""}
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--inception", "auto", *TINY[2:],
            timeout=120, env=env)
    one_error_line(r, "not-a-folder", "XDG_CACHE_HOME")
    assert not (tmp_path / "run").exists()  # made for the run, removed again: nothing was written


@posix_only  # links
def test_the_lock_is_never_written_through_a_link_nor_over_a_users_file(photo_dir, tmp_path):
    """--out/.lock: a link to a file elsewhere is refused (the file unchanged),
    and so is a .lock of the user's own in a folder with no run yet."""
    target = tmp_path / "precious.txt"
    target.write_text("mine\n")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(target, out / ".lock")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, *TINY)
    assert r.returncode == 2 and ".lock is a link" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert target.read_text() == "mine\n" and os.path.islink(out / ".lock")
    os.remove(out / ".lock")
    (out / ".lock").write_text("my notes about locks\n")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, *TINY)
    assert r.returncode == 2 and "not train.py's lock" in r.stderr, r.stderr
    assert (out / ".lock").read_text() == "my notes about locks\n"
