"""Where the attention looks: its statistics, the PNG figure and the HTML explorer.

The attention of model.Attention is a matrix alpha (N, N) over the positions of
the fused feature map, an (h/8, w/8) grid of the network's copy: row t holds
how much position t (the query) takes from every position s (rows sum to 1).
Everything here draws or summarizes those rows, on one honest scale: each
weight against the uniform 1/N, on a log scale, black at or below uniform and
full at `peak` times it. Weights that are nearly uniform then look nearly
black, instead of being stretched to their own maximum.

  attention_stats   how concentrated each row is (entropy, share of the top 5%)
  heat_panel        one row as a heat map over the picture, the query ringed
  attention_figure  colorize.py's NAME_attention.png: four queries side by side
  attention_page    NAME_attention.html: every query under the pointer

Used by colorize.py --attention and docs/attention_task.py.
"""
import base64
import html
import io
import json
import math
import re

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from data import printable, to_tensor
from lab import to_uint8


PEAK = 16  # the heat is full at 16 times the uniform weight
PAGE_BYTES = 4_000_000  # the explorer embeds at most this many quantized weights (queries x keys)


def attention_stats(alpha):
    """How concentrated attention weights (Q, N) are, per query (rows sum to 1):
    entropy as a share of its uniform maximum log N (1: every position weighed
    alike), and the weight on the top 5% of positions (uniform: 5%), with
    their indices."""
    entropy = -(alpha * alpha.clamp_min(1e-30).log()).sum(-1) / math.log(alpha.shape[-1])
    top = alpha.topk(max(1, round(0.05 * alpha.shape[-1])), dim=-1)
    return entropy, top.values.sum(-1), top.indices


def heat_panel(picture, weights, grid, peak=PEAK, query=None):
    """One query's weights (N,) over the (gh, gw) grid, drawn over `picture`
    (PIL, size a multiple of 8) in gray: 35% picture, 65% heat; a ring at the
    query's grid cell (qx, qy), if given. -> PIL RGB of the picture's size.
    The heat is 0 at or below uniform, 1 at `peak` times it, log in between,
    on a ramp of black, red, yellow, white."""
    (w, h), (gh, gw) = picture.size, grid
    gray = to_tensor(picture.convert("L")) / 255                      # (1, h, w)
    times_uniform = (weights.float() * weights.numel()).reshape(1, 1, gh, gw)
    hot = (times_uniform.clamp_min(1).log() / math.log(peak)).clamp(0, 1)
    hot = F.interpolate(hot, size=(h, w), mode="bilinear", align_corners=False)[0, 0]  # (h, w)
    ramp = torch.stack([(3 * hot - k).clamp(0, 1) for k in range(3)])  # (3, h, w)
    panel = Image.fromarray(to_uint8(0.35 * gray + 0.65 * ramp).permute(1, 2, 0).numpy())
    if query is not None:
        cx, cy, r = (query[0] + 0.5) * w / gw, (query[1] + 0.5) * h / gh, 7
        ImageDraw.Draw(panel).ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 255, 255), width=3)
    return panel


