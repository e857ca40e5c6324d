"""Train the colorizer: L in, a*b* out, mean squared error between them.

    python train.py --data demo/photos --inception none --width 32 --size 128 --max-steps 800   # CPU, 10 min
    python train.py --data DIR                                   # one GPU: the paper's model
    python train.py --data MY_PHOTOS --init demo/colorizer.pt    # fine-tune a model
    torchrun --nproc-per-node 8 train.py --data DIR              # every GPU of a node

Paper sections 3 and 4: photos become Lab on the device (lab.py); the network
sees L and predicts a*b* (model.py); the loss is MSE on a*b*; Adam at 1e-3,
Xavier decoder init; the global branch is a frozen ImageNet Inception-ResNet-v2
(downloaded on first use, or --inception PATH, or none). Validation compares
the model with the all-gray prediction (a*b* = 0), the bar every colorizer must
clear. Into --out: ckpt.pt (the latest, for --resume), best.pt (the best
validation, what colorize.py uses), log.csv, loss.png (the paper's Figures 5
and 6) and samples.png (gray | prediction | truth, its Figure 4). What keeps a
run's files safe (the run folder, checkpoints, Ctrl-C and SIGTERM) lives in runs.py,
the Inception and its weights in inception.py.
"""
import copy
import math
import os
import random
import signal
import sys
import time

signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # Ctrl-C while torch loads (seconds): no traceback
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import data  # noqa: E402
import inception  # noqa: E402
import lab  # noqa: E402
import model  # noqa: E402
import runs  # noqa: E402

# -----------------------------------------------------------------------------
# args

parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0],  # a bad flag value: one line, exit status 2
                             formatter_class=runs.argparse.ArgumentDefaultsHelpFormatter)
flags = parser.add_argument_group("data")
flags.add_argument("--data", required=True, metavar="DIR", help="folder of images (recursive); DIR/train + DIR/val if present")
flags.add_argument("--size", type=int, default=256, help="training crop side in pixels, a multiple of 8")
flags.add_argument("--min-crop", type=float, default=0.25, help="a crop covers at least this share of its photo")
flags.add_argument("--val-fraction", type=float, default=data.VAL_FRACTION,
                   help="share of the photos held out for validation by a hash of their name (without DIR/val)")
flags.add_argument("--workers", type=int, default=data.default_workers(),
                   help="loader processes: about 300 crops/s each from JPEGs, 900 from --cache (bench.py)")
flags.add_argument("--cache", type=int, default=1024, metavar="MB",
                   help="decode training photos once and keep up to this many MB in memory; 0: off")
flags.add_argument("--balance", type=float, default=0.0, metavar="POWER",
                   help="sample a photo with weight 1/n**POWER, n the photos of its source (its folder and "
                        "name up to the first _): 0 every photo alike, 1 every source alike")
flags = parser.add_argument_group("model")
flags.add_argument("--model", choices=["attention", "baseline"],
                   help="attention (default): the paper's; baseline: Deep Koalarization (no attention, no coords)")
flags.add_argument("--coords", choices=["on", "off"], help="CoordConv input channels (default: on with attention)")
flags.add_argument("--inception", metavar="auto|none|PATH",
                   help="auto (default): timm's ImageNet weights (cached or downloaded); none: no global branch")
flags.add_argument("--width", type=int, help="channels of the first encoder conv (default 64, as the paper)")
flags.add_argument("--padding", choices=["zeros", "replicate"],
                   help="beyond the edge: replicate (default: no colored frame) or zeros (the paper's)")
