"""Write four parts of the paper's colorizer yourself.

Each function below is one piece of model.py with its body taken out. Replace
the `raise NotImplementedError(...)` with your code, then run

    python docs/exercises/check.py

It compares your functions with model.py's on random inputs and prints one
line per exercise: pass, not written yet, or the first place where your numbers
differ. Do them in order; exercise 2, the attention, is the heart of the paper.
When they pass,

    python docs/attention_task.py --mine

trains the attention task with YOUR functions in place of the model's, so you
watch your own attention solve it.

Use torch only: importing model.py would be reading the answers.
"""
# What you will need; nothing else.
import math  # noqa: F401

import torch  # noqa: F401
import torch.nn.functional as F  # noqa: F401


def coord_channels(x):
    """Exercise 1. CoordConv (Liu et al. 2018): two channels that tell each pixel
    where it is, so the encoder's convolutions (which look the same everywhere)
    can learn that skies are at the top.

    x: any image batch (B, C, H, W); only its shape, device and dtype matter.
    Returns (B, 2, H, W):
        channel 0 is x, going from -1 at the left column to +1 at the right
        (it varies along W and is the same in every row),
        channel 1 is y, going from -1 at the top row to +1 at the bottom
        (it varies along H and is the same in every column).

    Hints: torch.linspace(-1, 1, steps) gives evenly spaced values with both
    ends included. Create them on x.device with x.dtype, or a GPU run breaks.
    Broadcasting or .expand turns a (W,) row into an (H, W) picture without
    copying. torch.stack puts the two pictures on a new first dimension.
    """
    raise NotImplementedError("exercise 1: coord_channels")


def attention_forward(attention, h, return_attention=False):
    """Exercise 2. Luong "general" attention over the positions of a feature map
    (paper section 3.5): every position can borrow color evidence from anywhere.

    For positions t (the one asking) and s (every one it looks at), with h_t
    the C channels of h at position t:
        q_t      = W_a h_t                                   the query
        alpha_ts = softmax over s of (q_t . h_s / sqrt(C))   where t looks
        c_t      = sum over s of alpha_ts h_s                what t brings back
        out_t    = tanh(W_c [c_t; h_t])                      context and self, mixed

    attention: the module (model.Attention), in place of `self`. Its two
        weights are 1x1 convolutions, which apply a matrix to every position:
        attention.W_a: C -> C channels, attention.W_c: 2C -> C channels.
    h: the fused feature map (B, C, H, W). There are N = H * W positions.
    return_attention: also return alpha.
    Returns (out, alpha): out (B, C, H, W), and alpha (B, N, N) when
    return_attention is True (else None): alpha[b, t] is where position t looks, and sums to 1.

    Hints: apply W_a to the map first, then flatten: (B, C, H, W) -> (B, C, N)
    -> transpose to (B, N, C), one row per position. A batched matrix product
    (@) of the queries (B, N, C) with the keys transposed (B, C, N) gives every
    q_t . h_s at once: (B, N, N). Which dimension is s? The softmax goes over
    that one. Number positions as flatten does (t = row * W + column), and
    reshape back to (B, C, H, W) before W_c; [c_t; h_t] is torch.cat on channels,
    context first.
    """
    raise NotImplementedError("exercise 2: attention_forward")


def fusion_forward(fusion, feats, embedding):
    """Exercise 3. The fusion layer (paper 3.5, from Deep Koalarization): the
    Inception's one vector per image, what the photo shows, joins every position.

    fusion: the module (model.Fusion), in place of `self`; fusion.conv is a 1x1
        convolution from C + E channels to C.
    feats: the encoder's features (B, C, h, w).
    embedding: the Inception's output (B, E), or None for a model without the
        global branch (then fusion.conv goes from C to C).
    Returns ReLU(fusion.conv([feats; embedding tiled over every position])),
    (B, C, h, w). With embedding None: ReLU(fusion.conv(feats)).

    Hints: embedding[:, :, None, None] is (B, E, 1, 1); .expand(B, E, h, w)
    tiles it without copying. Concatenate on channels, feats first.
    Use embedding.to(feats.dtype): under mixed precision the two differ.
    """
    raise NotImplementedError("exercise 3: fusion_forward")


def colorization_loss(pred_ab, true_ab):
    """Exercise 4. The training loss (paper section 4.2): the mean squared error
    between the predicted and the true a*b*. The paper's, for one image,

        C = 1/(2HW) sum over k in (a, b), rows i, columns j of (X_kij - X~_kij)^2,

    averaged over the B images of the batch: the mean over all B * 2 * H * W values.

    pred_ab, true_ab: (B, 2, H, W), a*b* / 128 (lab.py's scaling).
    Returns a scalar tensor (shape ()), that loss.backward() can start from.
    """
    raise NotImplementedError("exercise 4: colorization_loss")
