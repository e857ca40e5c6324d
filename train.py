"""Train the colorizer: one readable loop, CUDA first, CPU welcome, DDP by torchrun.

    python train.py --data DIR                               # one GPU, or the CPU
    python train.py --data DIR --inception none --max-steps 200   # no Inception weights
    python train.py --data MY_PHOTOS --init demo/colorizer.pt     # fine-tune a model
    torchrun --nproc-per-node 8 train.py --data DIR          # every GPU of a node

Paper sections 3.1, 3.6 and 4: Lab targets, MSE on a*b*, Adam at 1e-3, Xavier
decoder init; the global branch is a frozen ImageNet Inception-ResNet-v2 (timm's
weights, downloaded on first use, or --inception PATH). Writes into --out:
ckpt.pt (the latest, for --resume), best.pt (the lowest
validation MSE so far, what colorize.py uses), log.csv, loss.png (train and validation curves, the paper's Figures
5 and 6) and samples.png (gray | prediction | truth, its Figure 4).
"""
import argparse
import copy
import csv
import dataclasses
import io
import math
import os
import random
import signal
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
g.add_argument("--min-crop", type=float, default=0.25,
               help="a training crop covers at least this share of its photo's area (and at most all of it)")
g.add_argument("--val-fraction", type=float, default=data.VAL_FRACTION,
               help="share of the photos held out for validation by a hash of their path (without DIR/val)")
g.add_argument("--workers", type=int, default=data.default_workers(),
               help="data loader processes per training process: its CPU cores less one for the loop. "
                    "A worker makes about 300 crops/s decoding 768 px JPEGs, about 900 from photos decoded "
                    "once (--cache), so a step of N img/s needs about N/300 or N/900 (bench.py prints "
                    "'workers needed'); 0: load in the training process")
g.add_argument("--cache", type=int, default=1024, metavar="MB",
               help="decode training photos once and keep up to this many MB of them in memory (a photo "
                    "of 768 px is about 1.5 MB at --size 256): the loader then only crops them, 2-3x "
                    "faster; each training process keeps its own; 0: decode for every crop")
g = parser.add_argument_group("model")
g.add_argument("--model", choices=["attention", "baseline"],
               help="attention (default): the paper's model; baseline: Deep Koalarization (no attention, no coords)")
g.add_argument("--inception", metavar="auto|none|PATH",
               help="auto (default): timm's ImageNet weights (cached or downloaded); none: no global branch; or a PATH")
g.add_argument("--width", type=int, help="channels of the first encoder conv (default 64, as the paper)")
g.add_argument("--padding", choices=["zeros", "replicate"],
               help="what the convolutions see beyond the edge: replicate (the default: no colored frame) "
                    "or zeros (the paper's; twice as fast a step on a GPU)")
g.add_argument("--init", metavar="CKPT",
               help="start from this checkpoint's weights and architecture (fine-tuning): fresh optimizer, step 0")