flags.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tuning), at step 0")
flags = parser.add_argument_group("optimization")
flags.add_argument("--batch-size", type=int, default=16, help="images per step per process")
flags.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (the paper's 1e-3)")
flags.add_argument("--warmup", type=int, default=100, help="steps of linear learning-rate warmup")
flags.add_argument("--schedule", choices=["constant", "cosine", "step"], default="constant",
                   help="after warmup: constant, cosine to 0, or x0.1 at 50%% and 75%% of --max-steps")
flags.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's decoupled weight decay")
flags.add_argument("--ema", type=float, default=0.999, metavar="DECAY",
                   help="validate (and keep in best.pt) a moving average of the weights; 0: off")
flags.add_argument("--max-steps", type=int, default=20000, help="optimizer steps in total")
flags.add_argument("--seed", type=int, default=0)
flags = parser.add_argument_group("system")
flags.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
flags.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
flags.add_argument("--compile", action="store_true", help="torch.compile the colorizer (CUDA, PyTorch 2)")
flags = parser.add_argument_group("output")
flags.add_argument("--out", default="out", help="run folder: checkpoint, logs, curves, samples")
flags.add_argument("--log-every", type=int, default=10, help="steps between log lines")
flags.add_argument("--eval-every", type=int, default=500, help="steps between validation, samples, checkpoint")
flags.add_argument("--val-images", type=int, default=500, help="at most this many validation images")
flags.add_argument("--resume", action="store_true", help="continue the run saved in --out/ckpt.pt")
flags.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run, replacing it")
args = parser.parse_args()
flags_given = runs.flags_given(parser, args)
for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 still print
    stream.reconfigure(errors="backslashreplace")
is_main = int(os.environ.get("RANK", 0)) == 0  # only rank 0 logs and writes files
runs.on_stop_signals(lambda *_: runs.fail("interrupted before training began: nothing written", 130))
log = (lambda *a: print(*a, flush=True)) if is_main else (lambda *a: None)  # flushed: log files fill as it runs

# Every flag and file is checked now, before any work: the first problem, one line, exit status 2.
ckpt = runs.start_checkpoint(args)  # what --resume continues or --init starts from, or None
source = f"--resume {os.path.join(args.out, runs.CHECKPOINT)}" if args.resume else f"--init {args.init}"
start_step = ckpt["step"] if args.resume else 0
if args.resume:  # the run's own recipe, except the flags typed now (said) and this process's own
    runs.resume_recipe(parser, args, ckpt, flags_given, source, log)
fine_tune = bool(args.init or (ckpt or {}).get("args", {}).get("init"))  # also when --resume continues one
for flag, ok, must in [
        ("--size", 8 <= args.size <= 2048 and args.size % 8 == 0, "a multiple of 8 from 8 to 2048"),
        ("--batch-size", args.batch_size >= 1, "at least 1"),
        ("--lr", math.isfinite(args.lr) and args.lr > 0, "a positive number"),
        ("--warmup", args.warmup >= 0, "0 or more"),
        ("--weight-decay", math.isfinite(args.weight_decay) and args.weight_decay >= 0, "0 or more"),
        ("--ema", 0 <= args.ema < 1, "from 0 (off) up to, not including, 1"),
        ("--max-steps", args.max_steps > start_step,
         f"more than the {start_step} steps the run has done" if start_step else "at least 1"),
        ("--width", args.width is None or 2 <= args.width <= 1024, "from 2 to 1024 (at 1 the decoder has no channels)"),
        ("--workers", args.workers >= 0, "0 or more"),
        ("--cache", args.cache >= 0, "0 or more"),
        ("--balance", 0 <= args.balance <= 4 and ("RANK" not in os.environ or not args.balance),
         "from 0 to 4, and 0 under torchrun"),
        ("--val-fraction", 0 < args.val_fraction < 1, "between 0 and 1"),
        ("--min-crop", 0 < args.min_crop <= 1, "a share of the area, above 0 and at most 1"),
        ("--val-images", args.val_images >= 1, "at least 1"),
        ("--log-every", args.log_every >= 1, "at least 1"),
        ("--eval-every", args.eval_every >= 1, "at least 1"),
        ("--seed", 0 <= args.seed < 2**32, "from 0 to 2^32 - 1"),
        ("--inception", args.inception in (None, "auto", "none") or os.path.isfile(args.inception),
         "auto, none or a weights file (a regular file that exists)"),
        ("--device", args.device != "cuda" or torch.cuda.is_available(), "auto or cpu: no CUDA device is available"),
        ("--compile", not args.compile or (args.device != "cpu" and torch.cuda.is_available()),
         "left out on the CPU: PyTorch's CPU compiler fails on replicate padding (it runs on CUDA)")]:
    if not ok:
        runs.fail(f"{flag} must be {must}, got {getattr(args, flag[2:].replace('-', '_'))}")
config = runs.checked(model.config_from_flags, args, ckpt, source)  # a checkpoint's own: flags may restate it
# --init: the averaged weights it was judged by, which must fit and be finite: said now, before any work
init_net = runs.checked(model.from_checkpoint, ckpt, said=source) if args.init else None
# --inception PATH: read and judged now too (auto, which may download, waits for the model section)
given_inception = runs.checked(inception.open_inception, args.inception, (ckpt or {}).get("inception"),
                               said=f"--inception {args.inception}") \
    if config.global_branch and args.inception not in (None, "auto", "none") else None
problems = []  # unreadable folders, FIFOs: passed over, said once
try:
    train_files, val_files = data.split_images(args.data, args.val_fraction, problems, run_folder=args.out)
except ValueError as e:
    runs.fail(f"--data {e}")
for problem in problems:
    log(f"warning: {problem}")
lock = runs.prepare_folder(args, log, ckpt) if is_main else None  # held until the process ends

# -----------------------------------------------------------------------------
# device, seed, precision, distributed

distributed = "RANK" in os.environ  # set by torchrun
args.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else "cpu")
if device.type == "cuda":
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
rank, world = 0, 1
if distributed:  # the device named, so collectives (the final barrier) know which GPU is this rank's
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    rank, world = dist.get_rank(), dist.get_world_size()
random.seed(args.seed + rank)
torch.manual_seed(args.seed + rank)
if args.dtype == "auto":
    args.dtype = "bfloat16" if device.type == "cuda" else "float32"
