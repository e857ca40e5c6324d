"""The colorization network of the paper, and the Inception-ResNet-v2 it leans on.

Paper: "Automatic colorization of gray-scale images using deep attention models"
(section 3): an encoder-decoder on the L channel with CoordConv input channels,
fused with a global embedding from a frozen, ImageNet-pretrained
Inception-ResNet-v2 (as in Deep Koalarization, Baldassarre et al. 2017), with a
Luong-style attention over the fused feature map before the decoder.

Read top to bottom:
  1. The colorizer: CoordConv, Encoder, Fusion, Attention, Decoder, Colorizer.
  2. InceptionResNetV2: Szegedy et al. 2016, with timm's module names, so the
     published weights (timm/inception_resnet_v2.tf_in1k) load without renaming.
  3. Its weight files: a small safetensors reader, pickles, Cadene's names,
     strict checks, and the download of the default weights (only when asked for).

    python -c "import model; print(model.Colorizer(model.ColorizerConfig()))"
"""
import functools
import hashlib
import json
import math
import os
import sys
import urllib.request
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# 1. The colorizer (paper section 3): CoordConv, Encoder, Fusion, Attention, Decoder


@dataclass
class ColorizerConfig:
    variant: str = "attention"  # "attention" (the paper) or "baseline" (Deep Koalarization)
    coords: bool = None         # CoordConv's x, y input channels; None: with attention (the paper), not without
    global_branch: bool = True  # False: no Inception embedding (no weights at hand)
    width: int = 64             # channels of the first encoder conv; the rest scale with it
    embed_dim: int = 1000       # size of the Inception embedding
    # What the 3x3 convolutions see beyond the edge: "replicate" (the edge pixel
    # repeated) or "zeros" (the paper's and Keras's "same" padding). Zeros tell
    # the network where the edge is, and a model trained on small crops paints
    # a faint colored frame there; repeated edge pixels look like more of the
    # picture. Checkpoints made before this field were zero-padded (from_dict).
    padding: str = "replicate"

    @classmethod
    def from_dict(cls, config):
        """The config a checkpoint stores; one without "padding" predates it: zeros."""
        return cls(**{"padding": "zeros", **config})

    def __post_init__(self):
        if self.coords is None:
            self.coords = self.variant == "attention"
        for name, kind in [("variant", str), ("coords", bool), ("global_branch", bool), ("width", int),
                           ("embed_dim", int), ("padding", str)]:  # a checkpoint from anywhere is checked here
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
        if not (1 <= self.width <= 1024 and 1 <= self.embed_dim <= 100_000):
            raise ValueError(f"width {self.width} or embed_dim {self.embed_dim} out of range")
        if self.variant not in ("attention", "baseline"):
            raise ValueError(f"unknown variant {self.variant!r} (attention or baseline)")
        if self.padding not in ("zeros", "replicate"):
            raise ValueError(f"unknown padding {self.padding!r} (zeros or replicate)")


def conv3x3(cin, cout, stride, bias, padding):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias, padding_mode=padding)


def conv_bn_relu(cin, cout, stride, padding):
    return nn.Sequential(conv3x3(cin, cout, stride, False, padding),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def coord_channels(x):
    """CoordConv (Liu et al. 2018): x and y in [-1, 1] as two extra channels, so
    convolutions can know where in the image they are. (B, C, H, W) -> (B, 2, H, W)."""
    B, _, H, W = x.shape
    ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))    # (2, H, W)
    return grid.expand(B, 2, H, W)


class Encoder(nn.Module):
    """L (B, 1, H, W) -> features (B, 4w, H/8, W/8). Strided convs, no pooling
    (paper 3.4: pooling loses the detail the colors must follow)."""

    def __init__(self, w, coords, padding):
        super().__init__()
        self.coords = coords
        cin = 3 if coords else 1
        plan = [(w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1), (4 * w, 2), (8 * w, 1), (8 * w, 1), (4 * w, 1)]
        layers = []
        for cout, stride in plan:
            layers.append(conv_bn_relu(cin, cout, stride, padding))
            cin = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        if self.coords:
            x = torch.cat([x, coord_channels(x)], dim=1)          # (B, 3, H, W)
        return self.layers(x)                                     # (B, 4w, H/8, W/8)


class Fusion(nn.Module):
    """Tile the global embedding over every position, concatenate it with the
    encoder features and mix with a 1x1 conv (Deep Koalarization's fusion)."""

    def __init__(self, channels, embed_dim):
        super().__init__()
        self.conv = nn.Conv2d(channels + embed_dim, channels, 1)

    def forward(self, feats, embedding):
        if embedding is not None:
            B, _, h, w = feats.shape
            tiled = embedding.to(feats.dtype)[:, :, None, None].expand(B, -1, h, w)
            feats = torch.cat([feats, tiled], dim=1)              # (B, C + E, h, w)
        return F.relu(self.conv(feats))                           # (B, C, h, w)