g = parser.add_argument_group("optimization")
g.add_argument("--batch-size", type=int, default=16, help="images per step per process")
g.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (the paper's 1e-3)")
g.add_argument("--warmup", type=int, default=100, help="steps of linear learning-rate warmup")
g.add_argument("--schedule", choices=["constant", "cosine", "step"], default="constant",
               help="after warmup: constant, cosine decay to 0, or x0.1 at 50%% and again at 75%% of --max-steps")
g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's decoupled weight decay")
g.add_argument("--ema", type=float, default=0.999, metavar="DECAY",
               help="keep an exponential moving average of the weights (evaluated, kept in best.pt); 0: off")
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
g.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run, replacing it")
args = parser.parse_args()
parser.set_defaults(**{k: None for k in vars(args)})  # a second parse tells which flags were typed:
typed = {k for k, v in vars(parser.parse_args()).items() if v is not None}  # --resume keeps the rest
for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 still print
    stream.reconfigure(errors="backslashreplace")
master = int(os.environ.get("RANK", 0)) == 0  # only rank 0 logs and writes files
signal.signal(signal.SIGINT, lambda *_: sys.exit("interrupted before training began: nothing written"))
log = (lambda *a: print(*a, flush=True)) if master else (lambda *a: None)  # flushed: log files fill as it runs


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_checkpoint(path, flag):
    """A checkpoint's dict, or one line saying why not (never torch's advice to
    unpickle an untrusted file with weights_only=False)."""
    if not os.path.isfile(path):
        fail(f"{flag} {path}: {'a folder, not a checkpoint file' if os.path.isdir(path) else 'no such file'}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model.ColorizerConfig.from_dict(ckpt["config"])
        return ckpt
    except Exception as e:  # unpickling errors come in many classes; all mean "not usable"
        fail(f"{flag} {path}: not a train.py checkpoint ({e.__class__.__name__})")

# -----------------------------------------------------------------------------
# check the flags and files, before any work is done


ckpt_path, best_path = os.path.join(args.out, "ckpt.pt"), os.path.join(args.out, "best.pt")
ckpt = None  # the checkpoint that --resume continues or --init starts from
if args.resume and args.init:
    fail("--resume continues a run, --init starts a new one from a checkpoint: give one of them")
if args.resume:
    ckpt = read_checkpoint(ckpt_path, "--resume")
    if "optimizer" not in ckpt:
        fail(f"--resume: {ckpt_path} holds only a model, not a run to continue; fine-tune from it "
             f"with --init {ckpt_path} and another --out")
    for k, v in ckpt["args"].items():  # the run's own recipe, unless a flag was typed to change it
        if k not in typed and k not in ("resume", "overwrite", "init", "device", "workers", "cache", "compile"):
            setattr(args, k, v)
    changed = [k for k in sorted(typed)
               if k not in ("resume", "out") and ckpt["args"].get(k, getattr(args, k)) != getattr(args, k)]
    log("resume: " + (", ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (was {ckpt['args'].get(k)})"
                                for k in changed) or "with the run's own settings"))
elif os.path.exists(ckpt_path) and not args.overwrite:
    fail(f"--out {args.out} holds a run already: --resume to continue it, --overwrite to start over, "
         f"or another --out")
elif args.init:
    ckpt = read_checkpoint(args.init, "--init")
start_step = ckpt["step"] if args.resume else 0
inception_file = args.inception not in (None, "auto", "none") and args.inception
for flag, ok, must in [
        ("--size", 8 <= args.size <= 2048 and args.size % 8 == 0, "a multiple of 8 from 8 to 2048"),
        ("--batch-size", args.batch_size >= 1, "at least 1"),
        ("--lr", math.isfinite(args.lr) and args.lr > 0, "a positive number"),
        ("--warmup", args.warmup >= 0, "0 or more"),
        ("--weight-decay", math.isfinite(args.weight_decay) and args.weight_decay >= 0, "0 or more"),
        ("--ema", 0 <= args.ema < 1, "from 0 (off) up to, not including, 1"),
        ("--max-steps", args.max_steps > start_step,
         f"more than the {start_step} steps the run has done" if start_step else "at least 1"),
        ("--width", args.width is None or 1 <= args.width <= 1024, "from 1 to 1024"),
        ("--workers", args.workers >= 0, "0 or more"),
        ("--cache", args.cache >= 0, "0 or more"),
        ("--val-fraction", 0 < args.val_fraction < 1, "between 0 and 1"),
        ("--min-crop", 0 < args.min_crop <= 1, "a share of the area, above 0 and at most 1"),
        ("--val-images", args.val_images >= 1, "at least 1"),
        ("--log-every", args.log_every >= 1, "at least 1"),
        ("--eval-every", args.eval_every >= 1, "at least 1"),
        ("--inception", not inception_file or os.path.isfile(inception_file),
         "auto, none or a weights file")]:
    if not ok:
        fail(f"{flag} must be {must}, got {getattr(args, flag[2:].replace('-', '_'))}")
problems = []  # unreadable folders, FIFOs: passed over, said once
try:
    train_files, val_files = data.split_images(args.data, args.val_fraction, problems)
except ValueError as e:
    fail(f"--data {e}")
for problem in problems:
    log(f"warning: {problem}")
if master:  # the run folder can be written now, not only after the first 500 steps
    try:
        os.makedirs(args.out, exist_ok=True)
        probe = os.path.join(args.out, f".write-test{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        fail(f"--out {args.out}: " + ("a file, not a folder" if os.path.isfile(args.out) else
                                     f"cannot write there ({e.strerror})"))
    for name in os.listdir(args.out):  # what an interrupted save left behind (data.save_atomic)
        if ".tmp" in name and name.split(".tmp")[0] in ("ckpt.pt", "best.pt", "log.csv", "loss.png", "samples.png"):
            os.remove(os.path.join(args.out, name))

# -----------------------------------------------------------------------------
# device, seed, precision, distributed

distributed = "RANK" in os.environ  # set by torchrun
if args.device == "auto":
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
if args.device == "cuda" and not torch.cuda.is_available():
    fail("--device cuda, but no CUDA device is available")
rank, world = 0, 1
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else "cpu")
if device.type == "cuda":
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
if distributed:  # the device named, so collectives (the final barrier) know which GPU is this rank's
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    rank, world = dist.get_rank(), dist.get_world_size()
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

