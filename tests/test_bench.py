"""Benchmarks and the GPU check: bench.py refuses what it cannot use in one
line before measuring anything, measures with a single JPEG, and stops on
Ctrl-C in one line; .ci/gpu-check runs every step on the CPU and records what
did not run."""

import os

import pytest
import torch
from PIL import Image

from conftest import HERE, assert_interrupted, interrupt_at, make_photo, one_error_line, posix_only, run, script


def test_bench_refuses_what_it_cannot_use_in_one_line_before_any_work(tmp_path):
    """Bad flag values, a --photos folder that is missing, a file, or holds
    only broken or only grayscale JPEGs, and a --batch-size no memory holds:
    one line, exit 2, nothing measured."""
    (tmp_path / "file").write_text("not a folder")
    broken, gray = tmp_path / "broken", tmp_path / "gray"
    broken.mkdir(), gray.mkdir()
    (broken / "b.jpg").write_bytes(open(make_photo(tmp_path / "p.jpg"), "rb").read()[:300])
    Image.open(tmp_path / "p.jpg").convert("L").convert("RGB").save(gray / "g.jpg")
    cases = [(["--batch-size", "-1"], ["--batch-size", "got -1"]), (["--peak-tflops", "-5"], ["--peak-tflops", "got -5"]),
             (["--photos", tmp_path / "missing"], ["--photos"]), (["--photos", tmp_path / "file"], ["--photos"]),
             (["--compile", "--device", "cpu"], ["--compile"]),
             (["--photos", broken], ["--photos", "b.jpg", "unreadable"]),
             (["--photos", gray], ["--photos", "g.jpg", "grayscale"]),
             (["--batch-size", "1000000000000"], ["--batch-size", "got 1000000000000"])]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], ["--device cuda"]))
    for flags, words in cases:
        r = run(script("bench.py"), "--quick", *flags, timeout=120)
        one_error_line(r, *words)
        assert r.stdout == "", r.stdout  # nothing measured


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(photo_dir, tmp_path):
    """.ci/gpu-check --device cpu --quick: the steps of the GPU check at tiny
    sizes (bench.py --quick, train.py on random Inception weights, torchrun,
    --resume, colorize.py compared), and one summary file. Slow: six fresh
    Pythons, as on the GPU machine; bench.py --quick is about half of it
    (its table is what the summary is checked for), and the Inception's
    forward pass most of each training step."""
    out = tmp_path / "out"
    r = run(".ci/gpu-check", "--device", "cpu", "--quick", "--photos", photo_dir, out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert os.listdir(out) == ["summary.md"]
    summary = (out / "summary.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in summary.splitlines()
            if line.startswith("| ") and " | " in line}
    for step in ["bench.py --device cpu", "train.py", "torchrun --nproc-per-node 1", "--resume of the torchrun run",
                 "colorize.py --device cpu --batch-size 3", "colorize.py --device cpu, compared"]:
        assert rows[step][0] == "ok", (step, rows[step])
    assert rows["bench.py --device cpu --compile"][0] == "left out"
    assert "step 4/4, loss" in rows["--resume of the torchrun run"][2]
    assert "3 photos: max difference" in rows["colorize.py --device cpu, compared"][2]
    for stage in ["lab round trip", "train step (bare)", "data loading", "train.py loop", "colorize.py per image",
                  "attention block"]:
        assert stage in rows, stage
    assert "| train step (bare) | attention + global, 64x64, batch 2 |" in summary
    assert "the Inception's share of the step" in summary
    assert "**7 of 7 steps passed**" in summary


def test_gpu_check_records_what_did_not_run_and_fails(photo_dir, tmp_path):
    r = run(".ci/gpu-check", "--device", "cpu", "--quick", "--photos", tmp_path, tmp_path / "out")
    assert r.returncode != 0 and "no photos in" in r.stderr
    r = run(".ci/gpu-check", "--device", "cpu", "--quick", "--photos", photo_dir, "--budget", 0, tmp_path / "out")
    assert r.returncode == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| train.py | skipped | 0 | no time left in the budget |" in summary
    assert "not passed: bench.py --device cpu, train.py" in summary


@pytest.mark.slow
@posix_only  # Ctrl-C as SIGINT
def test_bench_measures_with_one_jpeg_and_ctrl_c_after_colorize_is_one_line(tmp_path):
    """One JPEG: every row that needs photos runs (the train.py loop included:
    train.py trains and validates on the one photo, with a warning). A Ctrl-C
    after colorize.main has run (it makes the stop signals its own) is still
    bench.py's: one line, exit 130."""
    make_photo(tmp_path / "only.jpg", size=(160, 120))
    code, out, err = interrupt_at([script("bench.py"), "--quick", "--photos", tmp_path], "colorize.py per image",
                                  cwd=HERE)
    assert "train.py loop" in out, (out[-2000:], err[-2000:])
    assert_interrupted(code, out, err, "colorize.py per image")
    assert err == "interrupted: bench.py writes nothing, so nothing is lost\n"


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
