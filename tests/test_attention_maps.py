"""Where attention looks (attention_maps.py): its statistics, the figure,
and the explorer page, which embeds the model's own weights, stays a few MB,
holds any file name as text, and opens from disk in a real browser."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import attention_maps
import colorize
import data
import lab
import outputs
from conftest import make_photo, page_weights, read_page_data, run


def browser():
    """Debian's headless Chromium, or None (.ci/run installs it; a bare machine may lack it)."""
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


def test_attention_statistics_tell_uniform_weights_from_peaked_ones():
    uniform, peaked = torch.full((3, 400), 1 / 400), torch.eye(400)[:3]
    entropy, top, _ = attention_maps.attention_stats(uniform)
    assert torch.allclose(entropy, torch.ones(3)) and torch.allclose(top, torch.full((3,), 0.05))
    entropy, top, _ = attention_maps.attention_stats(peaked)
    assert torch.allclose(entropy, torch.zeros(3), atol=1e-6) and torch.allclose(top, torch.ones(3))
    # the figure: uniform weights draw no heat at all (the panel is the dimmed gray picture)
    copy = Image.new("RGB", (160, 80), (100, 150, 200))
    *row, line = attention_maps.attention_figure(copy, copy, torch.full((200, 200), 1 / 200))
    sheet = outputs.side_by_side(*row)
    gray_level = np.asarray(copy.convert("L"))[0, 0]
    panel = np.asarray(sheet)[18:, 164:324]  # ring 1's panel: red is 0.35 gray (the ring is cyan: no red)
    assert panel[..., 0].max() <= round(0.35 * gray_level) + 1, panel[..., 0].max()
    assert "entropy 1.00/1.00/1.00/1.00 of uniform" in line and "top 5% of positions hold 5%/5%/5%/5%" in line
    *row, line = attention_maps.attention_figure(copy, copy, torch.eye(200))
    sheet = outputs.side_by_side(*row)
    assert "entropy 0.00" in line and "hold 100%" in line
    assert np.asarray(sheet)[18:, 164:324, 0].max() > 200  # all the weight on one position: full heat there


