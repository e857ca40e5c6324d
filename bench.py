"""Speed and memory of every stage, in one command, as one table.

    python bench.py                         # CPU: a few minutes
    python bench.py --device cuda           # GPU: bf16 autocast, channels_last
    python bench.py --device cuda --compile

Absolute numbers drift on a shared machine; the ratios in the last column are
measured in the same run and hold. FLOPs are counted from the convolutions,
linear layers and attention matmuls of the model actually run (a multiply-add
is 2 FLOPs; a training step is 3x the forward), so on a GPU the model FLOPs
utilization is achieved FLOP/s over the card's bf16 peak (--peak-tflops).
"""
import argparse
import contextlib
import dataclasses
import glob
import io
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import colorize
import data
import lab
import model

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="autocast precision; auto: bfloat16 on CUDA, float32 on CPU")
parser.add_argument("--compile", action="store_true", help="torch.compile the colorizer for the train step")
parser.add_argument("--photos", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "photos"),
                    help="a folder of real JPEGs for the data and colorize stages")
parser.add_argument("--batch-size", type=int, default=0, help="0: 8 on CPU, 64 on CUDA")
parser.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the card's dense bf16 peak (H100 SXM: 989; H100 PCIe: 756; H200: 989)")
args = parser.parse_args()

device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
cuda = device.type == "cuda"
dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
         "bfloat16": torch.bfloat16}[args.dtype]
batch = args.batch_size or (64 if cuda else 8)
memory_format = torch.channels_last if cuda else torch.contiguous_format
autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
photos = sorted(glob.glob(os.path.join(args.photos, "*.jpg")))
rows = []  # (stage, setting, result, ratio)


def sync():
    if cuda:
        torch.cuda.synchronize()


def timed(fn, repeat, warmup=1):
    """Median seconds of fn() over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def report(stage, setting, result, ratio=""):
    rows.append((stage, setting, result, ratio))
    print(f"{stage:<28} {setting:<34} {result:<24} {ratio}", flush=True)


def count_flops(net, *inputs):
    """Forward FLOPs of one call: convs, linears and attention matmuls."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.weight[0].numel()  # cin/groups * kh * kw
        total[0] += 2 * k * out.numel()

    def linear_hook(m, inp, out):
        total[0] += 2 * m.in_features * out.numel()

    def attention_hook(m, inp, out):
        B, C, H, W = inp[0].shape
        total[0] += 2 * 2 * B * (H * W) ** 2 * C  # scores and context: two N x N x C matmuls

    hooks = [mod.register_forward_hook(conv_hook) for mod in net.modules() if isinstance(mod, torch.nn.Conv2d)]
    hooks += [mod.register_forward_hook(linear_hook) for mod in net.modules() if isinstance(mod, torch.nn.Linear)]
    hooks += [mod.register_forward_hook(attention_hook) for mod in net.modules() if isinstance(mod, model.Attention)]
    with torch.no_grad():
        net(*inputs)
    for h in hooks:
        h.remove()
    return total[0]


# Peak resident memory of this process, from Linux's VmHWM (getrusage's ru_maxrss
# would carry over the parent's peak into a child started from a large process).
PRINT_PEAK = "print('M', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def run_python(code):
    """Run `code` in a fresh Python in this folder; {key: value} of its 'KEY value' lines."""
    r = subprocess.run([sys.executable, "-c", code + "\n" + PRINT_PEAK], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    if r.returncode:
        raise RuntimeError(r.stderr)
    return dict(line.split(None, 1) for line in r.stdout.splitlines() if line[:2] in ("M ", "T "))


print(f"device {device} ({torch.cuda.get_device_name() if cuda else f'{os.cpu_count()} CPU cores'}), "
      f"{dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}\n")

# -----------------------------------------------------------------------------
# Lab: torch float32 against the same formulas in float64 NumPy (scikit-image's way)


def numpy_rgb_to_lab(rgb):  # (H, W, 3) float64
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = lin @ np.array(lab.RGB_TO_XYZ).T / np.array(lab.WHITE_D65)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def numpy_lab_to_rgb(lab_img):
    fy = (lab_img[..., 0] + 16) / 116
    f = np.stack([fy + lab_img[..., 1] / 500, fy, np.maximum(fy - lab_img[..., 2] / 200, 0)], -1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787) * np.array(lab.WHITE_D65)
    lin = xyz @ np.linalg.inv(np.array(lab.RGB_TO_XYZ)).T
    return np.clip(np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055, 12.92 * lin), 0, 1)


