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
run's files safe (checking every flag and file before any work, the run
folder, checkpoints, Ctrl-C and SIGTERM) lives in runs.py, the Inception and
its weights in inception.py.
"""
import copy

import runs  # first: a Ctrl-C while torch loads (seconds) stops in one line
import torch
import torch.nn.functional as F

import data
import inception
import lab
import model
from runs import number_in

# -----------------------------------------------------------------------------
# args: each flag checks its own range (a bad value: one line, exit status 2)

parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0],
                             formatter_class=runs.argparse.ArgumentDefaultsHelpFormatter)
flags = parser.add_argument_group("data")
flags.add_argument("--data", required=True, metavar="DIR", help="images (recursive); DIR/train + DIR/val if present")
flags.add_argument("--size", type=runs.crop_size, default=256, help="training crop side in pixels, a multiple of 8")
flags.add_argument("--min-crop", type=number_in(float, 0, 1, True), default=0.25, help="least share of a photo cropped")
flags.add_argument("--val-fraction", type=number_in(float, 0, 1, True, True), default=data.VAL_FRACTION,
                   help="share of the photos held out for validation by a hash of their name (without DIR/val)")
flags.add_argument("--workers", type=number_in(int, 0, 256), default=data.default_workers(), help="loader processes")
flags.add_argument("--cache", type=number_in(int, 0, 1 << 20), default=1024, metavar="MB",
                   help="decode training photos once and keep up to this many MB in memory; 0: off")
flags.add_argument("--balance", type=number_in(float, 0, 4), default=0.0, metavar="POWER", help="draw a photo with "
                   "weight 1/n**POWER, n the photos of its source (folder, name up to _); 1: every source alike")
flags = parser.add_argument_group("model")
flags.add_argument("--model", choices=["attention", "baseline"],
                   help="attention (default): the paper's; baseline: Deep Koalarization (no attention, no coords)")
flags.add_argument("--coords", choices=["on", "off"], help="CoordConv input channels (default: on with attention)")
flags.add_argument("--inception", type=runs.inception_choice, metavar="auto|none|PATH",
                   help="auto (default): timm's ImageNet weights (cached or downloaded); none: no global branch")
flags.add_argument("--width", type=number_in(int, 2, 1024), help="channels of the first encoder conv (default 64)")
flags.add_argument("--padding", choices=["zeros", "replicate"], help="replicate (default) or zeros (the paper's)")
flags.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights (fine-tuning), at step 0")
flags = parser.add_argument_group("optimization")
flags.add_argument("--batch-size", type=number_in(int, 1, 4096), default=16, help="images per step per process")
flags.add_argument("--lr", type=number_in(float, 0, 1e30, low_open=True), default=1e-3, help="Adam's learning rate")
flags.add_argument("--warmup", type=number_in(int, 0, 10**9), default=100, help="steps of linear learning-rate warmup")
flags.add_argument("--ema", type=number_in(float, 0, 1, False, True), default=0.999, metavar="DECAY",
                   help="validate (and keep in best.pt) a moving average of the weights; 0: off")
flags.add_argument("--max-steps", type=number_in(int, 1, 10**9), default=20000, help="optimizer steps in total")
flags.add_argument("--seed", type=number_in(int, 0, 2**32 - 1), default=0)
flags = parser.add_argument_group("system")
flags.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
flags.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
flags.add_argument("--compile", action="store_true", help="torch.compile the colorizer (CUDA only)")
flags = parser.add_argument_group("output")
flags.add_argument("--out", default="out", help="run folder: checkpoint, logs, curves, samples")
flags.add_argument("--log-every", type=number_in(int, 1, 10**9), default=10, help="steps between log lines")
flags.add_argument("--eval-every", type=number_in(int, 1, 10**9), default=500, help="steps between checkpoints")
flags.add_argument("--val-images", type=number_in(int, 1, 10**9), default=500, help="validation images, at most")
flags.add_argument("--resume", action="store_true", help="continue the run saved in --out/ckpt.pt")
flags.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
args = parser.parse_args()
# Every flag, file and checkpoint is checked now, before any work, and the run folder is locked. Only rank 0
# logs and writes files; the log is flushed, so log files fill as it runs.
start = runs.start_training(parser, args)
log, config = start.log, start.config

# -----------------------------------------------------------------------------
# device, seed, precision (distributed: each rank its GPU)

device, rank, world = runs.start_device(args)  # and --dtype auto: bfloat16 on CUDA, float32 on the CPU
autocast = torch.autocast(device.type, dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32")
scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "float16")  # only fp16 needs scaling
memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

# -----------------------------------------------------------------------------
# data: uint8 RGB crops from the loader, Lab on the device

val_set = runs.checked(data.validation_set, start.val_files, args.size, args.val_images, log,
                       start.train_files if data.held_out_by_hash(args.data) else None,
                       said=f"--data {data.printable(args.data)}")  # none usable: one line
train_set = data.ImageFolder(start.train_files, args.size, train=True, min_area=args.min_crop, cache_mb=args.cache,
                             seed=args.seed)
weights = data.balance_weights(start.train_files, args.balance) if args.balance else None  # --balance: by source
log(data.describe(args, train_set, val_set, weights, world))
# The stream of photos goes on where a resumed run stopped: start.draws draws (all ranks) are behind it.
data_iter = data.batches(train_set, args.batch_size, args.workers, start.note_skipped, seed=args.seed, rank=rank,
                         world=world, pin_memory=device.type == "cuda", weights=weights, start=start.draws)


def to_network(rgb):
    """uint8 RGB (B, 3, S, S) -> the network's input L (B, 1, S, S) and its target a*b* (B, 2, S, S), on the device."""
    lightness, ab = lab.lab_to_net(lab.rgb_to_lab(rgb.to(device, non_blocking=True)))
    return lightness.contiguous(memory_format=memory_format), ab