def attention_figure(copy, colored_copy, alpha):
    """The colorized copy, then one panel for each of four query points (a
    ring, at the centres of a 2 x 2 grid): that point's attention weights over
    the gray picture, and a line of their statistics. alpha: (N, N) over the
    h/8 x w/8 feature grid of `copy`. -> (panels, their labels, the line);
    outputs.side_by_side puts the panels in a row."""
    fh, fw = copy.height // 8, copy.width // 8
    queries = [((2 * gx + 1) * fw // 4, (2 * gy + 1) * fh // 4) for gy in range(2) for gx in range(2)]
    weights = alpha[[qy * fw + qx for qx, qy in queries]]              # (rings, N)
    entropy, top, top_sets = attention_stats(weights)
    panels = [colored_copy] + [heat_panel(copy, weights[k], (fh, fw), PEAK, q) for k, q in enumerate(queries)]
    labels = ["colorized"] + [f"ring {k + 1}: top 5% hold {t:.0%}" for k, t in enumerate(top)]
    # Do the rings look at the same places? The share of one ring's top 5% that another's holds too.
    overlap = [len(set(a.tolist()) & set(b.tolist())) / len(a) for i, a in enumerate(top_sets) for b in top_sets[:i]]
    all_entropy, all_top, _ = attention_stats(alpha)
    line = (f"rings 1-{len(queries)}: entropy {'/'.join(f'{e:.2f}' for e in entropy)} of uniform, top 5% of "
            f"positions hold {'/'.join(f'{t:.0%}' for t in top)} of the weight (uniform: 5%); all "
            f"{alpha.shape[0]} positions: entropy {all_entropy.mean():.2f}, top 5% {all_top.mean():.0%}; "
            f"the rings' top 5% overlap {sum(overlap) / len(overlap):.0%}")
    return panels, labels, line

# -----------------------------------------------------------------------------
# The explorer: one self-contained HTML file (no network, no external script,
# style or font), the pictures and the quantized weights inside it.

# A weight w is stored as one byte: 16 steps per doubling of w * N, from 1/256
# of uniform (0) through uniform (128) to 128 times it (255). Every weight
# between those ends comes back within 2.2% (half a step: 2 ** (1/32)).
STEPS_PER_DOUBLING, UNIFORM_CODE = 16, 128


def page_queries(grid, keys):
    """The query grid the page embeds: every position, or every stride-th row
    and column so that queries x keys stays within PAGE_BYTES. -> (stride,
    rows, cols, flat indices into the N positions)."""
    gh, gw = grid
    stride = 1
    while math.ceil(gh / stride) * math.ceil(gw / stride) * keys > PAGE_BYTES:
        stride += 1
    rows, cols = range(0, gh, stride), range(0, gw, stride)
    return stride, len(rows), len(cols), [r * gw + c for r in rows for c in cols]


def png_data_url(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def attention_page(picture, alpha, title=""):
    """NAME_attention.html: the picture (PIL, size a multiple of 8) and, under
    the pointer (hover, or tap), that position's row of alpha (N, N) as a heat
    map over the gray picture, on the scale of heat_panel, with its statistics.
    The fragment #x=0.25,y=0.60 (fractions of width and height) selects a
    point, so notes can link to a view. -> the page's text, its data the JSON
    of its script element id="data"."""
    title = printable(title or "attention")  # a file name: any bytes, shown escaped
    w, h = picture.size
    grid = (h // 8, w // 8)
    n = grid[0] * grid[1]
    if tuple(alpha.shape) != (n, n):
        raise ValueError(f"attention of shape {tuple(alpha.shape)} for a {w}x{h} picture: needs ({n}, {n})")
    stride, rows, cols, queries = page_queries(grid, n)
    rows_alpha = alpha[queries].float()                               # (Q, N)
    entropy, top, _ = attention_stats(rows_alpha)
    all_entropy, all_top, _ = attention_stats(alpha.float())
    log2 = (rows_alpha.double() * n).clamp_min(1e-300).log2()         # the codes of the weights, as said above
    codes = (log2 * STEPS_PER_DOUBLING + UNIFORM_CODE).round().clamp(0, 255).to(torch.uint8)
    data = json.dumps({
        "title": title, "width": w, "height": h, "grid": list(grid), "stride": stride,
        "query_grid": [rows, cols], "peak": PEAK, "steps": STEPS_PER_DOUBLING, "uniform_code": UNIFORM_CODE,
        "entropy": [round(e, 3) for e in entropy.tolist()], "top5": [round(t, 3) for t in top.tolist()],
        "mean_entropy": round(all_entropy.mean().item(), 3), "mean_top5": round(all_top.mean().item(), 3),
        "picture": png_data_url(picture.convert("RGB")), "gray": png_data_url(picture.convert("L").convert("RGB")),
        "weights": base64.b64encode(codes.numpy().tobytes()).decode("ascii")})
    # <, > and & as JSON escapes, so that no name can close the script element or open a comment in it
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    fill = {"TITLE": html.escape(title), "DATA": '<script type="application/json" id="data">' + data + "</script>"}
    return re.sub("TITLE|DATA", lambda m: fill[m.group()], PAGE)  # one pass: a name holding DATA stays a name


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TITLE: where each point looks</title>
<style>
body { font: 15px/1.4 sans-serif; margin: 16px; color: #222; }
figure { margin: 0; flex: 1 1 320px; max-width: 640px; }
figcaption, small { font-size: 13px; color: #555; }
canvas { display: block; width: 100%; cursor: crosshair; touch-action: none; }
#stats { margin: 10px 0; font-variant-numeric: tabular-nums; }
#legend { display: inline-block; vertical-align: middle; height: 12px; width: 256px;
  background: linear-gradient(to right, #000, #f00 33%, #ff0 67%, #fff); }
</style></head><body>
<h1 style="font-size:20px">TITLE: where each point looks</h1>
<p>Move the pointer over either picture (or tap it) to choose a query point: the right-hand map shows how much
that point's attention takes from every position. <small>The heat is each weight against the uniform 1/N on a
log scale: black at or below uniform, white at <span class="peak"></span> times it. A link ending in
<code>#x=0.25,y=0.60</code> (fractions of width and height) opens at that point; clicking sets it.</small></p>
<div style="display: flex; flex-wrap: wrap; gap: 12px">
<figure><canvas id="picture"></canvas><figcaption>the picture, the query ringed</figcaption></figure>
<figure><canvas id="heat"></canvas><figcaption>its attention weights over the gray picture</figcaption></figure>
</div>
<div id="stats"></div>
<div><span id="legend"></span><small>&nbsp;uniform &rarr; <span class="peak"></span>&times; uniform</small></div>
<p><small id="all"></small></p>
DATA
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const W = D.width, H = D.height, [GH, GW] = D.grid, N = GH * GW, [QR, QC] = D.query_grid, S = D.stride;
const codes = Uint8Array.from(atob(D.weights), c => c.charCodeAt(0));
const pct = v => Math.round(100 * v) + "%";
for (const span of document.querySelectorAll(".peak")) span.textContent = D.peak;
document.getElementById("all").textContent = `All ${N} positions: mean entropy ${D.mean_entropy.toFixed(2)} of ` +
  `uniform, the top 5% of positions hold ${pct(D.mean_top5)} of the weight on average (uniform: 5%).` +
  (S > 1 ? ` Queries every ${S} positions (the page's size is bounded).` : "");
const [pic, heat] = ["picture", "heat"].map(id => Object.assign(document.getElementById(id), {width: W, height: H})
  .getContext("2d"));
const images = [D.picture, D.gray].map(src => Object.assign(new Image(), {src}));
const cells = Object.assign(document.createElement("canvas"), {width: GW, height: GH});
const cellData = new ImageData(new Uint8ClampedArray(4 * N).fill(166), GW);  // alpha 166/255: heat_panel's 65%
// The weight of query row q on key k, as the PNG's heat: a multiple of uniform
const weight = (q, k) => Math.pow(2, (codes[q * N + k] - D.uniform_code) / D.steps);

function show(fx, fy) {  // fractions of width and height -> the nearest embedded query
  const r = Math.min(QR - 1, Math.max(0, Math.round((Math.min(fy, 0.9999) * GH - 0.5) / S)));
  const c = Math.min(QC - 1, Math.max(0, Math.round((Math.min(fx, 0.9999) * GW - 0.5) / S)));
  const q = r * QC + c, qx = c * S, qy = r * S;
  for (let k = 0; k < N; k++) {  // heat_panel's heat and ramp; the array clamps each value to 0..255
    const h = Math.log(weight(q, k)) / Math.log(D.peak);
    for (let j = 0; j < 3; j++) cellData.data[4 * k + j] = 255 * (3 * h - j);
  }
  const row = codes.subarray(q * N, (q + 1) * N), best = row.reduce((b, code, k) => code > row[b] ? k : b, 0);
  cells.getContext("2d").putImageData(cellData, 0, 0);
  pic.drawImage(images[0], 0, 0);
  heat.drawImage(images[1], 0, 0);
  heat.drawImage(cells, 0, 0, W, H);
  for (const ctx of [pic, heat]) {  // the query ringed
    ctx.strokeStyle = "#0ff"; ctx.lineWidth = 3; ctx.beginPath();
    ctx.arc((qx + 0.5) * W / GW, (qy + 0.5) * H / GH, 7, 0, 2 * Math.PI); ctx.stroke();
  }
  document.getElementById("stats").textContent = `Query at x=${((qx + 0.5) / GW).toFixed(2)}, ` +
    `y=${((qy + 0.5) / GH).toFixed(2)} (grid cell ${qx}, ${qy} of ${GW} x ${GH}): entropy ${D.entropy[q].toFixed(2)} ` +
    `of uniform; the top 5% of positions hold ${pct(D.top5[q])} of its weight (uniform: 5%); the strongest, ` +
    `${weight(q, best).toFixed(1)}x uniform, at cell ${best % GW}, ${Math.floor(best / GW)}.`;
}

// the point of the fragment #x=..,y=.., else the middle
const fromHash = () => (/x=([0-9.]+),y=([0-9.]+)/.exec(location.hash) || ["", "0.5", "0.5"]).slice(1).map(parseFloat);

const pointer = ev => [ev.offsetX / ev.target.clientWidth, ev.offsetY / ev.target.clientHeight];
for (const c of [pic.canvas, heat.canvas]) {
  c.addEventListener("pointermove", ev => { if (ev.pointerType === "mouse") show(...pointer(ev)); });
  c.addEventListener("pointerdown", ev => {  // a tap (or click) chooses the point and puts it in the link
    const [fx, fy] = pointer(ev); show(fx, fy);
    history.replaceState(null, "", "#x=" + fx.toFixed(2) + ",y=" + fy.toFixed(2));
  });
  c.addEventListener("pointerleave", ev => { if (ev.pointerType === "mouse") show(...fromHash()); });
}
window.addEventListener("hashchange", () => show(...fromHash()));
Promise.all(images.map(im => im.decode())).then(() => show(...fromHash()));
</script>
</body></html>
"""