side = 4096
rgb_np = np.random.default_rng(0).random((side, side, 3))
rgb_t = torch.from_numpy(rgb_np).permute(2, 0, 1).float().to(device)
t_torch = timed(lambda: lab.lab_to_rgb(lab.rgb_to_lab(rgb_t)), repeat=3)
t_numpy = timed(lambda: numpy_lab_to_rgb(numpy_rgb_to_lab(rgb_np)), repeat=1, warmup=0)
lab_ref = numpy_rgb_to_lab(rgb_np)
lab_diff = (lab.rgb_to_lab(rgb_t).permute(1, 2, 0).double().cpu().numpy() - lab_ref)
rt_diff = lab.lab_to_rgb(torch.from_numpy(lab_ref).permute(2, 0, 1).float().to(device)).permute(1, 2, 0).double().cpu().numpy() \
    - numpy_lab_to_rgb(lab_ref)
mp = side * side / 1e6
report("lab round trip", f"{side}x{side}, torch float32", f"{mp / t_torch:.1f} MP/s", f"{t_numpy / t_torch:.1f}x NumPy f64")
report("", "NumPy float64, same formulas", f"{mp / t_numpy:.1f} MP/s")
report("", "max |diff| vs NumPy", f"Lab {np.abs(lab_diff).max():.1e}, RGB {np.abs(rt_diff).max():.1e}")
del rgb_np, rgb_t, lab_ref, lab_diff, rt_diff

# -----------------------------------------------------------------------------
# Inception embedding and colorizer forward at 256x256

inception = model.InceptionResNetV2().eval().requires_grad_(False).to(device, memory_format=memory_format)
gray = torch.rand(batch, 3, 256, 256, device=device)
with autocast:
    t = timed(lambda: model.inception_embedding(inception, gray), repeat=3)
flops = count_flops(inception, torch.zeros(1, 3, 299, 299, device=device))
report("inception embedding", f"256 -> 299, batch {batch}", f"{batch / t:.1f} img/s",
       f"{flops * batch / t / 1e12:.2f} TFLOP/s")
del inception

l = torch.rand(batch, 1, 256, 256, device=device).contiguous(memory_format=memory_format) * 2 - 1
emb = torch.randn(batch, 1000, device=device)
for variant in ("attention", "baseline"):
    net = model.Colorizer(model.ColorizerConfig(variant=variant)).to(device, memory_format=memory_format).eval()
    with torch.no_grad(), autocast:
        t = timed(lambda: net(l, emb), repeat=3)
    report("colorizer forward", f"{variant}, 256x256, batch {batch}", f"{batch / t:.1f} img/s")

# -----------------------------------------------------------------------------
# training step: forward + backward + Adam, on random tensors

