"""Speed and memory of every stage, in one command, as one table.

    python bench.py                         # CPU: several minutes
    python bench.py --device cuda           # GPU: bf16 autocast, channels_last
    python bench.py --device cuda --compile
    python bench.py --quick                 # tiny sizes: every stage runs once (the tests)

Absolute numbers drift on a shared machine; the ratios in the last column are
measured in the same run and hold. FLOPs are counted from the convolutions,
linear layers and attention matmuls of the model actually run (a multiply-add
is 2 FLOPs; a training step is 3x the colorizer's forward plus the frozen
Inception's forward), so on a GPU the model FLOPs utilization is achieved
FLOP/s over the card's dense bf16 peak. The Lab rows run on one CPU thread,
beside OpenCV's and scikit-image's conversions when those happen to be
installed (optional, never required).
"""
import contextlib
import dataclasses
import io
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

import runs  # first: a Ctrl-C while torch loads (seconds) stops in one line
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import colorize
import data
import inception
import lab
import model
import outputs

parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0])  # a bad flag value: one line, exit status 2
parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
parser.add_argument("--compile", action="store_true", help="torch.compile the colorizer for the train step")
parser.add_argument("--photos", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "photos"),
                    help="a folder of real photos for the data and colorize stages (README: The demo model)")
# 1024: 16x the CUDA default; beyond it a batch's own tensors need gigabytes
parser.add_argument("--batch-size", type=runs.number_in(int, 0, 1024), default=0, help="0: 8 on CPU, 64 on CUDA")
parser.add_argument("--peak-tflops", type=runs.number_in(float, 0), default=0,
                    help="the card's dense bf16 peak for the MFU column; 0: from its name (H100 SXM 989, "
                         "H100 PCIe 756, H200 989, A100 312)")
parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: checks that every stage runs; "
                                                          "the numbers mean nothing")
args = parser.parse_args()


def stop(*_):
    print("interrupted: bench.py writes nothing, so nothing is lost", file=sys.stderr)
    sys.exit(130)


# The flags, before any work: a typo costs a second, not a run that dies half-way. A folder
# without photos skips the rows that need them, with a note; so does the default photos/,
# which a fresh clone lacks. A folder named but not there is a typo.
device = runs.device(args.device)
if args.compile and device.type != "cuda":
    runs.fail("--compile: CUDA only (PyTorch's CPU compiler fails on the colorizer's replicate padding)")
if not (os.path.isdir(args.photos) or args.photos == parser.get_default("photos")):
    runs.fail(f"--photos {args.photos}: {'not a folder' if os.path.exists(args.photos) else 'no such folder'}")
signal.signal(signal.SIGINT, stop)
# The photos the data and colorize rows measure with: color photos that decode (train.py passes over
# broken and grayscale ones), listed as every script lists them (no FIFO is opened), checked now.
passed_over, checker = [], data.ImageFolder([], 64)
found = data.find_images(args.photos, passed_over) if os.path.isdir(args.photos) else []
photos = []
for path in found:
    if len(photos) == (4 if args.quick else len(found)):
        break
    reason = checker.load(path)[1]  # None, or why train.py would pass the file over
    (passed_over if reason else photos).append(reason or path)
if found and not photos:
    runs.fail(f"--photos {args.photos}: none of its {len(found)} images is a color photo that decodes (first: "
              f"{passed_over[0]})")
for reason in passed_over:
    print(f"note: passed over {reason}")
if not photos:
    print(f"note: no images in {args.photos}: the data loading, decode + crop, train.py loop and "
          f"colorize.py per image rows are left out\n")

cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
device = torch.device("cuda" if cuda else "cpu")
dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
         "bfloat16": torch.bfloat16}[args.dtype]
