"""The course (docs/): every command of course.md keeps what the page says,
and its scripts (overfit_one_photo.py, attention_task.py, faces.py) do their
work and refuse what cannot work in one line, before any work; Ctrl-C is one line."""

import os
import re
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import lab
from conftest import (HERE, assert_interrupted, digest, interrupt_at, make_photo, one_error_line, posix_only,
                      read_page_data, run, script)


TINY_TASK = ("--steps", "5", "--width", "4")  # docs/attention_task.py: two models of width 4, five steps each


TINY_COURSE = [(r"--max-steps \d+", "--max-steps 2"), (r"--eval-every \d+", "--eval-every 1"),
               (r"--size 128", "--size 32"), (r"--width 32", "--width 8"), (r"--workers 1", "--workers 0"),
               (r"(overfit_one_photo\.py \S+)", r"\1 --steps 3 --size 32 --width 4"),
               (r"(attention_task\.py)", r"\1 --steps 3 --width 4")]


DONE = r"done: \d+ steps, checkpoint runs/\S+/ckpt\.pt, best runs/\S+/best\.pt \(validation MSE [\d.]+\)\..*"


COURSE_PROMISES = [
    (r"-o runs/lab1 ", 0, [f"lab1/{p}_{s}" for p in ("gcompris_categorization_0028", "kphotoalbum_bar55")
                          for s in ("color.png", "compare.png", "attention.png", "attention.html")],
     r"metrics:   colorized +against all-gray: PSNR [-+][\d.]+ dB \(standard error [\d.]+\), ab MSE [\d.]+x .*"),
    (r"overfit_one_photo", 0, ["overfit.png"], r"wrote runs/overfit\.png: gray \| prediction \| original"),
    (r"--out runs/first", 0, [f"first/{f}" for f in ("ckpt.pt", "best.pt", "log.csv", "loss.png", "samples.png")],
     DONE),
    (r"-o runs/lab4 ", 0, ["lab4/kphotoalbum_bar55_attention.html", "lab4-first/gcompris_categorization_0028_attention.png"],
     r"attention: demo/photos/gcompris_categorization_0028\.jpg: rings 1-4: entropy [\d./]+ of uniform, .*"),
    (r"exercises/check\.py", 1, [], r"0 of 4 pass"),  # the stubs as shipped: the students' to write
    (r"attention_task\.py\n.*--near", 0, [f"attention-{d}/attention_task.{e}" for d in ("task", "near")
                                          for e in ("png", "html")],
     r"baseline \d+\.\d\dx all-gray, attention \d+\.\d\dx all-gray"),
    (r"--mine", 2, [], None),  # as shipped: "error: --mine: ... is not written yet", on stderr
    (r"--out runs/baseline", 0, ["baseline/best.pt", "no-coords/best.pt"], DONE),
    (r"--balance 1", 0, ["plain/ckpt.pt", "balanced/ckpt.pt", "lab8-balanced/kphotoalbum_bar55_compare.png"],
     r"mean a\* over \d faces: runs/lab8-balanced: [-+][\d.]+"),
    (r"--padding zeros", 0, ["zeros/best.pt"],
     r"runs/no-coords chroma on the outer 4 pixels: [-\d.]+ in the middle: [-\d.]+")]


