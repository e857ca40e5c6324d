"""Train the colorizer: one readable loop, CUDA first, CPU welcome, DDP by torchrun.

    python train.py --data DIR                               # one GPU, or the CPU
    python train.py --data DIR --inception none --max-steps 200   # no Inception weights
    torchrun --nproc-per-node 8 train.py --data DIR          # every GPU of a node

Paper sections 3.1, 3.6 and 4: Lab targets, MSE on a*b*, Adam at 1e-3, Xavier
decoder init; the global branch is a frozen ImageNet Inception-ResNet-v2 (timm's
weights, downloaded on first use, or --inception PATH). Writes into --out:
ckpt.pt, log.csv, loss.png (train and validation curves, the paper's Figures
5 and 6) and samples.png (gray | prediction | truth, its Figure 4).
"""
import argparse
import csv
import dataclasses
import math
import os
import random
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image, ImageDraw

import data
import lab
import model

# -----------------------------------------------------------------------------
# args

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
g = parser.add_argument_group("data")
g.add_argument("--data", required=True, metavar="DIR", help="folder of images (recursive); DIR/train + DIR/val if present")
g.add_argument("--size", type=int, default=256, help="training crop side in pixels, a multiple of 8")
g.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data loader processes")
g = parser.add_argument_group("model")
g.add_argument("--model", choices=["attention", "baseline"], default="attention",
               help="attention: the paper's model; baseline: Deep Koalarization (no attention, no coords)")
g.add_argument("--inception", default="auto", metavar="auto|none|PATH",
               help="auto: timm's ImageNet weights (cached or downloaded); none: no global branch; or a PATH")
g.add_argument("--width", type=int, default=64, help="channels of the first encoder conv (64 as the paper)")
g = parser.add_argument_group("optimization")
g.add_argument("--batch-size", type=int, default=16, help="images per step per process")
g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the paper's 1e-3)")
g.add_argument("--max-steps", type=int, default=20000, help="optimizer steps in total")
g.add_argument("--seed", type=int, default=0)
g = parser.add_argument_group("system")
g.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
               help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
g.add_argument("--compile", action="store_true", help="torch.compile the colorizer (CUDA, PyTorch 2)")
g = parser.add_argument_group("output")
g.add_argument("--out", default="out", help="run folder: checkpoint, logs, curves, samples")
g.add_argument("--log-every", type=int, default=10, help="steps between log lines")
g.add_argument("--eval-every", type=int, default=500, help="steps between validation, samples, checkpoint")
g.add_argument("--val-images", type=int, default=500, help="at most this many validation images")
g.add_argument("--resume", action="store_true", help="continue the run saved in --out/ckpt.pt")
args = parser.parse_args()


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if args.size % 8:
    fail(f"--size must be a multiple of 8, got {args.size}")

# -----------------------------------------------------------------------------
# device, seed, precision, distributed

distributed = "RANK" in os.environ  # set by torchrun
if args.device == "auto":
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
if args.device == "cuda" and not torch.cuda.is_available():
    fail("--device cuda, but no CUDA device is available")
rank, world = 0, 1
if distributed:
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else "cpu")
if device.type == "cuda":
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
master = rank == 0  # only rank 0 logs and writes files
log = (lambda *a: print(*a, flush=True)) if master else (lambda *a: None)  # flushed: log files fill as it runs
random.seed(args.seed + rank)
torch.manual_seed(args.seed + rank)

if args.dtype == "auto":
    args.dtype = "bfloat16" if device.type == "cuda" else "float32"
amp_dtype = getattr(torch, args.dtype)
autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=args.dtype != "float32")
scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "float16")  # only fp16 needs scaling
memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

# -----------------------------------------------------------------------------
# data

try:
    train_files, val_files = data.split_images(args.data)
except ValueError as e:
    fail(e)
val_files = val_files[:args.val_images]
log(f"data: {len(train_files)} training and {len(val_files)} validation images in {args.data}")
train_set = data.ImageFolder(train_files, args.size, train=True)
val_set = data.ImageFolder(val_files, args.size, train=False)
sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed) if distributed else \
    torch.utils.data.RandomSampler(train_set)
loader = torch.utils.data.DataLoader(
    train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
    collate_fn=data.collate, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    drop_last=len(train_set) >= args.batch_size * world, prefetch_factor=4 if args.workers else None)
skipped = set()  # one-line reasons, each file reported once


def note_skipped(reasons):
    for reason in reasons:
        if reason not in skipped:
            skipped.add(reason)
            log(f"warning: skipped {reason}")


def batches():
    """Batches forever, one epoch after another (a new shuffle each epoch)."""
    epoch = 0
    while True:
        if distributed:
            sampler.set_epoch(epoch)
        for rgb, reasons in loader:
            note_skipped(reasons)
            yield rgb
        epoch += 1


def to_network(rgb):
    """uint8 RGB (B, 3, S, S) on the host -> (l, ab) in network units on the device,
    the Lab conversion batched on the device."""
    lab_img = lab.rgb_to_lab(rgb.to(device, non_blocking=True))   # uint8 in, float32 Lab out
    l, ab = lab.lab_to_net(lab_img)                               # (B, 1, S, S), (B, 2, S, S)
    return l.contiguous(memory_format=memory_format), ab