def bare_step(net, l, emb, target):
    """One forward + backward + Adam step of net on fixed tensors, as a closure."""
    step_net = torch.compile(net) if args.compile else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        with autocast:
            loss = F.mse_loss(step_net(l, emb).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


target = torch.rand(batch, 2, 256, 256, device=device) * 2 - 1
bare_rates = {}
for variant in ("attention", "baseline"):
    net = model.Colorizer(model.ColorizerConfig(variant=variant)).to(device, memory_format=memory_format)
    t = timed(bare_step(net, l, emb, target), repeat=5 if cuda else 3, warmup=3 if args.compile else 1)
    flops = 3 * count_flops(net, l, emb)
    mfu = f"MFU {flops / t / (args.peak_tflops * 1e12):.1%}" if cuda else f"{flops / t / 1e12:.2f} TFLOP/s"
    report("train step (bare)", f"{variant}, 256x256, batch {batch}", f"{batch / t:.1f} img/s", mfu)
    bare_rates[variant] = batch / t
del net, l, emb, target

# -----------------------------------------------------------------------------
# data loading: decoded, cropped uint8 images per second per worker on real JPEGs

if photos:
    files = (photos * (64 // len(photos) + 1))[:64]
    dataset = data.ImageFolder(files, 256, train=True)
    t = timed(lambda: [dataset[i] for i in range(len(dataset))], repeat=3)
    report("data loading", f"{len(photos)} JPEGs (768 px) -> 256 crops", f"{len(files) / t:.0f} img/s/worker",
           f"{len(files) / t / bare_rates['attention']:.0f}x the attention step")

# -----------------------------------------------------------------------------
# the real train.py loop against the bare step of the same model and batch

if photos:
    with tempfile.TemporaryDirectory() as tmp:
        size, steps, loop_batch = (256, 60, batch) if cuda else (128, 30, 16)
        cmd = [sys.executable, "train.py", "--data", args.photos, "--inception", "none", "--out", tmp,
               "--size", str(size), "--batch-size", str(loop_batch), "--max-steps", str(steps),
               "--eval-every", str(steps), "--log-every", "10", "--device", device.type,
               "--workers", str(min(8, os.cpu_count()) if cuda else 1)] + (["--compile"] if args.compile else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        rates = [float(line.split(" img/s")[0].split("| ")[-1]) for line in out.stdout.splitlines() if " img/s" in line]
        loop_rate = sum(rates[1:]) / max(len(rates) - 1, 1)  # the first interval includes start-up
        net = model.Colorizer(model.ColorizerConfig(global_branch=False)).to(device, memory_format=memory_format)
        l = torch.rand(loop_batch, 1, size, size, device=device).contiguous(memory_format=memory_format)
        target = torch.rand(loop_batch, 2, size, size, device=device)
        bare = loop_batch / timed(bare_step(net, l, None, target), repeat=5, warmup=3 if args.compile else 1)
        report("train.py loop", f"attention, {size}x{size}, batch {loop_batch}", f"{loop_rate:.1f} img/s",
               f"{loop_rate / bare:.0%} of bare ({bare:.1f} img/s)")
        del net

# -----------------------------------------------------------------------------
# colorize.py per image against the bare forward at the same sizes; 24 MP peak memory

with tempfile.TemporaryDirectory() as tmp:
    net = model.Colorizer(model.ColorizerConfig(global_branch=False)).eval()
    ckpt = os.path.join(tmp, "ckpt.pt")
    torch.save({"config": dataclasses.asdict(net.config), "model": net.state_dict(), "args": {"size": 256}}, ckpt)
    if photos:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every path it writes
            colorize.main(photos + ["-o", os.path.join(tmp, "out"), "--checkpoint", ckpt, "--device", device.type])
        per_image = (time.perf_counter() - t0) / len(photos)
        net = net.to(device)
        sizes = [colorize.network_size(*Image.open(p).size, 256) for p in photos]

        def forwards():
            with torch.no_grad():
                for w, h in sizes:
                    net(torch.zeros(1, 1, h, w, device=device))
        bare = timed(forwards, repeat=2) / len(photos)
        report("colorize.py per image", f"{len(photos)} photos, net short side 256", f"{per_image * 1000:.0f} ms",
               f"{per_image / bare:.2f}x bare forward ({bare * 1000:.0f} ms)")
    big = os.path.join(tmp, "big.jpg")
    src = Image.open(photos[0]) if photos else Image.new("RGB", (64, 64), (90, 120, 60))
    src.convert("RGB").resize((6000, 4000), Image.BILINEAR).save(big, quality=90)
    peak = int(run_python(f"import colorize; colorize.main([{big!r}, '--checkpoint', {ckpt!r}, "
                          f"'--device', 'cpu', '-o', {tmp!r}])")["M"]) / 1024
    base = int(run_python("import colorize")["M"]) / 1024
    report("colorize.py 24 MP", "6000x4000 JPEG, CPU", f"peak RSS {peak:.0f} MB", f"{peak - base:.0f} MB above imports")

# -----------------------------------------------------------------------------
# the attention block at growing sizes: fused kernel against the explicit N x N path

for px in (256, 512, 1024):
    n = (px // 8) ** 2
    code = (f"import torch, model, time\ntorch.manual_seed(0)\natt = model.Attention(256).to({str(device)!r})\n"
            f"h = torch.randn(1, 256, {px // 8}, {px // 8}, device={str(device)!r})\n"
            "with torch.no_grad():\n    att(h, return_weights=RW)\n    t = time.perf_counter()\n"
            "    att(h, return_weights=RW)\n    torch.cuda.synchronize() if h.is_cuda else None\n"
            "    print('T', time.perf_counter() - t)\n")
    results = {}
    for rw in (False, True):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            att = model.Attention(256).to(device)
            h = torch.randn(1, 256, px // 8, px // 8, device=device)
            with torch.no_grad():
                att(h, return_weights=rw)
                t = timed(lambda: att(h, return_weights=rw), repeat=3)
            results[rw] = (t, torch.cuda.max_memory_allocated() / 2**20)
        else:
            vals = run_python(code.replace("RW", str(rw)))
            results[rw] = (float(vals["T"]), int(vals["M"]) / 1024)
    (tf, mf), (tw, mw) = results[False], results[True]
    what = "peak" if cuda else "peak RSS"
    report("attention block", f"{px} px input, N={n}, N x N = {n * n * 4 / 2**20:.0f} MB",
           f"sdpa {tf * 1000:.0f} ms, {what} {mf:.0f} MB", f"explicit {tw * 1000:.0f} ms, {mw:.0f} MB")

print("\n| stage | setting | result | ratio (same run) |\n|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