# -----------------------------------------------------------------------------
# model: a new one, --resume's last weights (the same run goes on) or --init's (fine-tuning)


inception_net, inception_record = runs.start_inception(start, device, memory_format) if config.global_branch \
    else (None, None)  # the frozen Inception: the one a checkpoint was trained with, if it was
net = (start.net or model.Colorizer(config)).to(device, memory_format=memory_format)
log(f"colorizer: {config}, {sum(p.numel() for p in net.parameters()):,} parameters")
# The moving average of the weights (and BatchNorm statistics): on little data it generalizes better.
ema_net = (start.ema_net or copy.deepcopy(net)).to(device, memory_format=memory_format).requires_grad_(False) \
    if args.ema > 0 else None
train_net = runs.wrap_for_training(net, args.compile, device)  # torch.compile, DistributedDataParallel


def embed(lightness):  # the global branch: (B, 1, H, W) -> (B, 1000) Inception logits of the gray image, or None
    return inception_net and inception.inception_embedding(inception_net, lab.gray_rgb(lightness.float()))


# (average, weight) pairs, made once: state-dict tensors share storage with the modules.
ema_pairs = list(zip(ema_net.state_dict().values(), net.state_dict().values())) if ema_net else []


@torch.no_grad()
def update_ema(step):
    """average = d * average + (1 - d) * weights, d ramping up from 0 so that
    the random initialization soon fades from the average; from --init, the
    average starts at weights worth keeping, so d is --ema from the start."""
    d = args.ema if start.fine_tune else min(args.ema, (1 + step) / (10 + step))
    for average, weight in ema_pairs:
        if average.is_floating_point():
            average.lerp_(weight, 1 - d)
        else:
            average.copy_(weight)  # BatchNorm's batch counter

# -----------------------------------------------------------------------------
# optimizer: Adam (paper 4.1), after a linear warmup


optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)


def lr_at(step):
    return args.lr * min(1.0, (step + 1) / max(1, args.warmup))


# --resume: the optimizer, history and best so far (over again if validation is on other photos)
run = runs.Run(args, start, inception_record, val_set.files, optimizer, world)

# -----------------------------------------------------------------------------
# evaluate(): the validation MSE against the all-gray prediction's


@torch.no_grad()
def evaluate(colorizer, n_samples=6):
    """Validation MSE on a*b*/128 (the training loss), PSNR on uint8 RGB and the
    MSE of predicting no color at all; samples.png for the first n_samples."""
    colorizer.eval()
    sq_err, gray_err, n_values, psnrs, samples = 0.0, 0.0, 0, [], []
    for i in range(0, len(val_set), args.batch_size):
        rgb, reasons = data.collate([val_set[j] for j in range(i, min(i + args.batch_size, len(val_set)))])
        start.note_skipped(reasons)
        lightness, ab = to_network(rgb)
        with autocast:
            pred = colorizer(lightness, embed(lightness)).float()
        sq_err += F.mse_loss(pred, ab, reduction="sum").item()
        gray_err += ab.pow(2).sum().item()  # all-gray predicts ab = 0: the bar to clear
        n_values += ab.numel()
        out = lab.to_uint8(lab.lab_to_rgb(lab.net_to_lab(lightness.float(), pred)))  # (B, 3, S, S) uint8
        psnrs += lab.psnr(out, rgb.to(device)).clamp(max=100).tolist()  # clamp: a perfect image is inf
        for k in range(min(len(rgb), n_samples - len(samples))):
            gray = lab.to_uint8(lab.gray_rgb(lightness[k].float()))
            samples.append(torch.cat([gray, out[k], rgb[k].to(device)], dim=2))  # (3, S, 3S)
    net.train()
    if samples:
        run.write_samples(samples)
    return sq_err / n_values, sum(psnrs) / len(psnrs), gray_err / n_values

# -----------------------------------------------------------------------------
# the loop (Ctrl-C or SIGTERM: the step in hand is saved, then it stops)


for step in range(start.step, args.max_steps + 1):
    last_step = run.last_step = step == args.max_steps
    run.stop_if_asked(step, net, ema_net)

    # evaluate and save: before the first step (the untrained or --init model), every --eval-every steps, after the last
    if start.is_main and (step % args.eval_every == 0 or last_step) and (step > start.step or not args.resume):
        run.begin_validation(step)  # no diverged state is validated or saved
        val_mse, val_psnr, gray_mse = evaluate(ema_net or net)
        row = {"step": step, "val_mse": val_mse, "val_psnr": val_psnr, "val_mse_gray": gray_mse}
        if ema_net:  # the last step's weights too, to see what the average buys
            row["val_mse_raw"] = evaluate(net, n_samples=0)[0]
        is_best = run.add_validation(row)
        log(f"step {step}/{args.max_steps} | val mse {val_mse:.5f} ({val_mse / gray_mse:.2f}x all-gray"
            + (f"; last weights {row['val_mse_raw']:.5f})" if ema_net else ")")
            + f" | val psnr {val_psnr:.2f} dB" + (" | best so far" if is_best else ""))
        # best.pt: the weights this validation judged (the average, with --ema), when they are the best so far
        run.save_checkpoint(step, net, ema_net, (ema_net or net).state_dict() if is_best else None)
    if last_step:
        break

    # the training step: lightness in, a*b* out, MSE between a*b* and the truth
    rgb = runs.checked(next, data_iter)  # ValueError: every file unreadable or grayscale, nothing to learn from
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
    run.add_loss(step + 1, loss, len(rgb) * world, lr_at(step))  # summed on the device; logged every --log-every

run.finish()  # the last evaluation above wrote the checkpoint, log and plots