# -----------------------------------------------------------------------------
# model (Inception weights, resume)

ckpt_path = os.path.join(args.out, "ckpt.pt")
ckpt = None
if args.resume:
    if not os.path.exists(ckpt_path):
        fail(f"--resume: no checkpoint at {ckpt_path}")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        config = model.ColorizerConfig(**ckpt["config"])
    except Exception as e:  # unpickling errors come in many classes; all mean "not resumable"
        fail(f"--resume: {ckpt_path} is not a train.py checkpoint ({e.__class__.__name__})")
    inception_record = ckpt["inception"]
else:
    config = model.ColorizerConfig(variant=args.model, global_branch=args.inception != "none",
                                   width=args.width)
    inception_record = None

inception = None
if config.global_branch:
    try:
        if args.inception == "auto":
            if master:  # one download, then the other ranks find it in the cache
                inception_path = model.default_inception_path()
            if distributed:
                dist.barrier()
            inception_path = model.default_inception_path(download=False)
        else:
            inception_path = args.inception
        if not os.path.exists(inception_path):
            raise ValueError(f"{inception_path}: no such file")
        inception = model.load_inception(inception_path).to(device, memory_format=memory_format)
    except (ValueError, RuntimeError) as e:
        fail(e)
    record = {"file": os.path.basename(inception_path), "sha256": model.sha256_of(inception_path)}
    if inception_record and inception_record["sha256"] != record["sha256"]:
        fail(f"{inception_path} is not the Inception the checkpoint was trained with "
             f"({inception_record['file']}, sha256 {inception_record['sha256'][:12]}...)")
    inception_record = record
    log(f"inception: {inception_path} (sha256 {record['sha256'][:12]}...)")

net = model.Colorizer(config).to(device, memory_format=memory_format)
log(f"colorizer: {config}, {sum(p.numel() for p in net.parameters()):,} parameters")
if ckpt:
    net.load_state_dict(ckpt["model"])
train_net = torch.compile(net) if args.compile else net
if distributed:
    train_net = torch.nn.parallel.DistributedDataParallel(
        train_net, device_ids=[device.index] if device.type == "cuda" else None)


def embed(l):
    """(B, 1, H, W) network L -> (B, 1000) Inception logits, or None without a global branch."""
    if inception is None:
        return None
    return model.inception_embedding(inception, lab.gray_rgb(l.float()))

# -----------------------------------------------------------------------------
# optimizer


optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
start_step, history = 0, []  # history: one dict per logged step and per evaluation
if ckpt:
    optimizer.load_state_dict(ckpt["optimizer"])
    start_step, history = ckpt["step"], ckpt["history"]
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(ckpt["rng"]["python"])
    log(f"resumed from {ckpt_path} at step {ckpt['step']}")
    del ckpt


def save_checkpoint(step):
    """step: the number of optimizer steps done so far, where --resume starts."""
    state = {"config": dataclasses.asdict(config), "model": net.state_dict(),
             "optimizer": optimizer.state_dict(), "step": step, "history": history,
             "inception": inception_record, "args": vars(args),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}
    data.save_atomic(lambda p: torch.save(state, p), ckpt_path)


def write_log_csv():
    columns = ["step", "loss", "img_per_s", "val_mse", "val_psnr"]

    def write(path):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows({k: row.get(k, "") for k in columns} for row in history)
    data.save_atomic(write, os.path.join(args.out, "log.csv"))


def plot_curves(path, width=640, height=400, pad=56):
    """loss.png: training loss (blue) and validation MSE (orange) against step, log scale."""
    series = [([(r["step"], r["loss"]) for r in history if "loss" in r], (31, 119, 180)),
              ([(r["step"], r["val_mse"]) for r in history if "val_mse" in r], (255, 127, 14))]
    points = [p for s, _ in series for p in s if p[1] > 0]
    if len(points) < 2:
        return
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) or 1
    y0, y1 = math.log10(min(p[1] for p in points)), math.log10(max(p[1] for p in points))
    y1 = y1 if y1 > y0 else y0 + 1

    def xy(step, value):
        return (pad + (step - x0) / max(x1 - x0, 1) * (width - 2 * pad),
                height - pad - (math.log10(value) - y0) / (y1 - y0) * (height - 2 * pad))
    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    for frac in (0, 0.5, 1):  # axis labels
        value = 10 ** (y0 + frac * (y1 - y0))
        draw.text((4, xy(x0, value)[1] - 6), f"{value:.4f}", fill="black")
        step = round(x0 + frac * (x1 - x0))
        draw.text((xy(step, 10 ** y0)[0] - 12, height - pad + 6), str(step), fill="black")
    for s, color in series:
        s = [p for p in s if p[1] > 0]
        if len(s) > 1:
            draw.line([xy(*p) for p in s], fill=color, width=2)
        for p in s[-1:] if len(s) > 1 else s:
            x, y = xy(*p)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    draw.text((pad, 16), "MSE (ab/128) against step, log scale", fill="black")
    draw.text((width - pad - 110, 16), "train", fill=series[0][1])
    draw.text((width - pad - 70, 16), "validation", fill=series[1][1])
    data.save_atomic(lambda p: img.save(p, format="PNG"), path)


