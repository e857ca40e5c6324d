"""The Inception-ResNet-v2 of the global branch, its weight files and their download.

The colorizer's global branch (paper section 3.3, after Deep Koalarization) is
a frozen ImageNet classifier: the gray photo at 299 x 299 goes through it, and
its 1000 class logits say what the picture shows. This file holds that network
and everything needed to get its weights, so model.py can stay the paper's:

  1. InceptionResNetV2 (Szegedy et al. 2016), with timm's module names, so the
     published weights (timm/inception_resnet_v2.tf_in1k) load without renaming;
     inception_embedding, the gray image -> logits.
  2. Its weight files: timm's safetensors (read here, checking every offset)
     or timm's PyTorch state dict, strict loading.
  3. The default weights: in this project's cache, else where timm (through
     huggingface_hub) keeps them, else downloaded once and checked by sha256;
     HF_HUB_OFFLINE is respected.
  4. open_inception: the one opener both scripts use, with one policy for a
     checkpoint trained with other weights.

Cut as no published file of these weights needs them: safetensors dtypes other
than F32, F16, BF16 and I64 (bool, 8- to 32-bit integers, F64, fp8).

    python -c "import inception; print(sum(p.numel() for p in inception.InceptionResNetV2().parameters()))"
"""
import glob
import hashlib
import json
import math
import os
import sys
import urllib.request
import warnings
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# 1. The network (Szegedy et al. 2016), with timm's module names


class BasicConv2d(nn.Sequential):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as the TensorFlow original) -> ReLU,
    run in the order they are set."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)


def conv_chain(*specs):
    """BasicConv2d units from (cin, cout, kernel, stride, padding) tuples: a
    Sequential of them, or the unit itself when there is one (timm's keys
    are `branch0.conv.weight` there, not `branch0.0.conv.weight`)."""
    return BasicConv2d(*specs[0]) if len(specs) == 1 else nn.Sequential(*(BasicConv2d(*s) for s in specs))


class Branches(nn.Module):
    """Runs branch0, branch1, ... on the same input and concatenates on channels.
    The Mixed (reduction) blocks are exactly this."""

    def __init__(self, *branches):
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)

    def forward(self, x):
        return torch.cat([m(x) for name, m in self.named_children() if name.startswith("branch")], dim=1)


class ResidualBlock(Branches):
    """Block35 / Block17 / Block8: branches, a 1x1 conv back to the input width,
    scaled and added to the input (the "ResNet" in Inception-ResNet)."""

    def __init__(self, channels, branches, scale, relu=True):
        super().__init__(*branches)
        mixed = sum([m for m in b.modules() if isinstance(m, nn.Conv2d)][-1].out_channels for b in branches)
        self.conv2d = nn.Conv2d(mixed, channels, 1)  # added after the branches, so state_dict order matches
        self.scale = scale
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x):
        mixed = super().forward(x)                                # (B, sum of branch widths, h, w)
        return self.relu(self.conv2d(mixed) * self.scale + x)


def block35(scale=0.17):  # 35x35 grid, 320 channels
    return ResidualBlock(320, [conv_chain((320, 32, 1)),
                               conv_chain((320, 32, 1), (32, 32, 3, 1, 1)),
                               conv_chain((320, 32, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1))], scale)


def block17(scale=0.10):  # 17x17 grid, 1088 channels
    return ResidualBlock(1088, [conv_chain((1088, 192, 1)),
                                conv_chain((1088, 128, 1), (128, 160, (1, 7), 1, (0, 3)),
                                           (160, 192, (7, 1), 1, (3, 0)))], scale)


def block8(scale=0.20, relu=True):  # 8x8 grid, 2080 channels
    return ResidualBlock(2080, [conv_chain((2080, 192, 1)),
                                conv_chain((2080, 192, 1), (192, 224, (1, 3), 1, (0, 1)),
                                           (224, 256, (3, 1), 1, (1, 0)))], scale, relu)


