"""Training learns, and is judged against all-gray (train.py): the loss goes
down; validation, best.pt and the weight average; divergence; the Inception's
record; fine-tuning with --init; torchrun; --coords."""

import os
import re

import pytest
import torch

import inception
import runs
from conftest import HERE, TINY, one_error_line, run, write_safetensors


def test_training_drives_the_loss_down(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 60, "--eval-every", 60,
            "--log-every", 10, "--lr", "3e-3", *TINY)
    assert r.returncode == 0, r.stderr
    losses = [row["loss"] for row in torch.load(tmp_path / "ckpt.pt", weights_only=True)["history"]
              if "loss" in row]
    assert losses[-1] < losses[0] / 2, losses


def test_train_keeps_the_best_checkpoint_and_the_weight_average(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 12, "--eval-every", 3,
            "--warmup", 2, "--log-every", 1, *TINY)
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    evals = [row for row in ckpt["history"] if "val_mse" in row]
    assert [row["step"] for row in evals] == [0, 3, 6, 9, 12] and all("val_mse_raw" in row for row in evals)
    assert best["step"] == min(evals, key=lambda row: row["val_mse"])["step"]
    assert ckpt["best_mse"] == min(row["val_mse"] for row in evals)
    assert "optimizer" not in best and ckpt["ema"].keys() == ckpt["model"].keys()
    if best["step"] == 12:  # best.pt holds the averaged weights, not the last step's
        assert all(torch.equal(best["model"][k], ckpt["ema"][k]) for k in best["model"])
    lrs = [row["lr"] for row in ckpt["history"] if "lr" in row]
    assert lrs[0] < lrs[1] == lrs[-1] == 1e-3  # warmup, then Adam's learning rate


@pytest.mark.parametrize("every", [1, 2])  # 2: --eval-every a multiple of --log-every
def test_diverging_loss_stops_and_never_saves_a_diverged_state(photo_dir, tmp_path, every):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 200, "--eval-every", every,
            "--log-every", 2, "--lr", "1e30", "--warmup", 0, *TINY)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"(loss|validation MSE) is (nan|inf)", r.stdout), r.stdout
    for name in ("ckpt.pt", "best.pt"):
        if (tmp_path / name).exists():
            ckpt = torch.load(tmp_path / name, weights_only=True)
            assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    said = "the last good checkpoint is" if (tmp_path / "ckpt.pt").exists() else "no checkpoint was written"
    assert said in r.stdout, r.stdout


def test_train_with_inception_weights_records_them(photo_dir, tmp_path, inception_net):
    weights = tmp_path / "irv2.safetensors"
    write_safetensors(inception_net.state_dict(), weights)
    # bf16 autocast, as on a GPU: the frozen Inception and the colorizer in the same precision
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--max-steps", 2,
            "--eval-every", 2, "--inception", weights, "--dtype", "bfloat16", *TINY[2:])
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["global_branch"] is True
    assert ckpt["inception"] == {"file": "irv2.safetensors", "sha256": inception.sha256_of(weights)}


def test_fine_tuning_averages_from_the_weights_it_starts_from(photo_dir, tmp_path):
    """--init: the moving average starts at the checkpoint's weights (no ramp
    from a random start), so after two steps it has barely left them, however
    far the weights themselves went. --balance: the shares said, bad values refused."""
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "a", "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    start = runs.averaged_weights(torch.load(tmp_path / "a" / "best.pt", weights_only=True))
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--init", tmp_path / "a" / "best.pt",
            "--max-steps", 1, "--eval-every", 1, "--lr", "1e-2", "--warmup", 0, "--ema", "0.99", "--balance", 1, *TINY)
    assert r.returncode == 0, r.stderr
    assert "data: --balance 1: (names without _) 100%" in r.stdout, r.stdout
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--resume", "--max-steps", 2)  # still a fine-tune
    assert r.returncode == 0, r.stderr
    tuned = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
    key = "encoder.layers.0.0.weight"  # the first conv
    moved, averaged = (tuned[w][key].float() - start[key].float() for w in ("model", "ema"))
    assert moved.norm() > 0 and averaged.norm() < 0.05 * moved.norm()  # 1 - 0.99**2 = 2% of the way
    for bad in ("-1", "nan", "5"):
        one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "c", "--balance", bad, *TINY[:2]),
                       "--balance", "at most 4")


def test_init_fine_tunes_the_bundled_demo(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--init", "demo/colorizer.pt",
            "--max-steps", 2, "--eval-every", 2, "--size", 32, "--batch-size", 2, "--workers", 0)
    assert r.returncode == 0, r.stderr
    tuned = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    demo = torch.load("demo/colorizer.pt", weights_only=True)
    assert tuned["config"] == demo["config"]
    assert tuned["step"] == 2
    before = tuned["history"][0]  # the demo itself, validated on these photos before the first step
    assert before["step"] == 0 and "val_mse" in before and "step 0/2 | val mse" in r.stdout


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_hold_the_same_weights(photo_dir, tmp_path):
    """torchrun --nproc-per-node 2: only rank 0 speaks and writes, and both ranks
    end with the same parameters, those of ckpt.pt (DDP averages the gradients).
    Each rank is train.py run as a script by a wrapper that then saves that
    rank's parameters. BatchNorm's running statistics are each rank's own (the
    last step updates them from its own batch): buffers are not compared."""
    wrapper = tmp_path / "rank.py"
    wrapper.write_text(
        "import os, runpy, sys\nimport torch\n"
        f"train = {os.path.join(HERE, 'train.py')!r}\n"
        "sys.argv, sys.path[0] = [train, *sys.argv[1:]], os.path.dirname(train)\n"
        "net = runpy.run_path(train, run_name='__main__')['net']  # train.py's globals when it has finished\n"
        "torch.save({name: p.detach() for name, p in net.named_parameters()},\n"
        f"           os.path.join({str(tmp_path)!r}, 'rank' + os.environ['RANK'] + '.pt'))\n")
    out = tmp_path / "run"
    r = run("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", 2,
            wrapper, "--data", photo_dir, "--out", out, "--max-steps", 4, "--eval-every", 4,
            "--log-every", 2, *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done: 4 steps") == 1  # only rank 0 speaks
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "ckpt.pt"]
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 4
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert rank0.keys() == rank1.keys() and len(rank0) > 20, sorted(rank0)
    for name, weights in rank0.items():
        assert torch.equal(weights, rank1[name]), name
        assert torch.equal(weights, ckpt["model"][name]), name  # the weights rank 0 saved


def test_coords_switch_through_train_and_init(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "a", "--max-steps", 2, "--eval-every", 2,
            "--model", "baseline", "--coords", "on", *TINY)
    assert r.returncode == 0, r.stderr
    config = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["config"]
    assert config["variant"] == "baseline" and config["coords"] is True
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--init", tmp_path / "a" / "best.pt",
                       "--coords", "off", *TINY[:2]), "--coords off", "--coords on")