t0 = time.time()
train_set = data.ImageFolder(train_files, args.size, train=True, min_area=args.min_crop, cache_mb=args.cache)
if args.cache:
    log(f"data: {train_set.cached_photos()} of the {len(train_files)} training photos decoded into memory once "
        f"({train_set.cached_bytes / 2**20:.0f} MB of --cache {args.cache}"
        f"{' in each training process' if distributed else ''}, {time.time() - t0:.1f} s)")
val_set = data.ImageFolder([], args.size, train=False)
for path in val_files:  # checked now, not after the first --eval-every steps
    if len(val_set) == args.val_images:
        break
    reason = val_set.load(path)[1]
    if reason is None:
        val_set.files.append(path)
    else:
        log(f"warning: validation: skipped {reason}")
if not val_set.files:
    fail(f"--data {args.data}: no readable color image among the {len(val_files)} validation files")
log(f"data: {len(train_files)} training and {len(val_set)} validation images in {args.data}")
sampler = torch.utils.data.DistributedSampler(train_set, seed=args.seed) if distributed else \
    torch.utils.data.RandomSampler(train_set)
loader = torch.utils.data.DataLoader(
    train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
    collate_fn=data.collate, worker_init_fn=data.ignore_ctrl_c, pin_memory=device.type == "cuda",
    persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None,
    drop_last=len(train_set) >= args.batch_size * world)
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
# model: a new one, --resume (the same run goes on) or --init (fine-tuning)

source = ckpt_path if args.resume else args.init
if source:
    config = model.ColorizerConfig.from_dict(ckpt["config"])
    flag = "--resume" if args.resume else "--init"
    for name, asked, has in [("--model", args.model, config.variant), ("--width", args.width, config.width),
                             ("--padding", args.padding, config.padding)]:
        if asked is not None and asked != has:
            fail(f"{name} {asked}, but {flag} {source} is --model {config.variant} --width {config.width} "
                 f"--padding {config.padding}")
    if args.inception == "none" and config.global_branch:
        fail(f"--inception none, but {source} has a global branch: it needs the Inception weights "
             f"(--inception auto or PATH)")
    if args.inception not in (None, "none") and not config.global_branch:
        fail(f"--inception {args.inception}, but {source} has no global branch (trained with --inception none)")
else:
    config = model.ColorizerConfig(variant=args.model or "attention", global_branch=args.inception != "none",
                                   width=args.width or 64, padding=args.padding or model.ColorizerConfig.padding)
args.inception = args.inception or "auto"
inception_record = ckpt.get("inception") if ckpt else None

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
try:
    if args.init:
        model.load_strict(net, model.evaluated_weights(ckpt), args.init)
        log(f"initialized from {args.init} (step {ckpt.get('step', '?')} of its run)")
    elif ckpt:
        model.load_strict(net, ckpt["model"], ckpt_path)
    # The moving average of the weights (and BatchNorm statistics): on a small data
    # set it is smoother and generalizes better than the last step's weights.
    ema_net = copy.deepcopy(net).requires_grad_(False) if args.ema > 0 else None
    if ema_net is not None and args.resume and ckpt.get("ema"):
        model.load_strict(ema_net, ckpt["ema"], ckpt_path)
except ValueError as e:
    fail(e)
train_net = torch.compile(net) if args.compile else net
if distributed:
    train_net = torch.nn.parallel.DistributedDataParallel(
        train_net, device_ids=[device.index] if device.type == "cuda" else None)


def embed(l):
    """(B, 1, H, W) network L -> (B, 1000) Inception logits, or None without a global branch."""
    if inception is None:
        return None
    return model.inception_embedding(inception, lab.gray_rgb(l.float()))


# (average, weight) tensor pairs, made once: a state dict's tensors share storage
# with the module, and both are only ever updated in place.
ema_pairs = list(zip(ema_net.state_dict().values(), net.state_dict().values())) if ema_net is not None else []


@torch.no_grad()
def update_ema(step):
    """ema = d * ema + (1 - d) * weights, with d ramping up from 0 so the early
    average is not dominated by the random initialization."""
    d = min(args.ema, (1 + step) / (10 + step))
    for e, w in ema_pairs:
        if e.is_floating_point():
            e.lerp_(w, 1 - d)
        else:
            e.copy_(w)  # BatchNorm's batch counter

# -----------------------------------------------------------------------------
# optimizer and learning-rate schedule


optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def lr_at(step):
    """Linear warmup over --warmup steps, then --schedule."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.max_steps - args.warmup)  # 0 -> 1 after warmup
    if args.schedule == "cosine":
        return args.lr * 0.5 * (1 + math.cos(math.pi * t))
    if args.schedule == "step":
        return args.lr * (0.1 if t >= 0.5 else 1) * (0.1 if t >= 0.75 else 1)
    return args.lr


start_step, history, best_mse = 0, [], math.inf  # history: one dict per logged step and per evaluation
if args.resume:
    optimizer.load_state_dict(ckpt["optimizer"])
    start_step, history = ckpt["step"], ckpt["history"]
    best_mse = ckpt.get("best_mse", math.inf)
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(ckpt["rng"]["python"])
    log(f"resumed from {ckpt_path} at step {ckpt['step']}")
del ckpt


def save(write, path):
    """data.save_atomic, or stop with one line saying why the file could not be
    written (a full disk, a lost mount); the file it replaces stays whole."""
    try:
        data.save_atomic(write, path)
    except OSError as e:
        kept = f"; {ckpt_path} is the last good checkpoint" if os.path.exists(ckpt_path) else ""
        fail(f"cannot write {path}: {e.strerror or e}{kept}")


def torch_writer(obj):
    """Serialized in memory first, so a failed write surfaces as the OSError
    it is (torch.save to a path reports it as an internal RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)

    def write(path):
        with open(path, "wb") as f:
            f.write(buffer.getbuffer())
    return write


def save_checkpoint(step, is_best):
    """ckpt.pt: everything --resume needs; step is the number of optimizer steps
    done. best.pt, when this evaluation is the best so far: the evaluated
    weights (the average with --ema) and what colorize.py needs."""
    evaluated = ema_net if ema_net is not None else net
    common = {"config": dataclasses.asdict(config), "step": step, "history": history,
              "inception": inception_record, "args": vars(args)}
    state = {**common, "model": net.state_dict(), "optimizer": optimizer.state_dict(), "best_mse": best_mse,
             "ema": ema_net.state_dict() if ema_net is not None else None,
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}
    if is_best:
        save(torch_writer({**common, "model": evaluated.state_dict()}), best_path)
    save(torch_writer(state), ckpt_path)


def write_log_csv():
    columns = ["step", "loss", "lr", "img_per_s", "val_mse", "val_psnr", "val_mse_raw", "val_mse_gray"]

    def write(path):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows({k: row.get(k, "") for k in columns} for row in history)
    save(write, os.path.join(args.out, "log.csv"))


def plot_curves(path, width=640, height=400, pad=56):
    """loss.png: training loss (blue), validation MSE (orange) and the all-gray
    prediction's validation MSE (gray, the bar to clear) against step, log scale."""
    series = [([(r["step"], r["loss"]) for r in history if "loss" in r], (31, 119, 180)),
              ([(r["step"], r["val_mse"]) for r in history if "val_mse" in r], (255, 127, 14)),
              ([(r["step"], r["val_mse_gray"]) for r in history if "val_mse_gray" in r], (150, 150, 150))]
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
    for k, label in enumerate(["train", "validation", "all-gray"]):
        draw.text((width - pad - 170 + 60 * k, 16), label, fill=series[k][1])
    save(lambda p: img.save(p, format="PNG"), path)


def to_uint8(rgb):
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)

# -----------------------------------------------------------------------------
# evaluate()


@torch.no_grad()
def evaluate(colorizer, n_samples=6):
    """Validation MSE on ab/128 (the training loss), PSNR on uint8 RGB per image
    and the MSE of the all-gray prediction; with n_samples,
    samples.png for the first few images."""
    colorizer.eval()
    sq_err, gray_err, n_pixels, psnrs, rows = 0.0, 0.0, 0, [], []
    for i in range(0, len(val_set), args.batch_size):
        rgb, reasons = data.collate([val_set[j] for j in range(i, min(i + args.batch_size, len(val_set)))])
        note_skipped(reasons)
        l, ab = to_network(rgb)
        with autocast:
            pred = colorizer(l, embed(l)).float()
        sq_err += F.mse_loss(pred, ab, reduction="sum").item()
        gray_err += ab.pow(2).sum().item()  # predicting no color at all: the bar to clear
        n_pixels += ab.numel()
        out = to_uint8(lab.lab_to_rgb(lab.net_to_lab(l.float(), pred))).float()
        psnrs += lab.psnr(out, rgb.to(device)).clamp(max=100).tolist()  # clamp: a perfect image is inf
        for k in range(min(len(rgb), n_samples - len(rows))):
            gray = to_uint8(lab.gray_rgb(l[k].float()))
            rows.append(torch.cat([gray, out[k].to(torch.uint8), rgb[k].to(device)], dim=2))
    net.train()
    if rows:
        grid = torch.cat(rows, dim=1).permute(1, 2, 0).cpu().numpy()   # (rows*S, 3*S, 3)
        save(lambda p: Image.fromarray(grid).save(p, format="PNG"), os.path.join(args.out, "samples.png"))
    return sq_err / n_pixels, sum(psnrs) / len(psnrs), gray_err / n_pixels

