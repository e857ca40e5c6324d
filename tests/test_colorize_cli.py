"""colorize.py gives every input its own outputs: into folders, beside the
inputs or under -o, with --compare, --attention and --metrics, from several
checkpoints; names that collide each get their own; what exists is kept
unless --overwrite, and an input is never written over; 24 megapixels in
bounded memory. (Every image mode, its lightness kept: test_colorize.py.)"""

import os
import re

import pytest
from PIL import Image

from conftest import DEMO, TINY, colorize_cli, digest, make_photo, posix_only, run


def test_a_second_run_skips_what_exists_and_makes_only_what_is_new(tiny_ckpt, tmp_path):
    """An output that exists is kept (said), --overwrite redoes it, and asking
    for an extra output later makes just that one. (Every mode at full size,
    its L kept and the input untouched: test_colorize.py.)"""
    photo = make_photo(tmp_path / "rgb.jpg", size=(120, 80))
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt)
    assert r.returncode == 0 and "rgb_color.png" in r.stdout, r.stderr
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt)  # nothing new: said loudly, exit status 3
    assert r.returncode == 3 and "skip:" in r.stdout and "exists" in r.stdout and "nothing written" in r.stderr
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--overwrite")
    assert r.returncode == 0 and "rgb_color.png" in r.stdout
    kept = digest(tmp_path / "rgb_color.png")
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--compare")
    assert r.returncode == 0 and "rgb_compare.png" in r.stdout and "rgb_color.png" not in r.stdout, r.stdout
    assert (tmp_path / "rgb_compare.png").exists() and digest(tmp_path / "rgb_color.png") == kept


def test_colorize_folder_into_out_dir_with_compare_attention_and_metrics(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    make_photo(src / "color.jpg", size=(120, 80))
    Image.open(make_photo(src / "sub" / "x.png", size=(64, 96))).convert("L").save(src / "sub" / "old.png")
    os.remove(src / "sub" / "x.png")
    out = tmp_path / "out"
    r = run("colorize.py", src, "-o", out, "--checkpoint", tiny_ckpt, "--compare", "--attention",
            "--metrics", "--batch-size", 4)
    assert r.returncode == 0, r.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*_*")) == sorted([
        "color_color.png", "color_compare.png", "color_attention.png", "color_attention.html",
        os.path.join("sub", "old_color.png"), os.path.join("sub", "old_compare.png"),
        os.path.join("sub", "old_attention.png"), os.path.join("sub", "old_attention.html")])
    assert not list(src.rglob("*_color.png"))
    # compare: gray | colorized | original for a color input, gray | colorized for a gray one
    assert Image.open(out / "color_compare.png").size == (3 * 120 + 2 * 4, 18 + 80)  # 18: captions
    assert Image.open(out / "sub" / "old_compare.png").size == (2 * 64 + 4, 18 + 96)
    # attention: the colorized picture and four heat maps at the network's size (short side 32)
    att = Image.open(out / "color_attention.png")
    assert att.size == (5 * 48 + 4 * 4, 18 + 32)
    # metrics: per color image, then the mean; the gray input is said to have none
    line = [line for line in r.stdout.splitlines() if "color.jpg: colorized PSNR" in line][0]
    psnr_value = float(line.split("PSNR ")[1].split(" dB")[0])
    assert 5 < psnr_value < 60
    assert "all-gray PSNR" in line and "original colorfulness" in line
    assert "old.png: grayscale input" in r.stdout and "mean over 1 color images" in r.stdout
    assert "|rg|, |yb|" in r.stdout
    # attention: how concentrated the weights printable are, one line per image
    assert re.search(r"attention: .*color\.jpg: rings 1-4: entropy [\d./]+ of uniform, top 5% of positions hold",
                     r.stdout), r.stdout