class Attention(nn.Module):
    """Luong "general" attention over the positions of the fused map (paper 3.5).

    For positions t (queries) and s (keys/values) of the map h:
        q_t = W_a h_t,  alpha_ts = softmax_s(q_t . h_s / sqrt(C)),
        c_t = sum_s alpha_ts h_s,  out_t = tanh(W_c [c_t; h_t]).
    Every position can borrow color evidence from anywhere in the image."""

    def __init__(self, channels):
        super().__init__()
        self.W_a = nn.Conv2d(channels, channels, 1, bias=False)
        self.W_c = nn.Conv2d(2 * channels, channels, 1, bias=False)

    def forward(self, h, return_weights=False):
        B, C, H, W = h.shape
        # contiguous: the fused CPU kernel refuses strided input and falls back to N x N
        keys = h.flatten(2).transpose(1, 2).contiguous()          # (B, N, C), N = H*W
        queries = self.W_a(h).flatten(2).transpose(1, 2).contiguous()  # (B, N, C)
        if return_weights:
            # The readable path: build the N x N matrix to show where each position looks.
            alpha = torch.softmax(queries @ keys.transpose(1, 2) / math.sqrt(C), dim=-1)  # (B, N, N)
            context = alpha @ keys                                # (B, N, C)
        else:
            # The same numbers without materializing N x N where a fused kernel exists.
            # (B, 1 head, N, C): the fused kernels take 4-D input.
            context = F.scaled_dot_product_attention(queries[:, None], keys[:, None], keys[:, None])[:, 0]
            alpha = None
        context = context.transpose(1, 2).reshape(B, C, H, W)     # (B, C, H, W)
        out = torch.tanh(self.W_c(torch.cat([context, h], dim=1)))
        return (out, alpha) if return_weights else out