# -----------------------------------------------------------------------------
# loop


data_iter = batches()
# The loss is summed on the device, so the GPU never waits for a per-step .item();
# it is read, and checked for NaN/inf, before anything is logged or saved.
t_interval, images_interval, loss_sum, loss_count = time.time(), 0, torch.zeros((), device=device), 0
t_start, step_start = time.time(), start_step


def stop_if_diverged(step, what="loss", value=None):
    """A diverged state is never saved: say so, and whether a good checkpoint exists."""
    value = loss_sum.item() if value is None else value
    if not math.isfinite(value):
        good = f"the last good checkpoint is {ckpt_path}" if os.path.exists(ckpt_path) else "no checkpoint was written"
        log(f"error: {what} is {value} by step {step}; stopping without saving ({good}); "
            f"try a lower --lr or --dtype float32.")
        sys.exit(1)


# Ctrl-C: finish the step in hand, save ckpt.pt at that step and stop, so
# --resume continues from there; a second Ctrl-C stops at once (ckpt.pt is
# written atomically, so the last one saved stays whole). Under torchrun every
# rank would stop at a different step: there torchrun's own handling applies.
stop_asked = []


def on_ctrl_c(signum, frame):
    if stop_asked:
        log("error: interrupted again: stopped without saving" +
            (f"; {ckpt_path} is the last good checkpoint" if os.path.exists(ckpt_path) else ""))
        sys.exit(130)
    stop_asked.append(True)
    log("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again to stop at once)")


if not distributed:
    signal.signal(signal.SIGINT, on_ctrl_c)

for step in range(start_step, args.max_steps + 1):
    last_step = step == args.max_steps
    if stop_asked and not last_step:
        stop_if_diverged(step)
        if step > start_step:
            save_checkpoint(step, is_best=False)
            write_log_csv()
        log(f"stopped at step {step}/{args.max_steps}: " +
            (f"{ckpt_path} holds it (--resume continues the run)" if step > start_step else "nothing to save") +
            (f"; {best_path} is the best validation so far" if os.path.exists(best_path) else ""))
        sys.exit(130)

    if master and (step % args.eval_every == 0 or last_step) and step > start_step:
        stop_if_diverged(step)
        t_eval = time.time()
        val_mse, val_psnr, gray_mse = evaluate(ema_net if ema_net is not None else net)
        row = {"step": step, "val_mse": val_mse, "val_psnr": val_psnr, "val_mse_gray": gray_mse}
        if ema_net is not None:  # the last step's weights too, to see what the average buys
            row["val_mse_raw"] = evaluate(net, n_samples=0)[0]
        stop_if_diverged(step, "validation MSE", val_mse)
        history.append(row)
        is_best = val_mse < best_mse
        best_mse = min(best_mse, val_mse)
        log(f"step {step}/{args.max_steps} | val mse {val_mse:.5f} ({val_mse / gray_mse:.2f}x all-gray"
            + (f"; last weights {row['val_mse_raw']:.5f})" if "val_mse_raw" in row else ")")
            + f" | val psnr {val_psnr:.2f} dB" + (" | best so far" if is_best else ""))
        save_checkpoint(step, is_best)
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
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if ema_net is not None:
        update_ema(step)

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
        history.append({"step": step + 1, "loss": interval_loss, "lr": lr_at(step), "img_per_s": img_per_s})
        log(f"step {step + 1}/{args.max_steps} | loss {interval_loss:.5f} | "
            f"{img_per_s:.1f} img/s | eta {int(eta // 60)}m{int(eta % 60):02d}s")
        t_interval, images_interval, loss_count = now, 0, 0
        loss_sum.zero_()

# -----------------------------------------------------------------------------
# final save (the last evaluation above wrote the checkpoint, log and plots)

gray_count = sum("grayscale" in s for s in skipped)
log(f"done: {args.max_steps} steps, checkpoint {ckpt_path}, best {best_path} "
    f"(validation MSE {best_mse:.5f}). Skipped {len(skipped) - gray_count} "
    f"unreadable files and left out {gray_count} grayscale photos.")
if distributed:
    dist.barrier()  # the others wait for rank 0's last evaluation, or it finds its peers gone
    dist.destroy_process_group()
