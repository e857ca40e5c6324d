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
FLOP/s over the card's dense bf16 peak. The Lab row runs on one CPU thread.
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
import torch
from PIL import Image

import colorize
import data
import inception
import lab
import model

HERE = os.path.dirname(os.path.abspath(__file__))
parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0])  # a bad flag value: one line, exit status 2
parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
parser.add_argument("--compile", action="store_true", help="torch.compile the colorizer for the train step")
parser.add_argument("--photos", default=os.path.join(HERE, "photos"),
                    help="a folder of real photos for the data and colorize stages (README: The demo model)")
# 1024: 16x the CUDA default; beyond it a batch's own tensors need gigabytes
parser.add_argument("--batch-size", type=runs.number_in(int, 0, 1024), default=0, help="0: 8 on CPU, 64 on CUDA")
parser.add_argument("--peak-tflops", type=runs.number_in(float, 0), default=0,
                    help="the card's dense bf16 peak for the MFU column; 0: from its name (PEAK_TFLOPS)")
parser.add_argument("--quick", action="store_true", help="tiny sizes, each stage once; the numbers mean nothing")
args = parser.parse_args()


STOPPED = "interrupted: bench.py writes nothing, so nothing is lost"  # on Ctrl-C, SIGTERM or SIGHUP: exit 130


# The flags, before any work: a typo costs a second, not a run that dies half-way. A folder
# without photos skips the rows that need them, with a note; so does the default photos/,
# which a fresh clone lacks. A folder named but not there is a typo.
device = runs.device(args.device)
cuda = device.type == "cuda"
if args.compile and not cuda:
    runs.fail("--compile: CUDA only (PyTorch's CPU compiler fails on the colorizer's replicate padding)")
if not (os.path.isdir(args.photos) or args.photos == parser.get_default("photos")):
    runs.fail(f"--photos {args.photos}: {'not a folder' if os.path.exists(args.photos) else 'no such folder'}")
runs.exit_on_stop(STOPPED)
# The photos the data and colorize rows measure with: color photos that decode (train.py passes over
# broken and grayscale ones), listed as every script lists them (no FIFO is opened), checked now.
passed_over, checker = [], data.ImageFolder([], 64)
found = data.find_images(args.photos, passed_over) if os.path.isdir(args.photos) else []
reasons = {path: checker.load(path)[1] for path in found}  # None, or why train.py would pass the file over
passed_over += [reason for reason in reasons.values() if reason]
photos = [path for path, reason in reasons.items() if not reason][:4 if args.quick else None]
if found and not photos:
    runs.fail(f"--photos {args.photos}: no color photo that decodes among its {len(found)} images ({passed_over[0]})")
for reason in passed_over:
    print(f"note: passed over {reason}")
if photos:  # the train.py loop row trains on the folder as it is: a split train.py refuses is said now
    runs.checked(data.split_images, args.photos, said="--photos")
else:
    print(f"note: no images in {args.photos}: the data loading, train.py loop and colorize.py per image rows "
          f"are left out\n")

if args.dtype == "auto":  # as train.py decides it
    args.dtype = "bfloat16" if cuda else "float32"