autocast = torch.autocast(device.type, dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32")
scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "float16")  # only fp16 needs scaling
memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

# -----------------------------------------------------------------------------
# data: uint8 RGB crops from the loader, Lab on the device

val_set = data.validation_set(val_files, args.size, args.val_images, log,
                             spare=train_files if data.held_out_by_hash(args.data) else None)
train_set = data.ImageFolder(train_files, args.size, train=True, min_area=args.min_crop, cache_mb=args.cache,
                             seed=args.seed)
if args.cache:
    log(f"data: {train_set.cache_note}{' in each training process' if distributed else ''}")
if not len(val_set):
    runs.fail(f"--data {args.data}: no readable color image among the {len(val_files)} validation files")
log(f"data: {len(train_files)} training and {len(val_set)} validation images in {args.data}")
weights = data.balance_weights(train_files, args.balance) if args.balance else None  # --balance: by source
if weights:
    log(f"data: --balance {args.balance:g}: {data.source_shares(train_files, weights, args.data)}")
skipped = set()  # one-line reasons, each file reported once


def note_skipped(reasons):
    for reason in set(reasons) - skipped:
        skipped.add(reason)
        log(f"warning: skipped {reason}")


# The stream of photos goes on where a resumed run stopped: draws_done draws (all ranks) are behind it.
draws_done = (ckpt.get("draws", start_step * args.batch_size * world) if args.resume else 0)
data_iter = data.batches(train_set, args.batch_size, args.workers, note_skipped, seed=args.seed, rank=rank,
                         world=world, pin_memory=device.type == "cuda", weights=weights, start=draws_done)


def to_network(rgb):
    """uint8 RGB (B, 3, S, S) -> lightness (B, 1, S, S) in [-1, 1] and a*b*/128
    (B, 2, S, S) on the device: the network's input and its target."""
    lightness, ab = lab.lab_to_net(lab.rgb_to_lab(rgb.to(device, non_blocking=True)))
    return lightness.contiguous(memory_format=memory_format), ab

# -----------------------------------------------------------------------------
# model: a new one, --resume (the same run goes on) or --init (fine-tuning)


args.inception = args.inception or "auto"
inception_net, inception_record = None, (ckpt or {}).get("inception")
if config.global_branch:  # the frozen Inception: the one the checkpoint was trained with, if it was
    if distributed and args.inception == "auto":  # one download, then the other ranks find it in the cache
        if is_main:
            runs.checked(inception.default_inception_path)
        dist.barrier()
    inception_net, inception_record, _ = given_inception or runs.checked(inception.open_inception, args.inception,
                                                                         inception_record)
    inception_net = inception_net.to(device, memory_format=memory_format)
    log(f"inception: {inception_record['file']} (sha256 {inception_record['sha256'][:12]}...)")