class Decoder(nn.Module):
    """(B, 4w, H/8, W/8) -> ab/128 (B, 2, H, W) through a tanh. Upsampling is
    bilinear: nearest (Deep Koalarization) leaves 2x2 blocks in the chroma."""

    def __init__(self, w, padding):
        super().__init__()
        up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        p = padding
        self.layers = nn.Sequential(
            conv_bn_relu(4 * w, 2 * w, 1, p), up,                 # H/4
            conv_bn_relu(2 * w, w, 1, p), conv_bn_relu(w, w, 1, p), up,  # H/2
            conv3x3(w, w // 2, 1, True, p), nn.ReLU(inplace=True),
            conv3x3(w // 2, 2, 1, True, p), nn.Tanh(), up)        # H
        for m in self.modules():  # Xavier init for the decoder (paper 4.1)
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.layers(x)


class Colorizer(nn.Module):
    """Colorizer(lightness, embedding) -> ab/128.
    lightness: (B, 1, H, W), L/50 - 1 in [-1, 1], H and W multiples of 8, any aspect.
    embedding: (B, embed_dim) Inception logits, or None when global_branch=False.
    Returns (B, 2, H, W) in [-1, 1]."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = Encoder(w, coords=config.coords, padding=config.padding)
        self.fusion = Fusion(4 * w, config.embed_dim if config.global_branch else 0)
        self.attention = Attention(4 * w) if config.variant == "attention" else None
        self.decoder = Decoder(w, config.padding)

    def forward(self, lightness, embedding=None, return_attention=False):
        if lightness.shape[-1] % 8 or lightness.shape[-2] % 8:
            raise ValueError(f"input height and width must be multiples of 8, got {tuple(lightness.shape[-2:])}")
        if (embedding is not None) != self.config.global_branch:
            raise ValueError("pass the Inception embedding exactly when the model has a global branch")
        x = self.fusion(self.encoder(lightness), embedding)               # (B, 4w, H/8, W/8)
        alpha = None
        if self.attention is not None:
            x = self.attention(x, return_weights=return_attention)
            if return_attention:
                x, alpha = x                                      # alpha: (B, N, N)
        ab = self.decoder(x)                                      # (B, 2, H, W)
        return (ab, alpha) if return_attention else ab


# -----------------------------------------------------------------------------
# 2. Inception-ResNet-v2 (Szegedy et al. 2016): the frozen global branch, timm's module names


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as the TensorFlow original) -> ReLU."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def conv_chain(*specs):
    """BasicConv2d units from (cin, cout, kernel, stride, padding) tuples: a
    Sequential of them, or the unit itself when there is one (timm's keys
    are `branch0.conv.weight` there, not `branch0.0.conv.weight`)."""
    units = [BasicConv2d(*s) for s in specs]
    return units[0] if len(units) == 1 else nn.Sequential(*units)


class Branches(nn.Module):
    """Runs branch0, branch1, ... on the same input and concatenates on channels.
    The Mixed (reduction) blocks are exactly this."""

    def __init__(self, *branches):
        super().__init__()
        self.n_branches = len(branches)
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)

    def forward(self, x):
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], dim=1)


class ResidualBlock(Branches):
    """Block35 / Block17 / Block8: branches, a 1x1 conv back to the input width,
    scaled and added to the input (the "ResNet" in Inception-ResNet)."""

    def __init__(self, channels, branches, scale, relu=True):
        super().__init__(*branches)
        mixed = sum([m for m in b.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
                    for b in branches)
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
# 3. Its weight files: a safetensors reader, pickles, Cadene's names, the download

# safetensors dtype names -> torch dtypes
SAFETENSORS_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "U16": torch.uint16, "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64,
    "U64": torch.uint64, "F16": torch.float16, "BF16": torch.bfloat16,
    "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def regular_file(path):
    """`path` as a str, or ValueError when it is missing or not a regular file:
    open() on a FIFO waits for a writer that may never come, forever."""
    path = str(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
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
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {name!r} has no known dtype")
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise bad(f"tensor {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets)):
            raise bad(f"tensor {name!r} has bad data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= len(data):
            raise bad(f"tensor {name!r} bytes [{begin}, {end}) lie outside the "
                      f"{len(data)} data bytes (truncated?)")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != math.prod(shape) * itemsize:
            raise bad(f"tensor {name!r} has {end - begin} bytes, shape {shape} needs "
                      f"{math.prod(shape) * itemsize}")
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:  # a view into blob: no copy until load_state_dict copies into the model
            tensors[name] = torch.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    return tensors


def weights_format(path):
    """"safetensors" or "torch", from the file's first bytes: names mislead (a
    safetensors file saved as .bin, a Hugging Face blobs/<sha256> without any)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # an 8-byte header size, then the JSON header's opening brace
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save's zip archive, or a legacy pickle
        return "torch"
    # Neither (damaged or not weights at all): the name chooses whose error message to show.
    return "safetensors" if path.endswith(".safetensors") else "torch"


def read_state_dict(path):
    """Load a state dict from a safetensors file, or from a PyTorch pickle
    (optionally nested under "state_dict" or "model"), safely, whatever its name."""
    path = regular_file(path)
    if weights_format(path) == "safetensors":
        return read_safetensors(path)
    try:  # an open file, not the path: torch.load too would judge a path by its name
        with open(path, "rb") as f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds here; all mean "not a usable checkpoint"
        raise ValueError(f"{path}: cannot be read as a PyTorch weights file ({e.__class__.__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return obj


def load_strict(module, state, source):
    """load_state_dict with an error that names the missing, unexpected and
    mis-shaped keys (a few of each) and the file they came from."""
    own = module.state_dict()
    # BatchNorm's num_batches_tracked buffer came with PyTorch 0.4.1; older files
    # (Cadene's 2017 Inception) lack it and torch's strict load keeps the module's own.
    state = {**{k: v for k, v in own.items() if k.rpartition(".")[2] == "num_batches_tracked"}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
                 for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = [f"{what} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected),
                                   ("wrong shape", misshaped)) if keys]
    if problems:
        raise ValueError(f"{source}: weights do not fit {module.__class__.__name__}: "
                         + "; ".join(problems))
    module.load_state_dict(state)


def inception_state_dict(path):
    """Read Inception-ResNet-v2 weights in timm or Cadene form as timm's keys."""
    state = read_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "last_linear.weight" in state:  # Cadene's pretrainedmodels names the head last_linear
        state = {k.replace("last_linear.", "classif."): v for k, v in state.items()}
    if state.get("classif.weight") is not None and state["classif.weight"].shape[0] == 1001:
        # Cadene's TF port has a background class at index 0; ImageNet's 1000 follow
        state["classif.weight"] = state["classif.weight"][1:]
        state["classif.bias"] = state["classif.bias"][1:]
    return state


# The default weights: timm's TensorFlow-trained ImageNet model (top-1 80.43%).
INCEPTION_URL = "https://huggingface.co/timm/inception_resnet_v2.tf_in1k/resolve/main/model.safetensors"
INCEPTION_SHA256 = "dbea26b13a5fc8351919fed6a94222c0577ce324b2765fd081a798f837ca9d72"


def xdg_cache_home():
    """$XDG_CACHE_HOME, or ~/.cache: the XDG rule ignores an empty or relative value."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return base if os.path.isabs(base) else os.path.expanduser("~/.cache")


def cache_dir():
    """This project's download folder (make_cache_dir creates it when needed)."""
    return os.path.join(xdg_cache_home(), "colorize")


def make_cache_dir():
    """cache_dir(), created and writable, or a one-line RuntimeError saying what to do."""
    folder = cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
        why = None if os.access(folder, os.W_OK | os.X_OK) else "not writable"
    except OSError as e:  # XDG_CACHE_HOME names a file, HOME is read-only, ...
        why = e.strerror
    if why:
        raise RuntimeError(f"{folder}: cannot keep the Inception weights there ({why}); set XDG_CACHE_HOME "
                           f"to a writable folder or pass --inception PATH")
    return folder


def hub_cache_dir():
    """Where huggingface_hub (through which timm downloads) keeps files, by its rules."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(xdg_cache_home(), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def hub_offline():
    """HF_HUB_OFFLINE set to a true value: a user who said "no network" means it here too."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path):
    """The file's sha256, read once per version of the file (its size and
    modification time): a train.py start asks for the 224 MB weights' up to
    three times (the cache lookup, the download check, the checkpoint record)."""
    info = os.stat(regular_file(path))
    return _sha256(os.path.realpath(path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _sha256(path, size, mtime_ns):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hub_cached_inception():
    """timm's weights where huggingface_hub downloaded them, if their sha256 is
    the expected one (a snapshot may hold another revision), else None."""
    snapshots = os.path.join(hub_cache_dir(), "models--timm--inception_resnet_v2.tf_in1k", "snapshots")
    try:
        revisions = sorted(os.listdir(snapshots))
    except OSError:  # none there (or unreadable): nothing to reuse
        return None
    for revision in revisions:
        path = os.path.join(snapshots, revision, "model.safetensors")
        try:
            if os.path.isfile(path) and sha256_of(path) == INCEPTION_SHA256:
                return path
        except (OSError, ValueError):  # unreadable, or gone meanwhile: not usable
            continue
    return None


def manual_steps(path, why):
    """The error of a download that cannot happen: what to do by hand instead."""
    return RuntimeError(
        f"could not download the Inception-ResNet-v2 weights ({why}). Download\n  {INCEPTION_URL}\n"
        f"by hand and save it as\n  {path}\nor pass --inception PATH (a .safetensors/.pth "
        f"file), or --inception none to train without the global branch.")


def fetch(url, dest):
    """Copy url into the file dest with a progress line on stderr, ended however
    the copy ends (done, failed, Ctrl-C), so the next message starts a line."""
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(dest, "wb") as f:
            length = str(r.headers.get("Content-Length", ""))
            total = f"/{int(length) / 1e6:.0f}" if length.isdigit() else ""  # servers may not say
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                print(f"\r  {done / 1e6:.0f}{total} MB", end="", file=sys.stderr, flush=True)
    finally:
        if done:
            print(file=sys.stderr)


def download_inception(path):
    """Download the default weights to `path`, through a temporary file of this
    process's own (several may download at once), checked before it is renamed
    into place. Whatever stops it, the temporary file goes too."""
    make_cache_dir()
    partial = f"{path}.part{os.getpid()}"
    print(f"downloading the Inception-ResNet-v2 weights (224 MB) to {path}", file=sys.stderr)
    try:
        fetch(INCEPTION_URL, partial)
        digest = sha256_of(partial)
        if digest != INCEPTION_SHA256:
            raise RuntimeError(f"downloaded file has sha256 {digest}, expected {INCEPTION_SHA256}")
        if not os.path.exists(path):  # else another process finished first: the same checked bytes
            os.replace(partial, path)
    except OSError as e:  # no network, a stalled or broken connection, a full disk
        raise manual_steps(path, e) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def default_inception_path(download=True):
    """Path of timm's inception_resnet_v2 weights: in the user cache, else where
    timm (huggingface_hub) downloaded them, else downloaded into the user cache
    when allowed (not with HF_HUB_OFFLINE). Neither there nor downloaded: the
    user-cache path, which does not exist."""
    path = os.path.join(cache_dir(), "inception_resnet_v2.tf_in1k.safetensors")
    if os.path.exists(path):
        return path
    found = hub_cached_inception()
    if found or not download:
        return found or path
    if hub_offline():
        raise manual_steps(path, f"HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']}")
    return download_inception(path)


def load_inception(path):
    """A frozen InceptionResNetV2 in eval mode with the weights in `path`."""
    net = InceptionResNetV2()
    load_strict(net, inception_state_dict(path), path)
    return net.eval().requires_grad_(False)
