"""colorize.py says what it cannot use in one line: bad flags before any
work, an attention too large for the machine, and every bad file one line
naming it (exit 1), the good ones still done."""

import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageOps

import colorize
import data
from conftest import DEMO, HERE, colorize_cli, fake_run, make_photo, posix_only, run


@pytest.mark.parametrize("flags, message", [
    (["-o", "FILE"], "--out FILE: a file, not a folder"),
    (["-o", "FILE/sub"], "--out FILE/sub: cannot write there"),
    (["--size", "0"], "argument --size: must be at least 8 and at most 4096, got 0"),
    (["--size", "100000"], "argument --size: must be at least 8 and at most 4096, got 100000"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["-o", ""], "--out, --checkpoint and --inception take a path: an empty one"),
    pytest.param(["-o", "/dev/null"], "--out /dev/null: not a folder (a device or a FIFO)", marks=posix_only),
    (["--checkpoint", ""], "--out, --checkpoint and --inception take a path: an empty one"),
    (["--size", "abc"], "argument --size"),  # argparse's own
    pytest.param(["--device", "cuda"], "--device cuda, but no CUDA device is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here"))])
def test_bad_flags_are_one_line_before_any_work(tmp_path, flags, message):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    (tmp_path / "FILE").write_text("a file")
    r = colorize_cli(img, *[f.replace("FILE", str(tmp_path / "FILE")) for f in flags], "--checkpoint", DEMO)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: " + message.replace("FILE", str(tmp_path / "FILE"))), r.stderr
    assert not (tmp_path / "p_color.png").exists() and (tmp_path / "FILE").read_text() == "a file"


@posix_only  # SIGTERM's exit status 130
def test_an_attention_model_too_slow_at_its_size_on_the_cpu_says_so_before_work(tiny_ckpt, tmp_path):
    """At a short side of 2048 attention compares 65536+ positions with each
    other: minutes a photo on a CPU. Said before the first photo, with what
    to do, and it stops cleanly when the user takes the advice."""
    photo = make_photo(tmp_path / "p.jpg", size=(40, 32))
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "colorize.py"), str(photo), "--checkpoint",
                          str(tiny_ckpt), "--size", "2048", "--device", "cpu"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith(("note:", "error:", "Traceback")):
            break
    p.terminate()
    out, err = p.communicate(timeout=60)
    assert line.startswith("note: ") and "65536+ positions" in line and "--size 512" in line, line + err
    assert p.returncode == 130 and not (tmp_path / "p_color.png").exists(), err


def test_attention_that_would_need_gigabytes_is_refused_before_any_work(tmp_path):
    """The guard reads the size the model will see: --size, else the checkpoint's."""
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli(img, "--attention", "--size", 2048, "--checkpoint", DEMO)
    assert r.returncode == 2 and r.stderr.startswith("error: --attention with --size 2048") and "GB" in r.stderr
    fake_run(tmp_path / "big", 3)
    ckpt = torch.load(tmp_path / "big" / "best.pt", weights_only=True)
    ckpt["args"]["size"] = 1024
    torch.save(ckpt, tmp_path / "big.pt")
    r = colorize_cli(img, "--checkpoint", tmp_path / "big.pt", "--attention", timeout=120)
    assert r.returncode == 2 and "--attention with" in r.stderr and "trained at 1024" in r.stderr, r.stderr[-500:]
    assert not (tmp_path / "p_color.png").exists()
    r = colorize_cli(img, "--checkpoint", tmp_path / "big.pt", "--attention", "--size", 64)
    assert r.returncode == 0 and (tmp_path / "p_attention.html").exists(), r.stderr


def test_colorize_reports_bad_files_and_writes_the_good_ones(tiny_ckpt, tmp_path):
    good = [make_photo(tmp_path / f"good{i}.jpg", seed=i) for i in range(2)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    (tmp_path / "cut.jpg").write_bytes(good[0].read_bytes()[:400])
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 megapixels, a few kB
    bad = ["empty.jpg", "text.png", "cut.jpg", "bomb.png", "missing.jpg"]
    r = run("colorize.py", tmp_path / "empty.jpg", good[0], tmp_path / "text.png", tmp_path / "cut.jpg",
            tmp_path / "bomb.png", tmp_path / "missing.jpg", good[1], "--checkpoint", tiny_ckpt)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if not line.startswith("checkpoint: ")]
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(name in line and line.startswith("error: ") for line in errors) == 1, (name, errors)
    assert "decompression bomb" in r.stderr and "no such file" in r.stderr
    for g in good:
        assert (tmp_path / (g.stem + "_color.png")).exists()


@posix_only  # FIFOs
def test_a_fifo_is_passed_over_in_a_folder_and_an_error_when_named(tmp_path):
    make_photo(tmp_path / "ok.jpg", size=(40, 32))
    os.mkfifo(tmp_path / "pipe.jpg")
    r = colorize_cli(tmp_path, tmp_path / "pipe.jpg", "--checkpoint", DEMO, timeout=60)
    assert r.returncode == 1 and (tmp_path / "ok_color.png").exists(), r.stderr
    lines = r.stderr.splitlines()
    assert any(line.startswith("warning: ") and "pipe.jpg: not a regular file" in line for line in lines), lines
    assert any(line.startswith("error: ") and "pipe.jpg: not a regular file" in line for line in lines), lines