batch = args.batch_size or (2 if args.quick else 64 if cuda else 8)
S = 64 if args.quick else 256  # the training crop side
memory_format = torch.channels_last if cuda else torch.contiguous_format
autocast = torch.autocast(device.type, dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32")
rows = []  # (stage, setting, result, ratio)

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (their headline figures
# assume 2:4 sparsity and are twice these). The first name found in the card's wins.
PEAK_TFLOPS = [("H100 PCIe", 756), ("H100 NVL", 835), ("H200 NVL", 835), ("H100", 989), ("H200", 989), ("A100", 312)]
gpu = torch.cuda.get_device_name() if cuda else ""
peak = args.peak_tflops or next((tf for name, tf in PEAK_TFLOPS if name in gpu), 0)
# The only folder bench.py writes to: removed when bench.py exits, however it ends (its finalizer runs at exit)
work = tempfile.TemporaryDirectory(prefix="bench-")


def timed(fn, repeat, warmup=1):
    """Median seconds of fn() over `repeat` runs after `warmup` runs."""
    repeat, warmup = (1, 0) if args.quick else (repeat, warmup)  # --quick: each stage runs once
    times = []
    for _ in range(warmup + repeat):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize() if cuda else None  # the GPU's queued work, done
        times.append(time.perf_counter() - t)
    return sorted(times[warmup:])[repeat // 2]


def report(stage, setting, result, ratio=""):
    rows.append((stage, setting, result, ratio))
    print(f"{stage:<28} {setting:<34} {result:<24} {ratio}", flush=True)


def count_flops(net, *inputs):
    """Forward FLOPs of one call: convs, linears and attention matmuls."""
    flops = []

    def hook(m, inp, out):
        if isinstance(m, model.Attention):
            B, C, H, W = inp[0].shape
            flops.append(2 * 2 * B * (H * W) ** 2 * C)  # scores and context: two N x N x C matmuls
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):  # weight[0]: the inputs of one output value
            flops.append(2 * m.weight[0].numel() * out.numel())
    with torch.no_grad(), torch.nn.modules.module.register_module_forward_hook(hook):  # this call only
        net(*inputs)
    return sum(flops)


def flop_rate(flops, seconds):
    """MFU against the card's peak on a GPU, TFLOP/s on the CPU."""
    return f"MFU {flops / seconds / (peak * 1e12):.1%}" if cuda and peak else f"{flops / seconds / 1e12:.2f} TFLOP/s"


def failed(what, status, stderr):
    """What bench.py ran failed: its last line on stderr, in one line, exit 1;
    or the same Ctrl-C stopped it, and so stops bench.py (its own line, exit 130)."""
    if status in (130, -signal.SIGINT):
        signal.raise_signal(signal.SIGINT)
    runs.fail(f"{what} failed: {(stderr.strip().splitlines() or [f'exit status {status}'])[-1]}", status=1)


def run(what, *argv):
    """Run `python argv` in a fresh process in this folder: its stdout."""
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=HERE)
    if r.returncode:
        failed(what, r.returncode, r.stderr)
    return r.stdout


# Peak resident memory of this process, from Linux's VmHWM (getrusage's ru_maxrss
# would carry over the parent's peak into a child started from a large process).
PRINT_PEAK = "print('M', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def run_python(code):
    """Run `code` in a fresh Python; {key: value} of its 'KEY value' lines (M: its peak RSS in kB)."""
    out = run("a measuring process", "-c", code + "\n" + PRINT_PEAK)
    return dict(line.split(None, 1) for line in out.splitlines() if line[:2] in ("M ", "T ", "G "))


where = f"{gpu}, bf16 peak {peak or 'unknown'} TFLOP/s" if cuda else f"{os.cpu_count()} CPU cores"
print(f"device {device} ({where}), {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"batch {batch}, {data.default_workers()} loader workers (train.py's default)\n")

# -----------------------------------------------------------------------------
# Lab round trip on one CPU thread (and on the GPU, where there is one)

side = 256 if args.quick else 2048
rgb = torch.rand(3, side, side)  # (3, H, W) in [0, 1]
mp = side * side / 1e6
threads = torch.get_num_threads()
torch.set_num_threads(1)
t_cpu = timed(lambda: lab.lab_to_rgb(lab.rgb_to_lab(rgb)), repeat=3)
torch.set_num_threads(threads)
error = (lab.lab_to_rgb(lab.rgb_to_lab(rgb)) - rgb).abs().max().item()
report("lab round trip", f"{side}x{side} float32, lab.py, 1 thread", f"{mp / t_cpu:.1f} MP/s",
       f"round trip max abs error {error:.0e}")
if cuda:
    rgb = rgb.to(device)
    t = timed(lambda: lab.lab_to_rgb(lab.rgb_to_lab(rgb)), repeat=3)
    report("", "lab.py on the GPU", f"{mp / t:.0f} MP/s", f"{t_cpu / t:.0f}x one CPU thread")

# -----------------------------------------------------------------------------
# Inception embedding and colorizer forward at S x S

l = torch.rand(batch, 1, S, S, device=device).contiguous(memory_format=memory_format) * 2 - 1  # lightness
emb = torch.randn(batch, 1000, device=device)
inception_net = inception.InceptionResNetV2().eval().requires_grad_(False).to(device, memory_format=memory_format)
with autocast:  # the gray image of the lightness, as in every training step
    t_inception = timed(lambda: inception.inception_embedding(inception_net, lab.gray_rgb(l)), repeat=3)
inception_flops = count_flops(inception_net, torch.zeros(1, 3, 299, 299, device=device))
report("inception embedding", f"{S} -> 299, batch {batch}", f"{batch / t_inception:.1f} img/s",
       flop_rate(inception_flops * batch, t_inception))

for variant in ("attention", "baseline"):
    net = model.Colorizer(model.ColorizerConfig(variant=variant)).to(device, memory_format=memory_format).eval()
    with torch.no_grad(), autocast:
        t = timed(lambda: net(l, emb), repeat=3)
    report("colorizer forward", f"{variant}, {S}x{S}, batch {batch}", f"{batch / t:.1f} img/s")

# -----------------------------------------------------------------------------
# training step: forward + backward + Adam on random tensors, with the global
# branch (the frozen Inception runs in every step, as in train.py) and without

target = torch.rand(batch, 2, S, S, device=device) * 2 - 1
bare_rates = {}
for name, variant, global_branch in [("attention + global", "attention", True), ("attention", "attention", False),
                                     ("baseline", "baseline", False)]:
    net = model.Colorizer(model.ColorizerConfig(variant=variant, global_branch=global_branch))
    net = net.to(device, memory_format=memory_format)
    step_net = torch.compile(net) if args.compile else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():  # one forward + backward + Adam step of this net on the fixed tensors
        with autocast:
            embedding = inception.inception_embedding(inception_net, lab.gray_rgb(l)) if global_branch else None
            loss = torch.nn.functional.mse_loss(step_net(l, embedding).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t = timed(step, repeat=5 if cuda else 3, warmup=3 if args.compile else 1)
    flops = 3 * count_flops(net, l, emb if global_branch else None) + (inception_flops * batch if global_branch else 0)
    report("train step (bare)", f"{name}, {S}x{S}, batch {batch}", f"{batch / t:.1f} img/s", flop_rate(flops, t))
    bare_rates[name] = batch / t
share = bare_rates["attention + global"] * t_inception / batch  # the embedding's seconds over the step's
report("", "the Inception's share of the step", f"{share:.0%}",
       f"{bare_rates['attention'] / bare_rates['attention + global']:.2f}x the img/s without it")

# -----------------------------------------------------------------------------
# data loading: decoded, cropped uint8 images per second per loader worker, and
# the workers the measured training step needs; then the real train.py loop, at
# the size and batch of the bare step above, against it

if photos:
    files = [photos[i * len(photos) // 64] for i in range(64)]  # spread over the folder, not its first 64
    for stage, setting, cache_mb in [("data loading", f"{len(photos)} photos -> {S} crops", 0),
                                     ("", "the same, decoded once (--cache)", 1024)]:  # train.py's default
        dataset = data.ImageFolder(files, S, train=True, cache_mb=cache_mb)
        per_worker = len(files) / timed(lambda: [dataset[i] for i in range(len(dataset))], repeat=3)
        need = [f"{math.ceil(bare_rates[name] / per_worker)} ({name})" for name in ("attention + global", "baseline")]
        report(stage, setting, f"{per_worker:.0f} crops/s/worker", "workers needed: " + ", ".join(need))
    steps = 4 if args.quick else 60 if cuda else 12
    # on the photo folder itself, split as train.py splits any folder
    out = run("train.py", "train.py", "--data", os.path.abspath(args.photos), "--out", os.path.join(work.name, "run"),
              "--inception", "none", "--size", str(S), "--batch-size", str(batch), "--max-steps", str(steps),
              "--eval-every", str(steps), "--val-images", "16", "--log-every", str(max(1, steps // 6)),
              "--device", device.type, "--dtype", args.dtype, *(["--compile"] if args.compile else []))
    # the first of its 4 or 6 intervals includes start-up
    rates = [float(line.split(" img/s")[0].split("| ")[-1]) for line in out.splitlines() if " img/s" in line][1:]
    loop_rate = sum(rates) / len(rates)
    report("train.py loop", f"attention, {S}x{S}, batch {batch}", f"{loop_rate:.1f} img/s",
           f"{loop_rate / bare_rates['attention']:.0%} of the bare step")

# -----------------------------------------------------------------------------
# colorize.py per image against the bare forward at the same sizes; 24 MP peak memory

net = model.Colorizer(model.ColorizerConfig(global_branch=False)).eval()
ckpt = os.path.join(work.name, "ckpt.pt")
torch.save({"config": dataclasses.asdict(net.config), "model": net.state_dict(), "args": {"size": S}}, ckpt)
if photos:
    some, net = photos[:16], net.to(device)
    sizes = [colorize.network_size(*Image.open(p).size, S) for p in some]

    def colorize_run():
        """colorize.main on `some` (its checkpoint load included), quiet; its outputs replace the last run's."""
        quiet = io.StringIO()
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                status = colorize.main(some + ["-o", os.path.join(work.name, "out"), "--overwrite", "--checkpoint",
                                               ckpt, "--device", device.type])
        except SystemExit as e:  # a stop signal while it ran: its handler exits 130
            status = e.code
        runs.exit_on_stop(STOPPED)  # colorize.main made the stop signals its own
        if status:
            failed("colorize.py", status, quiet.getvalue())

    @torch.no_grad()
    def forwards():  # the bare forward at the same sizes
        return [net(torch.zeros(1, 1, h, w, device=device)) for w, h in sizes]
    # Each run of colorize.py beside a bare forward at the same sizes: a shared machine slows
    # both alike, so the ratio of a pair holds where one run's milliseconds do not.
    forwards()  # the first call at a size sets up its kernels
    pairs = [(timed(colorize_run, 1, warmup=0), timed(forwards, 1, warmup=0)) for _ in range(1 if args.quick else 5)]
    times, bares, ratios = (sorted(x) for x in zip(*[(c / len(some), b / len(some), c / b) for c, b in pairs]))
    mid = len(pairs) // 2
    report("colorize.py per image", f"{len(some)} photos, net short side {S}, median of {len(pairs)} runs",
           f"{times[mid] * 1000:.0f} ms ({times[0] * 1000:.0f}-{times[-1] * 1000:.0f})",
           f"{ratios[mid]:.2f}x bare forward ({bares[mid] * 1000:.0f} ms; {ratios[0]:.2f}x-{ratios[-1]:.2f}x)")
big_w, big_h = (600, 400) if args.quick else (6000, 4000)
big = os.path.join(work.name, "big.jpg")
src = Image.open(photos[0]) if photos else Image.new("RGB", (64, 64), (90, 120, 60))
src.convert("RGB").resize((big_w, big_h), Image.BILINEAR).save(big, quality=90)
peak_rss = int(run_python(f"import colorize; colorize.main([{big!r}, '--checkpoint', {ckpt!r}, "
                          f"'--device', 'cpu', '-o', {work.name!r}])")["M"]) / 1024
base = int(run_python("import colorize")["M"]) / 1024
report(f"colorize.py {big_w * big_h / 1e6:.2g} MP", f"{big_w}x{big_h} JPEG, CPU", f"peak RSS {peak_rss:.0f} MB",
       f"{peak_rss - base:.0f} MB above imports")

# -----------------------------------------------------------------------------
# the attention block at growing sizes: fused kernel against the explicit N x N path,
# each in a fresh process, so that the peak (RSS on the CPU, allocated on the GPU) is the block's own

ATTENTION = """
import time, torch, model
att = model.Attention(256).to({device!r})
h = torch.randn(1, 256, {side}, {side}, device={device!r})  # (1, C, H, W): the colorizer's features at 1/8 scale
with torch.no_grad():
    for _ in range(2):  # the first call sets up its kernels; the second is timed
        t = time.perf_counter()
        att(h, return_attention={explicit})
        torch.cuda.synchronize() if h.is_cuda else None
print('T', time.perf_counter() - t)
print('G', round(torch.cuda.max_memory_allocated() / 1024) if h.is_cuda else 0)
"""


for px in (64,) if args.quick else (256, 512, 1024):
    n = (px // 8) ** 2
    measured = [run_python(ATTENTION.format(device=str(device), side=px // 8, explicit=e)) for e in (False, True)]
    (tf, mf), (tw, mw) = ((float(m["T"]) * 1000, int(m["G" if cuda else "M"]) / 1024) for m in measured)  # ms, MB
    report("attention block", f"{px} px input, N={n}, N x N = {n * n * 4 / 2**20:.0f} MB",
           f"sdpa {tf:.0f} ms, {'peak' if cuda else 'peak RSS'} {mf:.0f} MB", f"explicit {tw:.0f} ms, {mw:.0f} MB")

print("\n| stage | setting | result | ratio (same run) |\n|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