@pytest.mark.slow
@posix_only  # the page's commands run in bash
def test_course_commands_keep_their_promises(tmp_path):
    """Every command block of docs/course.md, in order, as a student runs them
    from the repository, at a tiny size: each exits as the page says, writes
    the files it names, and ends with the line the page shows the form of."""
    text = open(os.path.join(HERE, "docs", "course.md")).read()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert len(blocks) == len(COURSE_PROMISES), len(blocks)
    for name in os.listdir(HERE):  # the repository, as cloned (runs/ starts empty)
        if name.endswith(".py") or name in ("demo", "docs"):
            os.symlink(os.path.join(HERE, name), tmp_path / name)
    for block, (finds, status, files, last_line) in zip(blocks, COURSE_PROMISES):
        assert re.search(finds, block), (finds, block)  # the page's order is the table's
        for pattern, tiny in TINY_COURSE:
            block = re.sub(pattern, tiny, block)
        r = subprocess.run(["bash", "-euc", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == status and "Traceback" not in r.stderr, (block, r.stdout[-2000:], r.stderr[-2000:])
        missing = [f for f in files if not (tmp_path / "runs" / f).exists()]
        assert not missing, (block, missing)
        if last_line:
            assert re.fullmatch(last_line, r.stdout.splitlines()[-1]), (block, r.stdout[-1000:])
        else:
            assert re.fullmatch(r"error: .*\n", r.stderr), (block, r.stderr)


# -----------------------------------------------------------------------------
# docs/overfit_one_photo.py (that it learns its photo: test_colorize.py)


OPEN_REFUSED = """
import os, runpy, sys
out, script, *argv = sys.argv[1:]
real_open = os.open
def open_(path, flags, *rest, **kw):  # as a read-only folder (as root, chmod cannot make one)
    p = os.path.abspath(os.fspath(path))
    if (p == out or os.path.dirname(p) == out) and flags & (os.O_WRONLY | os.O_RDWR):
        raise PermissionError(13, "Permission denied", os.fspath(path))
    return real_open(path, flags, *rest, **kw)
os.open = open_
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
"""


def test_overfit_one_photo_never_replaces_a_file_unasked_and_says_a_bad_out_in_one_line(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    before = digest(photo)
    small = ["--steps", 2, "--size", 16, "--width", 4]
    for out, overwrite, says in [(photo, True, "that is the photo itself"), (photo, False, "that is the photo itself"),
                                 (tmp_path / "notes.txt", False, "exists (--overwrite replaces it)"),
                                 (tmp_path, True, "exists and is not a file"),
                                 (tmp_path / "notes.txt" / "o.png", False, "a file, not a folder")]:
        (tmp_path / "notes.txt").write_text("mine")
        r = run("docs/overfit_one_photo.py", photo, *small, "--out", out, *(["--overwrite"] if overwrite else []))
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (out, r.stderr)
        assert digest(photo) == before and (tmp_path / "notes.txt").read_text() == "mine"
    r = run("docs/overfit_one_photo.py", photo, *small, "--out", tmp_path / "notes.txt", "--overwrite")
    assert r.returncode == 0 and Image.open(tmp_path / "notes.txt").size == (3 * 16, 16), r.stderr


@pytest.mark.parametrize("flags,words", [
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--width", "100000"], "--width"), (["--width", "1", "--size", "16"], "--width"),
    (["--size", "8", "--width", "1"], "--size"), (["--size", "8", "--width", "4"], "--size"),
    (["--size", "80000"], "--size"),
    (["--width", "1024", "--size", "16"], "--width"), (["--out", ""], "--out")])
def test_overfit_one_photo_refuses_flags_that_cannot_work_before_any_work(tmp_path, flags, words):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    before = digest(photo)
    args = ["--steps", 2, "--size", 16, "--width", 4, "--out", tmp_path / "o.png"]
    r = run(script("docs/overfit_one_photo.py"), photo, *args, *flags)
    one_error_line(r, words)
    assert r.stdout == "", r.stdout  # not one step trained
    assert sorted(os.listdir(tmp_path)) == ["p.jpg"] and digest(photo) == before


def test_overfit_one_photo_refuses_a_photo_it_cannot_learn_from(tmp_path):
    """A photo that is not there; a flat gray photo (or a grayscale one):
    nothing to learn, and all-gray is already perfect (its MSE 0), so the
    ratio to it would be meaningless."""
    r = run(script("docs/overfit_one_photo.py"), tmp_path / "missing.jpg")
    assert r.returncode != 0 and "missing.jpg" in r.stderr and "Traceback" not in r.stderr
    for name, im in [("flat.png", Image.new("RGB", (64, 48), (128, 128, 128))),
                     ("gray.jpg", Image.open(make_photo(tmp_path / "src.png", size=(64, 48))).convert("L"))]:
        im.save(tmp_path / name)
        r = run(script("docs/overfit_one_photo.py"), tmp_path / name, "--steps", 2, "--size", 16, "--width", 4,
                "--out", tmp_path / "o.png")
        one_error_line(r, name, "no color")
        assert r.stdout == "" and not (tmp_path / "o.png").exists()


def test_overfit_one_photo_that_diverges_writes_no_picture(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    r = run(script("docs/overfit_one_photo.py"), photo, "--steps", 3, "--size", 16, "--width", 4, "--lr", "1e30",
            "--out", tmp_path / "o.png")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "--lr" in r.stderr and not (tmp_path / "o.png").exists()


def test_overfit_one_photo_says_an_unwritable_out_before_training(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    r = run("-c", OPEN_REFUSED, readonly, script("docs/overfit_one_photo.py"), photo, "--steps", 2, "--size", 16,
            "--width", 4, "--out", readonly / "o.png")
    one_error_line(r, "cannot write there", "Permission denied")
    assert r.stdout == "" and os.listdir(readonly) == []


@posix_only  # Ctrl-C as SIGINT
def test_overfit_one_photo_ctrl_c_is_one_line_and_writes_nothing(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    code, out, err = interrupt_at([script("docs/overfit_one_photo.py"), photo, "--steps", 100000, "--size", 32,
                                   "--width", 4, "--out", tmp_path / "o.png"], "step 1/")
    assert_interrupted(code, out, err, "step 1/")
    assert os.listdir(tmp_path) == ["p.jpg"]


# -----------------------------------------------------------------------------
# docs/attention_task.py


@pytest.mark.slow
def test_attention_task_runs_and_keeps_its_outputs(tmp_path):
    out = tmp_path / "task"
    r = run("docs/attention_task.py", *TINY_TASK, "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # The receptive field is computed, not quoted: a number, square, and smaller than the
    # 114 px between cue and disk on both sides of a pixel (else the task would not need attention).
    field = [re.fullmatch(r"receptive field: (\d+) x (\d+) px \(computed: gradient of one output pixel\)", line)
             for line in lines]
    field = [m for m in field if m]
    assert len(field) == 1, r.stdout
    height, width = map(int, field[0].groups())
    assert height == width and 64 <= width < 2 * 114
    assert re.fullmatch(r"baseline \d+\.\d\dx all-gray, attention \d+\.\d\dx all-gray", lines[-1]), lines[-1]
    # Four held-out examples, each a row of five 256 x 64 panels (4 px apart) under an 18 px caption strip.
    with Image.open(out / "attention_task.png") as figure:
        assert figure.format == "PNG" and figure.size == (5 * 256 + 4 * 4, 4 * (18 + 64) + 3 * 6)
    page = (out / "attention_task.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and read_page_data(page)["grid"] == [8, 32]
    assert sorted(p.name for p in out.iterdir()) == ["attention_task.html", "attention_task.png"]  # no temporary left

    # Run again: refused in one line naming the file, before any training, and the files stay as they were.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run("docs/attention_task.py", *TINY_TASK, "--out", out)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "attention_task.png" in r.stderr
    assert "--overwrite" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = run("docs/attention_task.py", *TINY_TASK, "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr


def test_attention_task_bad_flags_are_one_line(tmp_path):
    for flags, flag in [(("--steps", "0"), "--steps"), (("--width", "x"), "--width"), (("--coords", "maybe"), "--coords"),
                        (("--seed", "-1"), "--seed"), (("--out", __file__), "--out")]:
        r = run("docs/attention_task.py", *flags, "--out", tmp_path / "never") if flag != "--out" else run("docs/attention_task.py", *flags)
        assert r.returncode == 2, (flags, r.stderr)
        assert r.stderr.count("\n") == 1 and re.match(f"error: (argument )?{flag}", r.stderr), (flags, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "never").exists()
    r = run("docs/attention_task.py", "--no-such-flag")
    assert r.returncode == 2 and r.stderr.startswith("error: unrecognized arguments: --no-such-flag")


def test_attention_task_mine_says_which_exercise_is_missing(tmp_path):
    """With the exercises as they ship (every body a NotImplementedError), --mine stops at once
    and names the first one it needs, pointing to check.py; a student's finished file passes."""
    exercises = open(os.path.join(HERE, "docs/exercises/exercises.py"), encoding="utf-8").read()
    if exercises.count("raise NotImplementedError") < 4:
        pytest.skip("docs/exercises/exercises.py has been written")
    r = run("docs/attention_task.py", *TINY_TASK, "--out", tmp_path / "mine", "--mine")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert re.fullmatch(r"error: --mine: \w+ of docs/exercises/exercises.py is not written yet; "
                        r"run python docs/exercises/check.py\n", r.stderr), r.stderr


def test_attention_task_measures_the_receptive_field_of_an_untrained_baseline_that_passes_no_gradient(tmp_path):
    """At --seed 1 the untrained width-4 baseline has every ReLU of a layer
    off at the pixel measured (no gradient reaches the input): the field is
    still measured, 131 px as at any other seed. Below width 4 the decoder
    cannot paint the task's colors: refused in one line, before any work."""
    r = run(script("docs/attention_task.py"), "--steps", 1, "--width", 4, "--seed", 1, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "receptive field: 131 x 131 px (computed: gradient of one output pixel)" in r.stdout.splitlines()
    for width in (2, 3):
        r = run(script("docs/attention_task.py"), "--steps", 1, "--width", width, "--out", tmp_path / "b")
        one_error_line(r, "--width", "at least 4 and at most 256")
        assert r.stdout == ""
    assert not (tmp_path / "b").exists()


def test_attention_task_says_an_unwritable_out_before_training(tmp_path):
    """A folder at an output's name, with --overwrite, and an --out that
    cannot be written: one line, exit 2, before the first step of training."""
    out = tmp_path / "task"
    (out / "attention_task.png").mkdir(parents=True)
    r = run(script("docs/attention_task.py"), "--steps", 1, "--width", 4, "--out", out, "--overwrite")
    one_error_line(r, "attention_task.png", "a folder")
    assert r.stdout == "" and os.listdir(out) == ["attention_task.png"]
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    r = run("-c", OPEN_REFUSED, readonly, script("docs/attention_task.py"), "--steps", 1, "--width", 4,
            "--out", readonly)
    one_error_line(r, f"--out {readonly}", "cannot write there", "Permission denied")
    assert r.stdout == "" and os.listdir(readonly) == []


@posix_only  # Ctrl-C as SIGINT
def test_attention_task_ctrl_c_is_one_line_and_leaves_no_half_written_file(tmp_path):
    out = tmp_path / "task"
    code, stdout, err = interrupt_at([script("docs/attention_task.py"), "--steps", 100000, "--width", 4,
                                      "--out", out], "baseline step 1/")
    assert_interrupted(code, stdout, err, "baseline step 1/")
    assert os.listdir(out) == []


# -----------------------------------------------------------------------------
# docs/faces.py


BOXED = "kphotoalbum_anne_helene_color.png"  # the first photo docs/faces.txt has a box on


def test_faces_reads_warm_skin_in_the_originals_and_green_in_a_green_copy(tmp_path):
    """docs/faces.py: every box of docs/faces.txt lies on warm skin (a* > 0) in
    its original, and a copy painted green reads as green there."""
    said = run("docs/faces.py").stdout  # no folders: the originals alone
    originals = [float(a) for a in re.findall(r"original: a\* *([-+][\d.]+)", said)]
    assert len(originals) == 4 and min(originals) > 5, said
    for name in {line.split()[0] for line in open(os.path.join(HERE, "docs", "faces.txt")) if line[0] != "#"}:
        rgb = torch.from_numpy(np.array(Image.open(os.path.join(HERE, "demo", "photos", name)))).permute(2, 0, 1)
        green = lab.rgb_to_lab(rgb)
        green[1], green[2] = -10.0, 10.0  # every pixel a* = -10, b* = +10
        out = (lab.lab_to_rgb(green) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(out).save(tmp_path / (name[:-4] + "_color.png"))
    r = run("docs/faces.py", tmp_path)
    painted = [float(a) for a in re.findall(re.escape(str(tmp_path)) + r": a\* *([-+][\d.]+)", r.stdout)]
    assert len(painted) == 4 and all(-12 < a < -8 for a in painted), r.stdout
    assert f"mean a* over 4 faces: {tmp_path}: -" in r.stdout


@posix_only  # a FIFO
def test_faces_says_a_bad_picture_or_argument_in_one_line(tmp_path):
    """A corrupt NAME_color.png, one too small for its box, a FIFO at the name
    (never waited on), a file given as a folder, an unknown flag: one line
    naming it, exit 2; --help is help, not a folder."""
    (tmp_path / BOXED).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    one_error_line(run(script("docs/faces.py"), tmp_path), BOXED, "not a readable image")
    Image.new("RGB", (4, 4), (200, 150, 120)).save(tmp_path / BOXED)
    one_error_line(run(script("docs/faces.py"), tmp_path), BOXED, "outside the 4x4 picture")
    os.remove(tmp_path / BOXED)
    os.mkfifo(tmp_path / BOXED)
    one_error_line(run(script("docs/faces.py"), tmp_path, timeout=20), BOXED, "not a regular file")
    one_error_line(run(script("docs/faces.py"), tmp_path / BOXED), BOXED, "not a folder")
    one_error_line(run(script("docs/faces.py"), tmp_path / "missing"), "missing", "no such folder")
    one_error_line(run(script("docs/faces.py"), "--no-such-flag"), "--no-such-flag")
    r = run(script("docs/faces.py"), "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: ") and "FOLDER" in r.stdout, r.stdout + r.stderr