class InceptionResNetV2(nn.Module):
    """299x299x3 in [-1, 1] -> (B, num_classes) logits. 55,843,464 parameters."""

    def __init__(self, num_classes=1000):
        super().__init__()
        # Stem: 299 -> 35
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)         # 149
        self.conv2d_2a = BasicConv2d(32, 32, 3)                  # 147
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)       # 147
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)              # 73
        self.conv2d_3b = BasicConv2d(64, 80, 1)                  # 73
        self.conv2d_4a = BasicConv2d(80, 192, 3)                 # 71
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)              # 35
        self.mixed_5b = Branches(                                # 192 -> 320
            conv_chain((192, 96, 1)),
            conv_chain((192, 48, 1), (48, 64, 5, 1, 2)),
            conv_chain((192, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
            nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                          BasicConv2d(192, 64, 1)))
        self.repeat = nn.Sequential(*[block35() for _ in range(10)])
        self.mixed_6a = Branches(                                # 35 -> 17, 320 -> 1088
            conv_chain((320, 384, 3, 2)),
            conv_chain((320, 256, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2)),
            nn.MaxPool2d(3, stride=2))
        self.repeat_1 = nn.Sequential(*[block17() for _ in range(20)])
        self.mixed_7a = Branches(                                # 17 -> 8, 1088 -> 2080
            conv_chain((1088, 256, 1), (256, 384, 3, 2)),
            conv_chain((1088, 256, 1), (256, 288, 3, 2)),
            conv_chain((1088, 256, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2)),
            nn.MaxPool2d(3, stride=2))
        self.repeat_2 = nn.Sequential(*[block8() for _ in range(9)])
        self.block8 = block8(scale=1.0, relu=False)
        self.conv2d_7b = BasicConv2d(2080, 1536, 1)              # (B, 1536, 8, 8)
        self.classif = nn.Linear(1536, num_classes)

    def forward(self, x):
        for name, module in self.named_children():
            if name == "classif":
                x = x.mean(dim=(2, 3))                           # global average pool -> (B, 1536)
            x = module(x)
        return x


@torch.no_grad()
def inception_embedding(inception, gray):
    """Gray images (B, 3, H, W) in [0, 1] -> (B, 1000) class logits, the global
    feature of Deep Koalarization. Resized to 299x299 and scaled to [-1, 1]
    (mean = std = 0.5, as the weights were trained)."""
    with torch.autocast(gray.device.type, enabled=False):  # no bf16 antialiased resize on every device
        x = F.interpolate(gray.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
    return inception(x * 2 - 1).float()                         # (B, 1000)


# -----------------------------------------------------------------------------
# 2. Its weight files: timm's safetensors or its PyTorch state dict, strict loading

# safetensors dtype names -> torch dtypes: what timm's file holds (F32) and what
# a conversion of it to half precision holds (F16, BF16, with I64 counters).
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def regular_file(path):
    """`path` as a str, or ValueError when it is missing or not a regular file:
    open() on a FIFO waits for a writer that may never come, forever."""
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: {'not a regular file' if os.path.exists(path) else 'no such file'}")
    return path


def read_safetensors(path):
    """Read a .safetensors file into {name: tensor}, checking every offset.

    Layout: 8-byte little-endian header size N, N bytes of JSON, then the raw
    little-endian tensor bytes; each entry's data_offsets are relative to 8+N.
    A malformed or truncated file raises ValueError naming the file and fault."""
    def bad(why):
        return ValueError(f"{path}: not a valid safetensors file ({why})")

    path = regular_file(path)
    blob = bytearray(os.path.getsize(path))  # writable, so tensors can share it without a copy
    with open(path, "rb") as f:
        f.readinto(blob)
    if len(blob) < 8:
        raise bad(f"{len(blob)} bytes, too short for the 8-byte header size")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise bad(f"header of {n} bytes does not fit in a file of {len(blob)} bytes")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data = memoryview(blob)[8 + n:]
    header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {name!r} has no known dtype")
        dtype, shape, offsets = SAFETENSORS_DTYPES[info["dtype"]], info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise bad(f"tensor {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= len(data)):
            raise bad(f"tensor {name!r} has data_offsets {offsets!r} outside the {len(data)} data bytes (truncated?)")
        begin, end = offsets
        need = math.prod(shape) * dtype.itemsize
        if end - begin != need:
            raise bad(f"tensor {name!r} has {end - begin} bytes, shape {shape} needs {need}")
        # a view into blob: no copy until load_state_dict copies into the model (frombuffer refuses 0 bytes)
        tensors[name] = torch.frombuffer(data[begin:end], dtype=dtype).reshape(shape) if need else \
            torch.empty(shape, dtype=dtype)
    return tensors


def short_reason(e):
    """An exception's class and first sentence, leaving out torch's advice to
    load with weights_only=False: unsafe for a file from anywhere."""
    text = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
    if "weights only" in text.lower().replace("_", " "):
        text = "it holds objects other than tensors, which are not loaded"
    return e.__class__.__name__ + (f": {text[:150]}" if text else "")


def load_tensors(path):
    """torch.load of plain types only (weights_only), from a file that is what
    torch.save writes: a zip archive of stored entries (it never compresses;
    a deflated entry can inflate a thousandfold in memory before any check),
    declaring no more bytes than the file holds. Warnings that torch prints
    about a file (sparse tensors, old pickle protocols) do not reach the
    user: the one-line error, or nothing, is what is said."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
        if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
            raise ValueError("compressed entries, which torch.save never writes")
        if sum(entry.file_size for entry in entries) > os.path.getsize(path):
            raise ValueError("its entries declare more bytes than the file holds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path):
    """Inception-ResNet-v2 weights as timm publishes them: its .safetensors
    file, or a PyTorch state dict (its pytorch_model.bin), read safely."""
    path = regular_file(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    try:
        state = load_tensors(path)
    except Exception as e:  # torch raises many kinds here; all mean "not a usable weights file"
        raise ValueError(f"{path}: cannot be read as a PyTorch weights file ({short_reason(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return state


# -----------------------------------------------------------------------------
# 3. The default weights: timm's TensorFlow-trained ImageNet model (top-1 80.43%),
#    found in our cache or Hugging Face's, or downloaded once


INCEPTION_URL = "https://huggingface.co/timm/inception_resnet_v2.tf_in1k/resolve/main/model.safetensors"
INCEPTION_SHA256 = "dbea26b13a5fc8351919fed6a94222c0577ce324b2765fd081a798f837ca9d72"


def cache_dir(name="colorize"):
    """$XDG_CACHE_HOME/name, else ~/.cache/name (the XDG rule ignores an empty or
    relative value): this project's download folder, or Hugging Face's."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return os.path.join(base if os.path.isabs(base) else os.path.expanduser("~/.cache"), name)


def sha256_of(path):
    """The file's sha256 (224 MB: about half a second)."""
    h = hashlib.sha256()
    with open(regular_file(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manual_steps(path, why):
    """The error of a download that cannot happen: what to do by hand instead."""
    return RuntimeError(
        f"could not download the Inception-ResNet-v2 weights ({why}); download {INCEPTION_URL} by hand and "
        f"save it as {path}, or pass --inception PATH (a .safetensors/.pth file), or --inception none to train "
        f"without the global branch")


def download_inception(path):
    """Download the default weights to `path` with a progress line on stderr,
    through a temporary file of this process's own (several may download at
    once), checked before it is renamed into place. Whatever stops it (a
    failure, Ctrl-C), the temporary file goes too and the progress line ends,
    so the next message starts a line."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        why = None if os.access(folder, os.W_OK | os.X_OK) else "not writable"
    except OSError as e:  # XDG_CACHE_HOME names a file, HOME is read-only, ...
        why = e.strerror
    if why:
        raise RuntimeError(f"{folder}: cannot keep the Inception weights there ({why}); set XDG_CACHE_HOME "
                           f"to a writable folder or pass --inception PATH")
    partial, done = f"{path}.part{os.getpid()}", 0
    print(f"downloading the Inception-ResNet-v2 weights (224 MB) to {path}", file=sys.stderr)
    try:
        with urllib.request.urlopen(INCEPTION_URL, timeout=30) as r, open(partial, "wb") as f:
            length = str(r.headers.get("Content-Length", ""))
            total = f"/{int(length) / 1e6:.0f}" if length.isdigit() else ""  # servers may not say
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                print(f"\r  {done / 1e6:.0f}{total} MB", end="", file=sys.stderr, flush=True)
        digest = sha256_of(partial)
        if digest != INCEPTION_SHA256:
            raise RuntimeError(f"downloaded file has sha256 {digest}, expected {INCEPTION_SHA256}")
        if not os.path.exists(path):  # else another process finished first: the same checked bytes
            os.replace(partial, path)
    except OSError as e:  # no network, a stalled or broken connection, a full disk
        raise manual_steps(path, e) from None
    finally:
        if done:
            print(file=sys.stderr)
        if os.path.exists(partial):
            os.remove(partial)
    return path


def default_inception_path(download=True):
    """Path of timm's inception_resnet_v2 weights: in the user cache, else where
    timm downloaded them (huggingface_hub's cache, by its rules) if their
    sha256 is the expected one (a snapshot may hold another revision), else
    downloaded into the user cache when allowed (not with HF_HUB_OFFLINE set to
    a true value: a user who said "no network" means it here too). Neither
    there nor downloaded: the user-cache path, which does not exist."""
    path = os.path.join(cache_dir(), "inception_resnet_v2.tf_in1k.safetensors")
    if os.path.exists(path):
        return path
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME") or cache_dir("huggingface"), "hub")
    repo = os.path.join(glob.escape(os.path.expanduser(hub)), "models--timm--inception_resnet_v2.tf_in1k")
    for found in sorted(glob.glob(os.path.join(repo, "snapshots", "*", "model.safetensors"))):
        try:
            if sha256_of(found) == INCEPTION_SHA256:
                return found
        except (OSError, ValueError):  # unreadable, not a file, or gone meanwhile: not usable
            continue
    if not download:
        return path
    offline = os.environ.get("HF_HUB_OFFLINE", "")
    if offline.strip().lower() in ("1", "true", "yes", "on"):
        raise manual_steps(path, f"HF_HUB_OFFLINE={offline}")
    return download_inception(path)


def load_inception(path):
    """A frozen InceptionResNetV2 in eval mode with the weights in `path`, loaded
    strictly: an error names the missing, unexpected and mis-shaped keys (a few
    of each) and the file they came from."""
    net, state = InceptionResNetV2(), read_state_dict(path)
    own = net.state_dict()
    wrong = {"missing": [k for k in own if k not in state], "unexpected": [k for k in state if k not in own],
             "wrong shape": [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
                             for k, v in own.items() if k in state and state[k].shape != v.shape]}
    problems = [f"{what} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in wrong.items() if keys]
    if problems:
        raise ValueError(f"{path}: weights do not fit InceptionResNetV2: " + "; ".join(problems))
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)

# -----------------------------------------------------------------------------
# 4. The one opener, for train.py and colorize.py alike


def open_inception(choice="auto", trained_with=None, strict=True, download=True):
    """The frozen Inception of the global branch for --inception auto (the
    default weights, downloaded when allowed) or PATH, with its record for
    checkpoints ({"file", "sha256"}). -> (network, record, warning or None).
    ValueError or RuntimeError with a one-line reason when it cannot be had.

    The policy for a checkpoint trained with other weights (trained_with, the
    record it holds): its colorizer learned to read those exact logits. Where
    training would go on from it (strict: train.py --resume, --init), another
    file is an error, since the run would learn against other features; where
    it only colorizes (colorize.py), it is a warning: the colors may suffer,
    and nothing is lost."""
    path = default_inception_path(download) if choice == "auto" else str(choice)
    record, warning = {"file": os.path.basename(path), "sha256": sha256_of(path)}, None
    if trained_with and trained_with.get("sha256") and trained_with["sha256"] != record["sha256"]:
        warning = (f"{path} is not the Inception the checkpoint was trained with ({trained_with.get('file')}, "
                   f"sha256 {trained_with['sha256'][:12]}...)")
        if strict:
            raise ValueError(warning)
        warning += "; colors may suffer"
    return load_inception(path), record, warning