def test_a_folder_without_images_is_an_error_and_folders_take_what_files_take(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    (tmp_path / "gifs").mkdir()
    Image.open(make_photo(tmp_path / "src.png", size=(40, 32))).save(tmp_path / "gifs" / "old.gif")
    r = colorize_cli(tmp_path / "empty", tmp_path / "gifs", "--checkpoint", DEMO)
    assert r.returncode == 1
    assert f"error: no images found in {tmp_path / 'empty'}" in r.stderr
    assert (tmp_path / "gifs" / "old_color.png").exists()


def test_unreadable_folders_are_reported_not_skipped_silently(tmp_path):
    """As root, chmod 000 does not stop reading: os.scandir is made to refuse one folder."""
    (tmp_path / "locked").mkdir()
    make_photo(tmp_path / "locked" / "hidden.jpg", size=(40, 32))
    make_photo(tmp_path / "ok.jpg", size=(40, 32))
    code = ("import os, sys, colorize\n"
            "real = os.scandir\n"
            "def scandir(p='.'):\n"
            "    if os.path.basename(os.fspath(p)) == 'locked':\n"
            "        raise PermissionError(13, 'Permission denied', os.fspath(p))\n"
            "    return real(p)\n"
            "os.scandir = scandir\n"
            f"sys.exit(colorize.main([{str(tmp_path)!r}, '--checkpoint', {DEMO!r}]))")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    assert f"warning: {tmp_path / 'locked'}: cannot read this folder (Permission denied)" in r.stderr
    assert (tmp_path / "ok_color.png").exists()


@posix_only  # names of bytes that are not UTF-8
def test_names_that_are_not_utf8_are_shown_escaped(tmp_path):
    name = os.fsdecode(b"caf\xff.jpg")
    make_photo(os.path.join(tmp_path, name), size=(40, 32))
    (tmp_path / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"not a picture")
    assert len(data.find_images(tmp_path)) == 2
    r = colorize_cli(tmp_path, "--checkpoint", DEMO)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "caf\\xff.jpg ->" in r.stdout and "error: " in r.stderr and "bad\\xff.jpg" in r.stderr
    assert os.path.exists(os.path.join(tmp_path, os.fsdecode(b"caf\xff_color.png")))
    _, skipped = data.ImageFolder([os.path.join(tmp_path, os.fsdecode(b"bad\xff.jpg")),
                                   os.path.join(tmp_path, name)], size=16)[0]
    assert "bad\\xff.jpg: unreadable" in skipped[0]
    skipped[0].encode("utf-8")  # printable by train.py


@posix_only  # a newline in a file name
def test_a_file_name_with_a_newline_is_printed_on_one_line(tmp_path):
    make_photo(tmp_path / "two\nlines.jpg", size=(40, 32))
    r = colorize_cli(tmp_path, "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert "two\\nlines.jpg ->" in r.stdout and len(r.stdout.strip().splitlines()) == 1, r.stdout


def test_warnings_name_the_file_they_are_about(tmp_path):
    img = make_photo(tmp_path / "big.png", size=(40, 40))  # 1600 pixels: over a limit of 1000
    code = ("import sys, colorize, PIL.Image\n"
            "PIL.Image.MAX_IMAGE_PIXELS = 1000\n"
            f"sys.exit(colorize.main([{str(img)!r}, '--checkpoint', {DEMO!r}]))")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    assert f"warning: {img}: Image size (1600 pixels) exceeds limit" in r.stderr, r.stderr


def test_a_corrupt_exif_is_a_bad_file_like_any_other(tmp_path, monkeypatch):
    """What Pillow raises for a corrupt EXIF block (TypeError for a tag of the
    wrong type, struct.error for a short one) is an unreadable image: one line,
    and the next photo is done; the API raises ColorizeError."""
    bad, good = make_photo(tmp_path / "broken.jpg", size=(40, 32)), make_photo(tmp_path / "fine.jpg", size=(40, 32))
    patch = ("import PIL.ImageOps, runpy, struct, sys\n"
             "real = PIL.ImageOps.exif_transpose\n"
             "def corrupt(im, **kw):\n"
             "    if str(getattr(im, 'filename', '')).endswith('broken.jpg'):\n"
             "        raise (TypeError('unsupported operand type(s)') if 'type' in sys.argv[-1] else\n"
             "               struct.error('unpack requires a buffer of 4 bytes'))\n"
             "    return real(im, **kw)\n"
             "PIL.ImageOps.exif_transpose = corrupt\n"
             "sys.argv = sys.argv[1:-1]\n"
             "runpy.run_path('colorize.py', run_name='__main__')\n")
    for kind in ("type", "struct"):
        r = run("-c", patch, "colorize.py", bad, good, "--checkpoint", DEMO, "--overwrite", kind)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-1000:]
        assert re.search(r"error: .*broken\.jpg: not a readable image", r.stderr) and (tmp_path / "fine_color.png").exists()
    monkeypatch.setattr(ImageOps, "exif_transpose", lambda im, **kw: (_ for _ in ()).throw(TypeError("bad tag")))
    with pytest.raises(colorize.ColorizeError, match="broken.jpg: not a readable image"):
        colorize.colorize(bad, colorize.load(DEMO, device="cpu"))
