"""The colorization network of the paper, read top to bottom.

Paper: "Automatic colorization of gray-scale images using deep attention models"
(section 3): an encoder-decoder on the L channel with CoordConv input channels,
fused with a global embedding from a frozen, ImageNet-pretrained
Inception-ResNet-v2 (as in Deep Koalarization, Baldassarre et al. 2017; the
network and its weights are in inception.py), with a Luong-style attention over
the fused feature map before the decoder.

  1. The colorizer: CoordConv, Encoder, Fusion, Attention, Decoder, Colorizer.
  2. Building one: from train.py's flags, or from a checkpoint's config and weights.

    python -c "import model; print(model.Colorizer(model.ColorizerConfig()))"
"""
import math
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
# 2. Building one: from train.py's flags, or from a checkpoint (ValueError: why not)


def config_from_flags(flags, checkpoint=None, source="the checkpoint"):
    """A new colorizer's config from flags.model, .coords, .width, .padding and
    .inception (None: not given), or, with a checkpoint to go on from, the
    checkpoint's config, which the flags may restate but not change."""
    if checkpoint is None:
        return ColorizerConfig(variant=flags.model or "attention", coords=flags.coords and flags.coords == "on",
                               global_branch=flags.inception != "none", width=flags.width or 64,
                               padding=flags.padding or ColorizerConfig.padding)
    config = ColorizerConfig.from_dict(checkpoint["config"])
    has = f"--model {config.variant} --coords {'on' if config.coords else 'off'} --width {config.width} " \
          f"--padding {config.padding}"
    for flag, given, asked, value in [("--model", flags.model, flags.model, config.variant),
                                      ("--width", flags.width, flags.width, config.width),
                                      ("--padding", flags.padding, flags.padding, config.padding),
                                      ("--coords", flags.coords, flags.coords and flags.coords == "on", config.coords)]:
        if given is not None and asked != value:
            raise ValueError(f"{flag} {given}, but {source} is {has}")
    if flags.inception == "none" and config.global_branch:
        raise ValueError(f"--inception none, but {source} has a global branch: it needs the Inception weights "
                         f"(--inception auto or PATH)")
    if flags.inception not in (None, "none") and not config.global_branch:
        raise ValueError(f"--inception {flags.inception}, but {source} has no global branch (trained with "
                         f"--inception none)")
    return config


def averaged_weights(checkpoint):
    """The weights a checkpoint's validation judged, the ones to colorize with:
    the moving average of a train.py ckpt.pt where it has one, else its "model"
    (best.pt and exported copies hold the averaged weights there). Floats as
    float32, whatever they were stored in (the demo is float16)."""
    return {k: v.float() if v.is_floating_point() else v
            for k, v in (checkpoint.get("ema") or checkpoint["model"]).items()}


def load_weights(net, state):
    """net.load_state_dict(state), or ValueError naming the first weight that
    does not fit, or saying that the weights hold NaN or infinite values (a
    diverged run's weights colorize every photo black)."""
    own = net.state_dict()
    for k in [*own, *state]:
        if k not in state or k not in own:
            raise ValueError(f"{k} is {'missing' if k not in state else 'not in this model'}")
        if state[k].shape != own[k].shape:
            raise ValueError(f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"its weights hold NaN or infinite values ({bad[0]}{' and more' if len(bad) > 1 else ''}: "
                         f"a diverged run?)")
    net.load_state_dict(state)
    return net


def from_checkpoint(checkpoint):
    """The Colorizer a checkpoint describes, with its averaged weights."""
    return load_weights(Colorizer(ColorizerConfig.from_dict(checkpoint["config"])), averaged_weights(checkpoint))