def to_uint8(rgb):
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)

# -----------------------------------------------------------------------------
# evaluate()


@torch.no_grad()
def evaluate(n_samples=6):
    """Validation MSE on ab/128 (the training loss) and PSNR on uint8 RGB per
    image (REFERENCE.md), and samples.png for the first few validation images."""
    net.eval()
    sq_err, n_pixels, psnrs, rows = 0.0, 0, [], []
    for i in range(0, len(val_set), args.batch_size):
        rgb, reasons = data.collate([val_set[j] for j in range(i, min(i + args.batch_size, len(val_set)))])
        note_skipped(reasons)
        l, ab = to_network(rgb)
        with autocast:
            pred = net(l, embed(l)).float()
        sq_err += F.mse_loss(pred, ab, reduction="sum").item()
        n_pixels += ab.numel()
        out = to_uint8(lab.lab_to_rgb(lab.net_to_lab(l.float(), pred))).float()
        psnrs += lab.psnr(out, rgb.to(device)).clamp(max=100).tolist()  # clamp: a perfect image is inf
        for k in range(min(len(rgb), n_samples - len(rows))):
            gray = to_uint8(lab.gray_rgb(l[k].float()))
            rows.append(torch.cat([gray, out[k].to(torch.uint8), rgb[k].to(device)], dim=2))
    net.train()
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).cpu().numpy()   # (rows*S, 3*S, 3)
    data.save_atomic(lambda p: Image.fromarray(grid).save(p, format="PNG"), os.path.join(args.out, "samples.png"))
    return sq_err / n_pixels, sum(psnrs) / len(psnrs)

# -----------------------------------------------------------------------------
# loop


if master:
    os.makedirs(args.out, exist_ok=True)
data_iter = batches()
# The loss is summed on the device, so the GPU never waits for a per-step .item();
# it is read, and checked for NaN/inf, before anything is logged or saved.
t_interval, images_interval, loss_sum, loss_count = time.time(), 0, torch.zeros((), device=device), 0
t_start, step_start = time.time(), start_step


def stop_if_diverged(step):
    if not torch.isfinite(loss_sum):
        log(f"error: loss is {loss_sum.item()} by step {step}; stopping. The last good checkpoint "
            f"is {ckpt_path}; try a lower --lr or --dtype float32.")
        sys.exit(1)


for step in range(start_step, args.max_steps + 1):
    last_step = step == args.max_steps

    if master and (step % args.eval_every == 0 or last_step) and step > start_step:
        stop_if_diverged(step)
        t_eval = time.time()
        val_mse, val_psnr = evaluate()
        history.append({"step": step, "val_mse": val_mse, "val_psnr": val_psnr})
        log(f"step {step}/{args.max_steps} | val mse {val_mse:.5f} | val psnr {val_psnr:.2f} dB")
        save_checkpoint(step)
        write_log_csv()
        plot_curves(os.path.join(args.out, "loss.png"))
        t_interval += time.time() - t_eval  # evaluation time is not training throughput
        t_start += time.time() - t_eval
    if last_step:
        break

    try:
        rgb = next(data_iter)
    except ValueError as e:  # every file unreadable or grayscale: nothing to learn from
        fail(str(e).strip().splitlines()[-1].removeprefix("ValueError: "))
    l, ab = to_network(rgb)
    with autocast:
        pred = train_net(l, embed(l))
        loss = F.mse_loss(pred.float(), ab)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()

    loss_sum += loss.detach()
    loss_count += 1
    images_interval += len(rgb) * world
    if (step + 1) % args.log_every == 0 or step + 1 == args.max_steps:
        stop_if_diverged(step + 1)
        interval_loss = loss_sum.item() / loss_count
        now = time.time()
        img_per_s = images_interval / (now - t_interval)
        done = step + 1 - step_start
        eta = (now - t_start) / done * (args.max_steps - step - 1)
        history.append({"step": step + 1, "loss": interval_loss, "img_per_s": img_per_s})
        log(f"step {step + 1}/{args.max_steps} | loss {interval_loss:.5f} | "
            f"{img_per_s:.1f} img/s | eta {int(eta // 60)}m{int(eta % 60):02d}s")
        t_interval, images_interval, loss_count = now, 0, 0
        loss_sum.zero_()

# -----------------------------------------------------------------------------
# final save (the last evaluation above wrote the checkpoint, log and plots)

gray_count = sum("grayscale" in s for s in skipped)
log(f"done: {args.max_steps} steps, checkpoint {ckpt_path}. Skipped {len(skipped) - gray_count} "
    f"unreadable files and left out {gray_count} grayscale photos.")
if distributed:
    dist.barrier()  # the others wait for rank 0's last evaluation, or it finds its peers gone
    dist.destroy_process_group()
