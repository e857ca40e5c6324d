"""--resume goes on from where a run stopped, as if it had not (train.py):
the same photos and weights, the run's own recipe, the folder it read; and a
checkpoint it cannot go on from is refused in one line."""

import csv
import math
import os
import shutil

import pytest
import torch

import runs
from conftest import HERE, TINY, make_photo, one_error_line, run


def test_resume_and_init_take_what_they_can_and_refuse_the_rest(photo_dir, tmp_path):
    run_dir, exported = tmp_path / "run", tmp_path / "small.pt"
    r = run("train.py", "--data", photo_dir, "--out", run_dir, "--max-steps", 4, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    one_error_line(run("train.py", "--data", photo_dir, "--out", run_dir, "--resume", "--max-steps", 4),
                   "--max-steps", "4 steps")
    one_error_line(run("train.py", "--data", photo_dir, "--out", run_dir, "--resume", "--width", 16, "--max-steps", 8),
                   "--width 16", "--width 8")
    # the run's own recipe goes on; a typed --lr applies (and is said)
    r = run("train.py", "--data", photo_dir, "--out", run_dir, "--resume", "--max-steps", 6, "--lr", "5e-4")
    assert r.returncode == 0, r.stderr
    assert "--lr 0.0005 (was 0.001)" in r.stdout
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["args"]["size"] == 32 and ckpt["args"]["lr"] == 5e-4

    runs.export_checkpoint(run_dir / "best.pt", exported)
    resumable = tmp_path / "exported"
    resumable.mkdir()
    (resumable / "ckpt.pt").write_bytes(exported.read_bytes())
    one_error_line(run("train.py", "--data", photo_dir, "--out", resumable, "--resume"), "--init")
    one_error_line(run("train.py", "--data", photo_dir, "--init", exported, "--model", "baseline"),
                   "--model baseline", "--init")
    one_error_line(run("train.py", "--data", photo_dir, "--init", exported, "--inception", exported),
                   "no global branch")
    one_error_line(run("train.py", "--data", photo_dir, "--init", exported, "--padding", "zeros"),
                   "--padding zeros", "--padding replicate")
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "tuned", "--init", exported,
            "--max-steps", 2, "--eval-every", 2, *TINY[2:])
    assert r.returncode == 0, r.stderr
    assert "initialized from" in r.stdout
    assert torch.load(tmp_path / "tuned" / "ckpt.pt", weights_only=True)["step"] == 2