def test_the_attention_explorer_embeds_the_models_own_weights(tiny_ckpt, tmp_path):
    """NAME_attention.html is one file that needs nothing from outside, and the
    weights it draws are the model's alpha to within half a quantization step."""
    photo = make_photo(tmp_path / "p.jpg", size=(120, 80))
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--attention")
    assert r.returncode == 0, r.stderr
    text = open(tmp_path / "p_attention.html", encoding="utf-8").read()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)|https?://|@import|url\(""", text)  # self-contained
    page = read_page_data(text)
    loaded = colorize.load(tiny_ckpt, device="cpu")
    (_, alpha, copy), = colorize.predict_all(loaded, [Image.open(photo).convert("RGB")], return_attention=True)
    assert (page["width"], page["height"]) == copy.size and page["grid"] == [copy.height // 8, copy.width // 8]
    n = alpha.shape[1]
    assert page["stride"] == 1 and page_weights(page, n).shape == alpha.shape  # every query, at this size
    step = 2 ** (1 / 32)  # half a step of 1/16 of a doubling
    ratio = page_weights(page, n) / alpha.double()
    assert ((ratio >= 1 / step - 1e-6) & (ratio <= step + 1e-6)).all(), (ratio.min(), ratio.max())
    entropy, top, _ = attention_maps.attention_stats(alpha)
    assert torch.allclose(torch.tensor(page["entropy"]), entropy, atol=6e-4)
    assert torch.allclose(torch.tensor(page["top5"]), top, atol=6e-4)


def test_the_explorer_keeps_peaked_weights_and_its_size_bounded():
    """Weights far from uniform come back as exactly as near ones (within the
    stored range of 1/256 to 128 times uniform); a grid too large for every
    query embeds every stride-th one, and the page stays a few MB."""
    picture = Image.new("RGB", (64, 48), (90, 120, 60))
    alpha = torch.softmax(3 * torch.randn(48, 48, generator=torch.Generator().manual_seed(0)), dim=-1)
    page = read_page_data(attention_maps.attention_page(picture, alpha, "peaked"))
    back, n = page_weights(page, 48), 48
    kept = (alpha * n > 1 / 250) & (alpha * n < 125)
    ratio = back[kept] / alpha.double()[kept]
    assert ratio.min() > 2 ** (-1 / 32) - 1e-6 and ratio.max() < 2 ** (1 / 32) + 1e-6
    assert (back[alpha * n < 1 / 260] <= 1.01 / 256 / n).all()  # below the range: its floor
    assert kept.float().mean() > 0.5 and (alpha * n).max() > 16  # a spread of weights, some far above uniform
    stride, rows, cols, queries = attention_maps.page_queries((64, 256), 64 * 256)
    assert stride > 1 and rows * cols * 64 * 256 <= attention_maps.PAGE_BYTES and queries[1] == stride
    with pytest.raises(ValueError, match="needs"):
        attention_maps.attention_page(picture, alpha[:40, :40])


def test_the_explorer_page_holds_any_file_name_as_text():
    """A name is data: not UTF-8, holding the page's own placeholders, or
    what would open a comment in the script element, the page stays one page
    with one data block, and the name comes back as it is shown."""
    picture = Image.new("RGB", (32, 16), (90, 120, 60))
    alpha = torch.full((8, 8), 1 / 8)
    for name in ("caf\udce9.png", "DATA_001 TITLE.png", "b<!--<script>.png", "x</script><b>&amp;.png"):
        page = attention_maps.attention_page(picture, alpha, name)
        page.encode("utf-8")  # writable as the file it is saved to
        assert page.count('id="data"') == 1 and page.count("<script") == 2, name
        assert page.count("</script>") == 2 and "<!--" not in page
        assert read_page_data(page)["title"] == data.printable(name)


@pytest.mark.skipif(not browser() and not os.environ.get("CI"), reason="no headless Chromium here")
def test_the_explorer_opens_from_disk_and_its_fragment_chooses_the_point(tiny_ckpt, tmp_path):
    """In a real browser, from a file:// URL: the fragment #x=..,y=.. selects
    the query (said under the pictures), and two fragments draw two views."""
    photo = make_photo(tmp_path / "p.jpg", size=(160, 96))
    assert run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--attention").returncode == 0
    page = tmp_path / "p_attention.html"
    page_data = read_page_data(page.read_text())
    gh, gw = page_data["grid"]
    shots = []
    for k, (x, y) in enumerate([(0.1, 0.1), (0.9, 0.8)]):
        url = f"{page.as_uri()}#x={x},y={y}"
        common = [browser(), "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        qx, qy = min(gw - 1, int(x * gw)), min(gh - 1, int(y * gh))
        stats = re.search(r'<div id="stats">([^<]*)', dom).group(1)
        assert f"(grid cell {qx}, {qy} of {gw} x {gh})" in stats, stats
        assert f"entropy {page_data['entropy'][qy * gw + qx]:.2f} of uniform" in stats, stats
        shot = tmp_path / f"view{k}.png"
        subprocess.run([*common, "--window-size=900,600", f"--screenshot={shot}", url], capture_output=True,
                       timeout=120)
        shots.append(np.asarray(Image.open(shot).convert("RGB")).astype(int))
    assert np.abs(shots[0] - shots[1]).sum() > 0  # the ring and the heat moved


def test_the_attention_kept_is_the_networks_own_among_the_pictures_positions(tiny_ckpt):
    """predict_ab pads the copy by PAD pixels; the attention it returns is the
    network's, its rows and columns of the border cells dropped, renormalized."""
    loaded = colorize.load(tiny_ckpt, device="cpu")
    copy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    _, alpha = colorize.predict_ab(loaded, [copy], return_attention=True)
    gh, gw, cut = 32 // 8, 48 // 8, colorize.PAD // 8
    lightness = lab.l_to_net(lab.rgb_to_l(data.to_tensor(copy)[None]))
    padded = torch.nn.functional.pad(lightness, (colorize.PAD,) * 4, mode="replicate")
    with torch.no_grad():
        _, full = loaded.net(padded, None, return_attention=True)  # over the padded grid
    width = gw + 2 * cut
    inside = [(y + cut) * width + x + cut for y in range(gh) for x in range(gw)]
    expected = full[0][inside][:, inside]
    expected = expected / expected.sum(-1, keepdim=True)
    assert alpha.shape == (1, gh * gw, gh * gw) and torch.allclose(alpha[0], expected, atol=1e-6)


def test_the_explorer_page_carries_the_weights_and_how_to_read_them():
    """Read back from the page alone (no helper of the module): every weight
    within half a quantization step, for a name that tries to close the script."""
    picture = Image.new("RGB", (64, 48), (90, 120, 60))
    alpha = torch.softmax(3 * torch.randn(48, 48, generator=torch.Generator().manual_seed(0)), dim=-1)
    page = read_page_data(attention_maps.attention_page(picture, alpha, "x</script>.png"))
    assert page["title"] == "x</script>.png" and page["grid"] == [6, 8] and page["stride"] == 1
    kept = (alpha * 48 > 1 / 250) & (alpha * 48 < 125)
    ratio = page_weights(page, 48)[kept] / alpha.double()[kept]
    assert kept.float().mean() > 0.5 and 2 ** (-1 / 32) - 1e-6 < ratio.min() <= ratio.max() < 2 ** (1 / 32) + 1e-6