batch = args.batch_size or (2 if args.quick else 64 if cuda else 8)
S = 64 if args.quick else 256  # the training crop side
memory_format = torch.channels_last if cuda else torch.contiguous_format
autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
rows = []  # (stage, setting, result, ratio)

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (their headline figures
# assume 2:4 sparsity and are twice these). The first name found in the card's wins.
PEAK_TFLOPS = [("H100 PCIe", 756), ("H100 NVL", 835), ("H200 NVL", 835), ("H100", 989), ("H200", 989), ("A100", 312)]
gpu = torch.cuda.get_device_name() if cuda else ""
peak = args.peak_tflops or next((tf for name, tf in PEAK_TFLOPS if name in gpu), 0)
workers = data.default_workers()  # train.py's --workers default


def timed(fn, repeat, warmup=1):
    """Median seconds of fn() over `repeat` runs after `warmup` runs."""
    repeat, warmup = (1, 0) if args.quick else (repeat, warmup)  # --quick: each stage runs once
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize() if cuda else None
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize() if cuda else None
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def report(stage, setting, result, ratio=""):
    rows.append((stage, setting, result, ratio))
    print(f"{stage:<28} {setting:<34} {result:<24} {ratio}", flush=True)


def count_flops(net, *inputs):
    """Forward FLOPs of one call: convs, linears and attention matmuls."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, model.Attention):
            B, C, H, W = inp[0].shape
            total[0] += 2 * 2 * B * (H * W) ** 2 * C  # scores and context: two N x N x C matmuls
        else:  # a conv or a linear layer: weight[0] holds the inputs of one output value
            total[0] += 2 * m.weight[0].numel() * out.numel()

    layers = (torch.nn.Conv2d, torch.nn.Linear, model.Attention)
    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, layers)]
    with torch.no_grad():
        net(*inputs)
    for h in hooks:
        h.remove()
    return total[0]


def flop_rate(flops, seconds):
    """MFU against the card's peak on a GPU, TFLOP/s on the CPU."""
    if cuda and peak:
        return f"MFU {flops / seconds / (peak * 1e12):.1%}"
    return f"{flops / seconds / 1e12:.2f} TFLOP/s"


# Peak resident memory of this process, from Linux's VmHWM (getrusage's ru_maxrss
# would carry over the parent's peak into a child started from a large process).
PRINT_PEAK = "print('M', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def failed(what, r):
    """A process bench.py started failed (r: its CompletedProcess): its last line
    on stderr, in one line, exit 1; or it was stopped by the same Ctrl-C."""
    if r.returncode in (130, -signal.SIGINT):
        stop()
    last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
    print(f"error: {what} failed: {last}", file=sys.stderr)
    sys.exit(1)


def run_python(code):
    """Run `code` in a fresh Python in this folder; {key: value} of its 'KEY value' lines."""
    r = subprocess.run([sys.executable, "-c", code + "\n" + PRINT_PEAK], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    if r.returncode:
        failed("a measuring process", r)
    return dict(line.split(None, 1) for line in r.stdout.splitlines() if line[:2] in ("M ", "T ", "G "))


where = f"{gpu}, bf16 peak {peak or 'unknown'} TFLOP/s" if cuda else f"{os.cpu_count()} CPU cores"
print(f"device {device} ({where}), {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"batch {batch}, {workers} loader workers\n")

# -----------------------------------------------------------------------------
# Lab round trip on one CPU thread, so the rows compare code rather than cores.
# OpenCV and scikit-image are the outside anchors, measured only where installed.

side = 256 if args.quick else 2048
rgb_np = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)   # (H, W, 3)
rgb_t = data.to_tensor(rgb_np)                                               # (3, H, W)
mp = side * side / 1e6
threads = torch.get_num_threads()
torch.set_num_threads(1)
t_ours = timed(lambda: lab.lab_to_rgb(lab.rgb_to_lab(rgb_t)), repeat=3)
ours = lab.rgb_to_lab(rgb_t).permute(1, 2, 0).numpy()                       # (H, W, 3) Lab
error = (lab.lab_to_rgb(lab.rgb_to_lab(rgb_t)) - rgb_t).abs().max().item()
report("lab round trip", f"{side}x{side} float32, lab.py, 1 thread", f"{mp / t_ours:.1f} MP/s",
       f"round trip max abs error {error:.0e}")
anchors = []  # (name, rgb -> Lab, Lab -> rgb), both on (H, W, 3) float32 in [0, 1]
with contextlib.suppress(ImportError):
    import cv2
    cv2.setNumThreads(1)
    anchors.append((f"OpenCV {cv2.__version__}", lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2Lab),
                    lambda x: cv2.cvtColor(x, cv2.COLOR_Lab2RGB)))
with contextlib.suppress(ImportError):
    import skimage.color
    anchors.append((f"scikit-image {skimage.__version__}", skimage.color.rgb2lab, skimage.color.lab2rgb))
for name, to_lab, to_rgb in anchors:
    t = timed(lambda: to_rgb(to_lab(rgb_np)), repeat=3)
    diff = np.abs(to_lab(rgb_np) - ours).max()
    report("", f"{name}, 1 thread", f"{mp / t:.1f} MP/s",
           f"{t_ours / t:.2f}x lab.py's speed; Lab max abs diff {diff:.0e}")
torch.set_num_threads(threads)
if cuda:
    rgb_gpu = rgb_t.to(device)
    t = timed(lambda: lab.lab_to_rgb(lab.rgb_to_lab(rgb_gpu)), repeat=3)
    report("", "lab.py on the GPU", f"{mp / t:.0f} MP/s", f"{t_ours / t:.0f}x one CPU thread")
del rgb_np, rgb_t, ours

# -----------------------------------------------------------------------------
# Inception embedding and colorizer forward at S x S

inception_net = inception.InceptionResNetV2().eval().requires_grad_(False).to(device, memory_format=memory_format)
gray = torch.rand(batch, 3, S, S, device=device)
with autocast:
    t_inception = timed(lambda: inception.inception_embedding(inception_net, gray), repeat=3)
inception_flops = count_flops(inception_net, torch.zeros(1, 3, 299, 299, device=device))
report("inception embedding", f"{S} -> 299, batch {batch}", f"{batch / t_inception:.1f} img/s",
       flop_rate(inception_flops * batch, t_inception))

l = torch.rand(batch, 1, S, S, device=device).contiguous(memory_format=memory_format) * 2 - 1
emb = torch.randn(batch, 1000, device=device)
for variant in ("attention", "baseline"):
    net = model.Colorizer(model.ColorizerConfig(variant=variant)).to(device, memory_format=memory_format).eval()
    with torch.no_grad(), autocast:
        t = timed(lambda: net(l, emb), repeat=3)
    report("colorizer forward", f"{variant}, {S}x{S}, batch {batch}", f"{batch / t:.1f} img/s")

# -----------------------------------------------------------------------------
# training step: forward + backward + Adam on random tensors, with the global
# branch (the frozen Inception runs in every step, as in train.py) and without


def bare_step(net, l, target, frozen=None):
    """One forward + backward + Adam step of net on fixed tensors, as a closure."""
    step_net = torch.compile(net) if args.compile else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        with autocast:
            emb = None if frozen is None else inception.inception_embedding(frozen, lab.gray_rgb(l))
            loss = F.mse_loss(step_net(l, emb).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


target = torch.rand(batch, 2, S, S, device=device) * 2 - 1
bare_rates = {}
for name, variant, global_branch in [("attention + global", "attention", True), ("attention", "attention", False),
                                     ("baseline", "baseline", False)]:
    net = model.Colorizer(model.ColorizerConfig(variant=variant, global_branch=global_branch))
    net = net.to(device, memory_format=memory_format)
    frozen = inception_net if global_branch else None
    t = timed(bare_step(net, l, target, frozen), repeat=5 if cuda else 3, warmup=3 if args.compile else 1)
    flops = 3 * count_flops(net, l, emb if global_branch else None) + (inception_flops * batch if global_branch else 0)
    report("train step (bare)", f"{name}, {S}x{S}, batch {batch}", f"{batch / t:.1f} img/s", flop_rate(flops, t))
    bare_rates[name] = batch / t
share = bare_rates["attention + global"] * t_inception / batch  # the embedding's seconds over the step's
report("", "the Inception's share of the step", f"{share:.0%}",
       f"{bare_rates['attention'] / bare_rates['attention + global']:.2f}x the img/s without it")
del net, l, emb, target, inception_net, gray

# -----------------------------------------------------------------------------
# data loading: decoded, cropped uint8 images per second per loader worker, the
# workers the measured training step needs, and a DataLoader with the default

if photos:
    files = [photos[i * len(photos) // 64] for i in range(64)]  # spread over the folder, not its first 64
    for stage, setting, cache_mb in [("data loading", f"{len(photos)} photos -> {S} crops", 0),
                                     ("", "the same, decoded once (--cache)", 1024)]:  # train.py's default
        dataset = data.ImageFolder(files, S, train=True, cache_mb=cache_mb)
        per_worker = len(files) / timed(lambda: [dataset[i] for i in range(len(dataset))], repeat=3)
        need = {name: math.ceil(rate / per_worker) for name, rate in bare_rates.items()}
        report(stage, setting, f"{per_worker:.0f} crops/s/worker",
               f"workers needed: {need['attention + global']} (attention + global), {need['baseline']} (baseline)")
    batches = max(8, 4 * workers)  # enough that the start-up of the workers is a small part
    loader = torch.utils.data.DataLoader(data.ImageFolder(files * (batches * batch // len(files) + 1), S),
                                         batch_size=batch, num_workers=workers, collate_fn=data.collate,
                                         worker_init_fn=data.ignore_ctrl_c)  # Ctrl-C: bench.py alone says it
    it = iter(loader)
    next(it)  # the workers start and fill their queues
    t0, n = time.perf_counter(), 0
    for rgb, _ in it:
        n += len(rgb)
    rate = n / (time.perf_counter() - t0)
    report("", f"DataLoader, --workers {workers}, batch {batch}", f"{rate:.0f} crops/s",
           f"{rate / bare_rates['attention + global']:.3g}x the attention + global step")
    del loader, it

# Decode paths at ImageNet's typical size and at 12 megapixels, made from the
# photos (upscaled, with a little grain so they do not compress unrealistically
# well). data.load_image(draft=...) is the path train.py takes: the JPEG
# decoder itself works at 1/2, 1/4 or 1/8 scale while the short side stays at
# least twice the crop, so even the smallest crops (a quarter of the area)
# keep about the crop's resolution.
if photos:
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for w, h in [(500, 375), (1600, 1200) if args.quick else (4000, 3000)]:
            made = []
            for i, p in enumerate(photos[:4]):
                im = np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BICUBIC), np.int16)
                grain = rng.integers(-4, 5, im.shape, dtype=np.int16)
                made.append(os.path.join(tmp, f"{w}x{h}_{i}.jpg"))
                Image.fromarray(np.clip(im + grain, 0, 255).astype(np.uint8)).save(made[-1], quality=90)

            def reduced(p):  # decode all of it, then box-average by the largest factor that keeps 2x the crop
                im = data.load_image(p)[0]
                return im.reduce(max(1, min(im.size) // (2 * S)))
            t_full = None
            for name, decode in [("full decode", lambda p: data.load_image(p)[0]), ("full decode + reduce", reduced),
                                 ("JPEG draft (train.py)", lambda p: data.load_image(p, draft=2 * S)[0])]:
                t = timed(lambda: [data.random_resized_crop(decode(p), S) for p in made], repeat=3) / len(made)
                t_full = t_full or t
                report("decode + crop" if name == "full decode" else "", f"{w}x{h} JPEG, {name}",
                       f"{t * 1000:.1f} ms ({1 / t:.0f}/s)", f"{t_full / t:.1f}x full decode")

# -----------------------------------------------------------------------------
# the real train.py loop against the bare step of the same model and batch

if photos:
    with tempfile.TemporaryDirectory() as tmp:
        size, steps, loop_batch = (32, 4, 4) if args.quick else (S, 60, batch) if cuda else (128, 30, 16)
        # The photos several times over (symlinks) in train/, so that an epoch holds
        # many batches, as a real data set does, and every loader worker has work;
        # in val/, mirrored copies: train.py refuses to validate on photos it trains
        # on byte for byte, which a hash split of the links would (one photo: always).
        folder = os.path.join(tmp, "photos")
        os.makedirs(os.path.join(folder, "train"))
        os.makedirs(os.path.join(folder, "val"))
        for copy in range(math.ceil(20 * loop_batch / len(photos))):
            for k, p in enumerate(photos):  # numbered: photos of one name in two folders stay two
                os.symlink(os.path.abspath(p), os.path.join(folder, "train", f"{copy}_{k}_{os.path.basename(p)}"))
        for k, p in enumerate(photos[:4]):
            mirrored = data.load_image(p)[0].transpose(Image.FLIP_LEFT_RIGHT).convert("RGB")
            mirrored.save(os.path.join(folder, "val", f"{k}_{os.path.splitext(os.path.basename(p))[0]}.jpg"),
                          quality=90)
        cmd = [sys.executable, "train.py", "--data", folder, "--inception", "none", "--out", os.path.join(tmp, "run"),
               "--size", str(size), "--batch-size", str(loop_batch), "--max-steps", str(steps),
               "--eval-every", str(steps), "--val-images", "16", "--log-every", str(max(1, steps // 6)),
               "--device", device.type, "--workers", str(workers)] + (["--compile"] if args.compile else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        if out.returncode:
            failed("train.py", out)
        rates = [float(line.split(" img/s")[0].split("| ")[-1]) for line in out.stdout.splitlines() if " img/s" in line]
        rates = rates[1:] or rates  # the first interval includes start-up
        loop_rate = sum(rates) / len(rates)
        net = model.Colorizer(model.ColorizerConfig(global_branch=False)).to(device, memory_format=memory_format)
        l = torch.rand(loop_batch, 1, size, size, device=device).contiguous(memory_format=memory_format)
        target = torch.rand(loop_batch, 2, size, size, device=device)
        bare = loop_batch / timed(bare_step(net, l, target), repeat=5, warmup=3 if args.compile else 1)
        report("train.py loop", f"attention, {size}x{size}, batch {loop_batch}", f"{loop_rate:.1f} img/s",
               f"{loop_rate / bare:.0%} of bare ({bare:.1f} img/s)")
        del net

# -----------------------------------------------------------------------------
# colorize.py per image against the bare forward at the same sizes; 24 MP peak memory

with tempfile.TemporaryDirectory() as tmp:
    net = model.Colorizer(model.ColorizerConfig(global_branch=False)).eval()
    ckpt = os.path.join(tmp, "ckpt.pt")
    torch.save({"config": dataclasses.asdict(net.config), "model": net.state_dict(), "args": {"size": S}}, ckpt)
    if photos:
        some, net = photos[:16], net.to(device)
        sizes = [colorize.network_size(*Image.open(p).size, S) for p in some]

        def colorize_run(out):
            """Seconds a photo of colorize.main on `some` (its checkpoint load included), quiet."""
            quiet, handlers = io.StringIO(), {signum: signal.getsignal(signum) for signum in runs.STOP_SIGNALS}
            t = time.perf_counter()
            try:
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    status = colorize.main(some + ["-o", out, "--checkpoint", ckpt, "--device", device.type])
            except SystemExit as e:  # a stop signal while it ran: its handler exits 130
                status = e.code
            for signum, handler in handlers.items():  # colorize.main made them its own
                signal.signal(signum, handler)
            if status:
                failed("colorize.py", subprocess.CompletedProcess([], status, "", quiet.getvalue()))
            return (time.perf_counter() - t) / len(some)

        def forwards():
            with torch.no_grad():
                for w, h in sizes:
                    net(torch.zeros(1, 1, h, w, device=device))
        # Each run of colorize.py beside a bare forward at the same sizes: a shared machine slows
        # both alike, so the ratio of a pair holds where one run's milliseconds do not.
        forwards()  # the first call at a size sets up its kernels
        pairs = [(colorize_run(os.path.join(tmp, f"out{k}")), timed(forwards, 1, warmup=0) / len(some))
                 for k in range(1 if args.quick else 5)]
        times, bares, ratios = (sorted(x) for x in zip(*[(c, b, c / b) for c, b in pairs]))
        mid = len(pairs) // 2
        report("colorize.py per image", f"{len(some)} photos, net short side {S}, median of {len(pairs)} runs",
               f"{times[mid] * 1000:.0f} ms ({times[0] * 1000:.0f}-{times[-1] * 1000:.0f})",
               f"{ratios[mid]:.2f}x bare forward ({bares[mid] * 1000:.0f} ms; {ratios[0]:.2f}x-{ratios[-1]:.2f}x)")
        # Where its time goes, photo by photo: milliseconds, the median over the photos
        loaded, stages = colorize.load(ckpt, device.type), {}

        def clock(stage, work, *inputs):
            t = time.perf_counter()
            result = work(*inputs)
            stages.setdefault(stage, []).append(time.perf_counter() - t)
            return result
        for p in some:
            rgb = clock("read", lambda: data.open_image(p)[0])  # decode, EXIF orientation, ICC profile
            (ab, _, _), = clock("resize + padded forward", colorize.predict_all, loaded, [rgb])
            colored = clock("Lab at full size", colorize.full_resolution, rgb, ab, device.type)
            clock("PNG + atomic write", outputs.save_output, colored, os.path.join(tmp, "stage.png"))
        report("", "its stages, median over the photos", ", ".join(
            f"{stage} {sorted(t)[len(t) // 2] * 1000:.1f}" for stage, t in stages.items()) + " ms")
    big_w, big_h = (600, 400) if args.quick else (6000, 4000)
    big = os.path.join(tmp, "big.jpg")
    src = Image.open(photos[0]) if photos else Image.new("RGB", (64, 64), (90, 120, 60))
    src.convert("RGB").resize((big_w, big_h), Image.BILINEAR).save(big, quality=90)
    peak_rss = int(run_python(f"import colorize; colorize.main([{big!r}, '--checkpoint', {ckpt!r}, "
                              f"'--device', 'cpu', '-o', {tmp!r}])")["M"]) / 1024
    base = int(run_python("import colorize")["M"]) / 1024
    report(f"colorize.py {big_w * big_h / 1e6:.2g} MP", f"{big_w}x{big_h} JPEG, CPU", f"peak RSS {peak_rss:.0f} MB",
           f"{peak_rss - base:.0f} MB above imports")

# -----------------------------------------------------------------------------
# the attention block at growing sizes: fused kernel against the explicit N x N path

for px in (64,) if args.quick else (256, 512, 1024):
    n = (px // 8) ** 2
    # In a fresh process each, so that the peak (RSS on the CPU, allocated on the GPU) is the block's own
    code = (f"import torch, model, time\ntorch.manual_seed(0)\natt = model.Attention(256).to({str(device)!r})\n"
            f"h = torch.randn(1, 256, {px // 8}, {px // 8}, device={str(device)!r})\n"
            "with torch.no_grad():\n    att(h, return_attention=RW)\n    t = time.perf_counter()\n"
            "    att(h, return_attention=RW)\n    torch.cuda.synchronize() if h.is_cuda else None\n"
            "    print('T', time.perf_counter() - t)\n"
            "print('G', round(torch.cuda.max_memory_allocated() / 1024) if h.is_cuda else 0)\n")
    results = {}
    for rw in (False, True):
        vals = run_python(code.replace("RW", str(rw)))
        results[rw] = (float(vals["T"]), int(vals["G" if cuda else "M"]) / 1024)
    (tf, mf), (tw, mw) = results[False], results[True]
    what = "peak" if cuda else "peak RSS"
    report("attention block", f"{px} px input, N={n}, N x N = {n * n * 4 / 2**20:.0f} MB",
           f"sdpa {tf * 1000:.0f} ms, {what} {mf:.0f} MB", f"explicit {tw * 1000:.0f} ms, {mw:.0f} MB")

print("\n| stage | setting | result | ratio (same run) |\n|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