def test_resume_writes_where_it_read(photo_dir, tmp_path):
    """--resume without --out goes on with the run in out/ (the default) and
    writes there, not in the folder its checkpoint's recorded flags name."""
    r = run(os.path.join(HERE, "train.py"), "--data", photo_dir, "--out", "runs/a", "--max-steps", 2,
            "--eval-every", 2, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "out")
    before = (tmp_path / "runs" / "a" / "ckpt.pt").read_bytes()
    r = run(os.path.join(HERE, "train.py"), "--data", photo_dir, "--resume", "--max-steps", 4, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"] == 4  # the run it read
    assert (tmp_path / "runs" / "a" / "ckpt.pt").read_bytes() == before  # not the folder its flags named


@pytest.mark.slow
def test_a_resumed_run_draws_the_same_photos_and_reaches_the_same_weights(photo_dir, tmp_path):
    """6 steps in one go, and 3 + 3 with --resume (one loader worker, and none):
    the same photos, crops and losses, and the same weights at the end."""
    for workers in ("0", "1"):
        flags = [*TINY[:-1], workers, "--eval-every", 3, "--log-every", 1, "--batch-size", 2]
        whole, half = tmp_path / f"whole{workers}", tmp_path / f"half{workers}"
        assert run("train.py", "--data", photo_dir, "--out", whole, "--max-steps", 6, *flags).returncode == 0
        assert run("train.py", "--data", photo_dir, "--out", half, "--max-steps", 3, *flags).returncode == 0
        r = run("train.py", "--data", photo_dir, "--out", half, "--max-steps", 6, "--resume", *flags)
        assert r.returncode == 0, r.stderr
        losses = [{row["step"]: row["loss"] for row in csv.DictReader(open(d / "log.csv")) if row["loss"]}
                  for d in (whole, half)]
        assert losses[0] == losses[1] and len(losses[0]) == 6, losses
        a, b = (torch.load(d / "ckpt.pt", weights_only=True) for d in (whole, half))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert a["draws"] == b["draws"] == 12


def test_a_resume_after_photos_were_added_starts_the_best_over_and_says_so(photo_dir, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(photo_dir, d)
    flags = ["--data", d, "--out", tmp_path / "run", "--eval-every", 2, "--val-fraction", 0.3, *TINY]
    assert run("train.py", *flags, "--max-steps", 2).returncode == 0
    r = run("train.py", *flags, "--max-steps", 4, "--resume")
    assert r.returncode == 0 and "best so far starts over" not in r.stdout, r.stdout  # the same photos: goes on
    assert "training photos are not the ones" not in r.stdout
    for i in range(12):
        make_photo(d / f"new{i}.jpg", size=(48, 40), seed=50 + i)
    r = run("train.py", *flags, "--max-steps", 6, "--resume")
    assert r.returncode == 0 and "the best so far starts over" in r.stdout, r.stdout
    assert "the training photos are not the ones the run drew from" in r.stdout, r.stdout  # its draws: said too
    assert "step 6/6 | val mse" in r.stdout and "| best so far" in r.stdout.split("step 6/6 | val mse")[1].split("\n")[0]


def test_a_checkpoint_resume_cannot_go_on_from_is_one_line(photo_dir, tmp_path):
    """No ckpt.pt, half of one, a run state that makes no sense, and flags or
    state of the wrong kind (a hand-edited or foreign file): exit 2, one line
    saying why, no traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("train.py", "--data", photo_dir, "--out", empty, "--resume", *TINY)
    assert r.returncode == 2 and "ckpt.pt: no such file" in r.stderr and "Traceback" not in r.stderr
    (empty / "ckpt.pt").write_bytes(b"half a checkpoint")
    r = run("train.py", "--data", photo_dir, "--out", empty, "--resume", *TINY)
    assert r.returncode == 2 and "not a train.py checkpoint" in r.stderr and "Traceback" not in r.stderr

    flags = ["--data", photo_dir, "--out", tmp_path / "run", "--eval-every", 2, *TINY]
    assert run("train.py", *flags, "--max-steps", 2).returncode == 0
    good = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    for name, broken in [("rng", {k: v for k, v in good.items() if k != "rng"}), ("step", {**good, "step": -3}),
                         ("history", {**good, "history": [{"step": "a", "val_mse": "b"}]})]:
        torch.save(broken, tmp_path / "run" / "ckpt.pt")
        one_error_line(run("train.py", *flags, "--resume", "--max-steps", 9), "--resume")
    for key, value, says in [("lr", "0.1", "its --lr is '0.1', not a float"), ("ema", None, "its --ema is None"),
                             ("min_crop", "x", "its --min-crop is 'x'"), ("model", "transformer", "not one of"),
                             ("balance", True, "its --balance is True")]:
        torch.save({**good, "args": {**good["args"], key: value}}, tmp_path / "run" / "ckpt.pt")
        r = run("train.py", *flags, "--max-steps", 4, "--resume")
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (key, r.stderr[-800:])
    # the state it continues: random generators, the optimizer's moments, the count of photos drawn
    adam = good["optimizer"]
    first = min(adam["state"])
    for name, edit, says in [
            ("rng torch", {"rng": {**good["rng"], "torch": torch.zeros(3)}}, "random state"),
            ("rng python", {"rng": {**good["rng"], "python": (1, 2)}}, "random state"),
            ("draws", {"draws": 10**30}, "'draws' is 1000000000000000000000000000000"),
            ("best_mse", {"best_mse": math.nan}, "best validation"),
            ("param groups", {"optimizer": {**adam, "param_groups": []}}, "optimizer state does not fit"),
            ("moments", {"optimizer": {**adam, "state": {**adam["state"], first: {
                **adam["state"][first], "exp_avg": torch.zeros(1)}}}}, "optimizer state does not fit")]:
        torch.save({**good, **edit}, tmp_path / "run" / "ckpt.pt")
        r = run("train.py", *flags, "--max-steps", 4, "--resume")
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (name, r.stderr[-800:])


@pytest.mark.parametrize("key", ["loss", "val_mse"])
def test_a_resumed_history_that_is_not_finite_is_refused_before_any_work(photo_dir, tmp_path, key):
    """An inf in the history would train and validate, then fail drawing the curves."""
    flags = ["--data", photo_dir, "--out", tmp_path / "run", "--eval-every", 1, "--log-every", 1, *TINY]
    assert run("train.py", *flags, "--max-steps", 1).returncode == 0
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    next(r for r in ckpt["history"] if key in r)[key] = float("inf")
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    one_error_line(run("train.py", *flags, "--resume", "--max-steps", 3), "history")


def test_resume_judges_the_weights_and_the_optimizer_before_any_work(photo_dir, tmp_path):
    """Weights that are NaN or of another shape or kind, and an optimizer state
    that is not Adam's, are said in one line before any work, not as a
    traceback at the first step."""
    flags = ["--data", photo_dir, "--out", tmp_path / "run", "--eval-every", 2, *TINY]
    assert run("train.py", *flags, "--max-steps", 2).returncode == 0
    good = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    key, first = next(iter(good["model"])), min(good["optimizer"]["state"])
    weight = good["model"][key]
    for name, edit, says in [
            ("nan", {"model": {**good["model"], key: weight * float("nan")}}, "NaN"),
            ("shape", {"model": {**good["model"], key: torch.zeros(3)}}, "the model needs"),
            ("uint8", {"ema": {**good["ema"], key: weight.to(torch.uint8)}}, "float tensors"),
            ("moment", {"optimizer": {**good["optimizer"], "state": {
                **good["optimizer"]["state"], first: {**good["optimizer"]["state"][first],
                                                      "exp_avg": torch.tensor(0.0)}}}}, "not Adam's"),
            ("betas", {"optimizer": {**good["optimizer"], "param_groups": [
                {**good["optimizer"]["param_groups"][0], "betas": "ab"}]}}, "betas")]:
        torch.save({**good, **edit}, tmp_path / "run" / "ckpt.pt")
        one_error_line(run("train.py", *flags, "--resume", "--max-steps", 4), "--resume", says)