def test_colorize_compares_several_checkpoints_side_by_side(tiny_ckpt, photo_dir, tmp_path):
    other = tmp_path / "baseline"
    r = run("train.py", "--data", photo_dir, "--out", other, "--max-steps", 2, "--eval-every", 2,
            "--model", "baseline", *TINY)
    assert r.returncode == 0, r.stderr
    img, img2 = make_photo(tmp_path / "pic.jpg", size=(72, 48)), make_photo(tmp_path / "pic2.jpg", seed=1)
    r = run("colorize.py", "--checkpoint", tiny_ckpt, "--checkpoint", other / "ckpt.pt", img, img2, "--compare",
            "--metrics")
    assert r.returncode == 0, r.stderr
    # gray | first model | second model | original
    assert Image.open(tmp_path / "pic_compare.png").size == (4 * 72 + 3 * 4, 18 + 48)
    means = [line for line in r.stdout.splitlines() if line.startswith("metrics:   ")]
    names = [tiny_ckpt.parent.name, "baseline"]
    assert [line.split()[1] for line in means] == names + ["all-gray", "original"] + names
    assert all(" against all-gray: PSNR " in line and "90% of resamplings" in line for line in means[4:])


def test_inputs_that_share_an_output_name_each_get_their_own(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("x.jpg", "x.png"):
        make_photo(d / name, size=(40, 32))
    r = colorize_cli(d, "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in d.glob("*_color.png")) == ["x_jpg_color.png", "x_png_color.png"]
    assert "[1/2]" in r.stdout and "[2/2]" in r.stdout and "img/s | eta" in r.stdout
    assert re.search(r"^checkpoint: .*colorizer\.pt \(step \d+", r.stderr, re.M), r.stderr
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        make_photo(tmp_path / sub / "x.jpg", size=(40, 32))
    r = colorize_cli(tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", "-o", tmp_path / "out", "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x-2_color.png", "x_color.png"]


@posix_only  # links
def test_overwrite_never_writes_over_an_input_named_like_an_output(tmp_path):
    make_photo(tmp_path / "a.jpg", size=(40, 32))
    make_photo(tmp_path / "a_color.png", size=(40, 32), seed=1)
    before = digest(tmp_path / "a_color.png")
    r = colorize_cli(tmp_path / "a.jpg", tmp_path / "a_color.png", "--overwrite", "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert digest(tmp_path / "a_color.png") == before
    assert (tmp_path / "a-2_color.png").exists() and (tmp_path / "a_color_color.png").exists()
    # an input that is a link to what would be another input's output: the file behind it is kept too
    (tmp_path / "l").mkdir()
    make_photo(tmp_path / "l" / "x.jpg", size=(40, 32))
    make_photo(tmp_path / "l" / "x_color.png", size=(40, 32), seed=2)
    os.symlink("x_color.png", tmp_path / "l" / "pic.png")
    before = digest(tmp_path / "l" / "x_color.png")
    r = colorize_cli(tmp_path / "l" / "x.jpg", tmp_path / "l" / "pic.png", "--overwrite", "--checkpoint", DEMO)
    assert r.returncode == 0 and digest(tmp_path / "l" / "pic.png") == before, r.stderr
    assert (tmp_path / "l" / "x-2_color.png").exists()


def test_a_folder_at_an_output_name_is_an_error_for_that_input(tmp_path):
    photos = [make_photo(tmp_path / f"{n}.jpg", size=(40, 32)) for n in ("a", "b")]
    (tmp_path / "a_color.png").mkdir()
    for more in ([], ["--overwrite"]):
        r = colorize_cli(*photos, "--checkpoint", DEMO, *more)
        assert r.returncode == 1 and "a.jpg: " in r.stderr and "a_color.png is a folder" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and (tmp_path / "a_color.png").is_dir() and (tmp_path / "b_color.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads its peak memory in Linux's /proc")
def test_colorize_a_24_megapixel_photo_in_bounded_memory(tiny_ckpt, tmp_path):
    """6000 x 4000, with --metrics: full size out, and the process stays far
    below this machine's memory (the full-resolution work and the metrics run
    in strips; the metrics over the whole image at once took 136 bytes a pixel)."""
    big = tmp_path / "big.jpg"
    Image.open(make_photo(tmp_path / "src.png", size=(300, 200))).resize((6000, 4000)).save(big, quality=90)
    code = ("import sys, colorize\n"
            f"rc = colorize.main([{str(big)!r}, '--checkpoint', {str(tiny_ckpt)!r}, '--metrics'])\n"
            "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
            "print('PEAK_KB', peak)\nsys.exit(rc)")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "big_color.png").size == (6000, 4000) and "big.jpg: colorized PSNR" in r.stdout
    peak_mb = int(r.stdout.split("PEAK_KB")[1].split()[0]) / 1024
    assert peak_mb < 2500, peak_mb  # under 1 GB measured; the whole image in float32 Lab at once: several GB


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