net = init_net or model.Colorizer(config)
if args.resume:  # the last step's weights
    runs.checked(model.load_weights, net, ckpt["model"], said=source)
if args.init:
    log(f"initialized from {args.init} (step {ckpt.get('step', '?')} of its run)")
net = net.to(device, memory_format=memory_format)
log(f"colorizer: {config}, {sum(p.numel() for p in net.parameters()):,} parameters")
# The moving average of the weights (and BatchNorm statistics): on a small data
# set it is smoother and generalizes better than the last step's weights.
ema_net = copy.deepcopy(net).requires_grad_(False) if args.ema > 0 else None
if ema_net is not None and args.resume and ckpt.get("ema"):
    runs.checked(model.load_weights, ema_net, ckpt["ema"], said=source)
train_net = torch.compile(net) if args.compile else net
if distributed:
    train_net = torch.nn.parallel.DistributedDataParallel(
        train_net, device_ids=[device.index] if device.type == "cuda" else None)


def embed(lightness):
    """The global branch: (B, 1, H, W) -> (B, 1000) Inception logits of the gray
    image, or None without one."""
    return None if inception_net is None else inception.inception_embedding(inception_net, lab.gray_rgb(lightness.float()))


# (average, weight) pairs, made once: state-dict tensors share storage with the modules.
ema_pairs = list(zip(ema_net.state_dict().values(), net.state_dict().values())) if ema_net else []


@torch.no_grad()
def update_ema(step):
    """average = d * average + (1 - d) * weights, d ramping up from 0 so that
    the random initialization soon fades from the average; from --init, the
    average starts at weights worth keeping, so d is --ema from the start."""
    d = args.ema if fine_tune else min(args.ema, (1 + step) / (10 + step))
    for average, weight in ema_pairs:
        if average.is_floating_point():
            average.lerp_(weight, 1 - d)
        else:
            average.copy_(weight)  # BatchNorm's batch counter

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


run = runs.Run(args, config, inception_record, stream=(start_step, draws_done, args.batch_size * world),
               validation=val_set.files, training=train_files)
if args.resume:  # the optimizer, history and best so far (over again if validation is on other photos)
    run.restore(ckpt, optimizer, log)
    log(f"resumed from {run.path[runs.CHECKPOINT]} at step {start_step}")
del ckpt

# -----------------------------------------------------------------------------
# evaluate(): the validation MSE against the all-gray prediction's


def to_uint8(rgb):
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def evaluate(colorizer, n_samples=6):
    """Validation MSE on a*b*/128 (the training loss), PSNR on uint8 RGB and the
    MSE of predicting no color at all; samples.png for the first n_samples."""
    colorizer.eval()
    sq_err, gray_err, n_values, psnrs, samples = 0.0, 0.0, 0, [], []
    for i in range(0, len(val_set), args.batch_size):
        rgb, reasons = data.collate([val_set[j] for j in range(i, min(i + args.batch_size, len(val_set)))])
        note_skipped(reasons)
        lightness, ab = to_network(rgb)
        with autocast:
            pred = colorizer(lightness, embed(lightness)).float()
        sq_err += F.mse_loss(pred, ab, reduction="sum").item()
        gray_err += ab.pow(2).sum().item()  # all-gray predicts ab = 0: the bar to clear
        n_values += ab.numel()
        out = to_uint8(lab.lab_to_rgb(lab.net_to_lab(lightness.float(), pred))).float()
        psnrs += lab.psnr(out, rgb.to(device)).clamp(max=100).tolist()  # clamp: a perfect image is inf
        for k in range(min(len(rgb), n_samples - len(samples))):
            gray = to_uint8(lab.gray_rgb(lightness[k].float()))
            samples.append(torch.cat([gray, out[k].to(torch.uint8), rgb[k].to(device)], dim=2))  # (3, S, 3S)
    net.train()
    if samples:
        run.write_samples(samples)
    return sq_err / n_values, sum(psnrs) / len(psnrs), gray_err / n_values

# -----------------------------------------------------------------------------
# the loop


