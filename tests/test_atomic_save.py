"""Every file is written atomically (runs.save_atomic): a temporary file
beside it, renamed over it, so a crash, a full disk or a Ctrl-C leaves the old
file or the new one whole. A killed save's leftovers are removed at the next
start, and nothing else; a link planted at a temporary name is never written
through; the temporary name fits wherever the file's own name does."""

import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

import runs
from conftest import DEMO, HERE, TINY, colorize_cli, make_photo, one_error_line, posix_only, run


def test_a_write_that_fails_halfway_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"the old checkpoint")

    def fails_halfway(f):
        f.write(b"half of the new")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        runs.save_atomic(fails_halfway, path)
    assert path.read_bytes() == b"the old checkpoint" and os.listdir(tmp_path) == ["ckpt.pt"]
    runs.save_atomic(lambda f: f.write(b"the new checkpoint"), path)
    assert path.read_bytes() == b"the new checkpoint" and os.listdir(tmp_path) == ["ckpt.pt"]


@posix_only  # a file size limit (setrlimit)
def test_train_says_why_a_checkpoint_cannot_be_written(photo_dir, tmp_path):
    resource = pytest.importorskip("resource")

    def small_files():  # as if the disk were full: writes past 64 kB fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    r = subprocess.run([sys.executable, "train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", "2",
                        "--eval-every", "2", *TINY], cwd=HERE, capture_output=True, text=True, timeout=300,
                       preexec_fn=small_files)
    one_error_line(r, "cannot write", tmp_path / "best.pt", "too large")
    assert not list(tmp_path.glob("*.tmp*"))


@posix_only  # a file size limit (setrlimit)
def test_overwrite_on_a_full_disk_keeps_the_old_run(photo_dir, tmp_path):
    """--overwrite, and the new run's first save fails for want of space: the
    old run's files are all still there, its ckpt.pt for --resume."""
    resource = pytest.importorskip("resource")
    out = tmp_path / "run"
    assert run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, "--eval-every", 2, *TINY).returncode == 0
    before = {name: (out / name).read_bytes() for name in ("ckpt.pt", "log.csv", "loss.png")}

    def small_files():  # as if the disk were full: the new (wider) model's files do not fit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    r = subprocess.run([sys.executable, "train.py", "--data", photo_dir, "--out", out, "--max-steps", "2",
                        "--eval-every", "2", "--overwrite", *TINY[:2], "--width", "16", *TINY[4:]], cwd=HERE,
                       capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    one_error_line(r, "cannot write", "too large")
    assert {name: (out / name).read_bytes() for name in before} == before  # samples.png: the new run's


def test_start_up_removes_a_killed_saves_leftovers_and_nothing_else(photo_dir, tmp_path):
    """NAME.tmpDIGITS beside a file train.py writes is what a killed save
    leaves: removed when train.py starts in the folder, and when --overwrite
    replaces the run there. Files of the user's named alike, and a folder at
    such a name, stay."""
    out = tmp_path / "run"
    out.mkdir()
    mine = ["log.csv.tmpl", "ckpt.pt.tmp-backup", "best.pt.tmp", "notes.tmp123"]
    for name in mine + ["ckpt.pt.tmp8231", "samples.png.tmp40"]:
        (out / name).write_text("x")
    (out / "log.csv.tmp12345").mkdir()  # a folder at such a name is no save of train.py's
    args = ["train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, "--eval-every", 2, *TINY]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    left = set(os.listdir(out))
    assert set(mine) | {"log.csv.tmp12345"} <= left and not {"ckpt.pt.tmp8231", "samples.png.tmp40"} & left, left
    (out / "ckpt.pt.tmp99999").write_bytes(b"left by a killed save")
    r = run(*args, "--overwrite", "--seed", 1)
    assert r.returncode == 0, r.stderr
    left = set(os.listdir(out))
    assert set(mine) | {"log.csv.tmp12345"} <= left and "ckpt.pt.tmp99999" not in left, left


@posix_only  # links
def test_temporary_files_are_never_written_through_links(tmp_path):
    """Links planted at every name a save's temporary file could have had
    (the old NAME.tmpPID) are not followed: the file outside stays as it was,
    and the output is a file of its own, not a link."""
    photo = make_photo(tmp_path / "p.jpg", size=(40, 32))
    outside = tmp_path / "outside.txt"
    outside.write_text("not a PNG")
    for pid in range(1, 4096):  # where the old code wrote: p_color.png.tmp<pid>
        os.symlink(outside, tmp_path / f"p_color.png.tmp{pid}")
    r = colorize_cli(photo, "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert outside.read_text() == "not a PNG"
    assert not os.path.islink(tmp_path / "p_color.png") and Image.open(tmp_path / "p_color.png").size == (40, 32)
    # and a link at the output's own name is replaced by the output, not written through
    os.remove(tmp_path / "p_color.png")
    os.symlink(outside, tmp_path / "p_color.png")
    r = colorize_cli(photo, "--checkpoint", DEMO, "--overwrite")
    assert r.returncode == 0 and outside.read_text() == "not a PNG" and not os.path.islink(tmp_path / "p_color.png")
    (tmp_path / "sub").mkdir()
    got = []
    runs.save_atomic(lambda f: got.extend(os.listdir(tmp_path / "sub")), tmp_path / "sub" / "x.bin")
    assert len(got) == 1 and runs.TEMPORARY.fullmatch(got[0]) and got[0].startswith("x.bin.tmp"), got
    assert os.listdir(tmp_path / "sub") == ["x.bin"]


def test_names_up_to_255_bytes_are_written(tmp_path):
    """The temporary name fits wherever the output's name does."""
    for length in (246, 250, 255):  # the output's name, in bytes
        stem = "a" * (length - len("_color.png"))
        photo = make_photo(tmp_path / f"{stem}.jpg", size=(40, 32))
        r = colorize_cli(photo, "--checkpoint", DEMO)
        assert r.returncode == 0, (length, r.stderr)
        assert (tmp_path / f"{stem}_color.png").exists()
