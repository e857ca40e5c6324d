"""The answers to docs/exercises/exercises.py; try the exercises first.

    python docs/exercises/check.py --solutions    # 4 of 4 pass

Written the long way where the long way teaches (the attention as its matrix
products and softmax); model.py computes the same numbers more compactly.
"""
import math

import torch
import torch.nn.functional as F


def coord_channels(x):
    """Exercise 1. CoordConv: (B, C, H, W) -> (B, 2, H, W), x then y in [-1, 1]."""
    B, _, H, W = x.shape
    xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)  # (W,) left to right
    ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)  # (H,) top to bottom
    x_channel = xs[None, :].expand(H, W)      # every row the same: x varies along W
    y_channel = ys[:, None].expand(H, W)      # every column the same: y varies along H
    grid = torch.stack([x_channel, y_channel])                     # (2, H, W)
    return grid.expand(B, 2, H, W)            # the same for every image, no copy


def attention_forward(attention, h, return_attention=False):
    """Exercise 2. Luong "general" attention: (out (B, C, H, W), alpha (B, N, N)
    with return_attention, else None)."""
    B, C, H, W = h.shape
    # One row per position t = row * W + column, as flatten numbers them.
    keys = h.flatten(2).transpose(1, 2)                            # (B, N, C): h_s
    queries = attention.W_a(h).flatten(2).transpose(1, 2)          # (B, N, C): q_t = W_a h_t
    # scores[b, t, s] = q_t . h_s; the 1/sqrt(C) keeps the softmax from saturating
    # as C grows (the dot product of C random terms grows like sqrt(C)).
    scores = queries @ keys.transpose(1, 2) / math.sqrt(C)         # (B, N, N)
    alpha = torch.softmax(scores, dim=-1)     # over s, the last dimension: each row sums to 1
    context = alpha @ keys                    # (B, N, C): c_t = sum_s alpha_ts h_s
    context = context.transpose(1, 2).reshape(B, C, H, W)          # back to a map
    out = torch.tanh(attention.W_c(torch.cat([context, h], dim=1)))  # (B, 2C, H, W) -> (B, C, H, W)
    return out, alpha if return_attention else None


def fusion_forward(fusion, feats, embedding):
    """Exercise 3. Fusion: ReLU(conv([feats; tiled embedding])), (B, C, h, w)."""
    if embedding is not None:
        B, _, h, w = feats.shape
        tiled = embedding.to(feats.dtype)[:, :, None, None].expand(-1, -1, h, w)  # (B, E, h, w)
        feats = torch.cat([feats, tiled], dim=1)                   # (B, C + E, h, w)
    return F.relu(fusion.conv(feats))                              # (B, C, h, w)


def colorization_loss(pred_ab, true_ab):
    """Exercise 4. Mean squared error over every a*b* value: a scalar."""
    return ((pred_ab - true_ab) ** 2).mean()