stop = runs.StopRequest(run, log) if not distributed else None  # Ctrl-C: save the step in hand, then stop
if distributed:
    runs.stop_every_rank(run, log)  # every rank stops at once; the last checkpoint stands
# The loss is summed on the device, so the GPU never waits for a per-step .item();
# it is read, and checked for NaN/inf, before anything is logged or saved.
loss_sum, loss_count, images = torch.zeros((), device=device), 0, 0
t_interval = time.monotonic()
eta = runs.Eta(args.max_steps, done=start_step)  # from the recent rate: it follows a machine that gets busy
for step in range(start_step, args.max_steps + 1):
    last_step = step == args.max_steps
    if stop and stop.requested and not last_step:  # Ctrl-C: save the step in hand and stop
        run.stop(step, start_step, net, ema_net, optimizer, loss_sum.item(), log)

    # evaluate and save: before the first step (the untrained or --init model), every --eval-every steps, after the last
    if is_main and (step % args.eval_every == 0 or last_step) and (step > start_step or not args.resume):
        run.stop_if_diverged(step, "loss", loss_sum.item(), log)
        t_eval = time.monotonic()
        val_mse, val_psnr, gray_mse = evaluate(ema_net or net)
        row = {"step": step, "val_mse": val_mse, "val_psnr": val_psnr, "val_mse_gray": gray_mse}
        if ema_net:  # the last step's weights too, to see what the average buys
            row["val_mse_raw"] = evaluate(net, n_samples=0)[0]
        run.stop_if_diverged(step, "validation MSE", val_mse, log)
        is_best, run.best_mse = val_mse < run.best_mse, min(run.best_mse, val_mse)
        run.history.append(row)
        log(f"step {step}/{args.max_steps} | val mse {val_mse:.5f} ({val_mse / gray_mse:.2f}x all-gray"
            + (f"; last weights {row['val_mse_raw']:.5f})" if ema_net else ")")
            + f" | val psnr {val_psnr:.2f} dB" + (" | best so far" if is_best else ""))
        # best.pt: the weights this validation judged (the average, with --ema), when they are the best so far
        run.save_checkpoint(step, net, ema_net, optimizer, (ema_net or net).state_dict() if is_best else None)
        run.write_log()
        t_interval += time.monotonic() - t_eval  # validation is not throughput
        eta.pause()
    if last_step:
        break

    # the training step: lightness in, a*b* out, MSE between a*b* and the truth
    try:
        rgb = next(data_iter)
    except ValueError as e:  # every file unreadable or grayscale: nothing to learn from
        runs.fail(str(e).strip().splitlines()[-1].removeprefix("ValueError: "))
    lightness, ab = to_network(rgb)                                   # (B, 1, S, S), (B, 2, S, S)
    with autocast:
        loss = F.mse_loss(train_net(lightness, embed(lightness)).float(), ab)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if ema_net:
        update_ema(step)

    # log
    loss_sum, loss_count, images = loss_sum + loss.detach(), loss_count + 1, images + len(rgb) * world
    if (step + 1) % args.log_every == 0 or step + 1 == args.max_steps:
        run.stop_if_diverged(step + 1, "loss", loss_sum.item(), log)
        now = time.monotonic()
        run.add_loss({"step": step + 1, "loss": loss_sum.item() / loss_count, "lr": lr_at(step),
                      "img_per_s": images / (now - t_interval)},
                     eta=eta.update(step + 1), log=log)
        loss_sum, loss_count, images, t_interval = torch.zeros((), device=device), 0, 0, now

# -----------------------------------------------------------------------------
# done (the last evaluation above wrote the checkpoint, log and plots)

run.finished = True  # a Ctrl-C from here on has nothing to save
gray_count = sum("grayscale" in s for s in skipped)
log(f"done: {args.max_steps} steps, checkpoint {run.path[runs.CHECKPOINT]}, best {run.path[runs.BEST]} "
    f"(validation MSE {run.best_mse:.5f}). Skipped {len(skipped) - gray_count} "
    f"unreadable files and left out {gray_count} grayscale photos.")
if distributed:
    dist.barrier()  # the others wait for rank 0's last evaluation, or it finds its peers gone
    dist.destroy_process_group()
