"""The colorization network of the paper, read top to bottom.

Paper: "Automatic colorization of gray-scale images using deep attention models"
(section 3): an encoder-decoder on the L channel with CoordConv input channels,
fused with a global embedding from a frozen, ImageNet-pretrained
Inception-ResNet-v2 (as in Deep Koalarization, Baldassarre et al. 2017; the
network and its weights are in inception.py), with a Luong-style attention over
the fused feature map before the decoder.

What decides whether a checkpoint fits this network lives with the
checkpoints, in runs.py.

    python -c "import model; print(model.Colorizer(model.ColorizerConfig()))"
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# The colorizer (paper section 3): CoordConv, Encoder, Fusion, Attention, Decoder


@dataclass
class ColorizerConfig:
    """The architecture, saved inside every checkpoint so that any script can
    rebuild the network from the file alone."""
    variant: str = "attention"  # "attention" (the paper) or "baseline" (Deep Koalarization)
    coords: bool = True         # CoordConv's x, y input channels (the paper; the baseline has none)
    global_branch: bool = True  # False: no Inception embedding (no weights at hand)
    width: int = 64             # channels of the first encoder conv; the rest scale with it
    embed_dim: int = 1000       # size of the Inception embedding
    # What the 3x3 convolutions see beyond the edge: "replicate" (the edge pixel
    # repeated) or "zeros" (the paper's and Keras's "same" padding). Zeros tell
    # the network where the edge is, and a model trained on small crops paints
    # a faint colored frame there; repeated edge pixels look like more of the picture.
    padding: str = "replicate"


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

    def forward(self, h, return_attention=False):
        """-> (out (B, C, H, W), alpha (B, N, N) or None)."""
        B, C, H, W = h.shape
        # contiguous: the fused CPU kernel refuses strided input and falls back to N x N
        keys = h.flatten(2).transpose(1, 2).contiguous()          # (B, N, C), N = H*W
        queries = self.W_a(h).flatten(2).transpose(1, 2).contiguous()  # (B, N, C)
        if return_attention:
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
        return out, alpha


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
        x = self.fusion(self.encoder(lightness), embedding)       # (B, 4w, H/8, W/8)
        alpha = None
        if self.attention is not None:
            x, alpha = self.attention(x, return_attention)        # alpha: (B, N, N), or None unless asked
        ab = self.decoder(x)                                      # (B, 2, H, W)
        return (ab, alpha) if return_attention else ab
