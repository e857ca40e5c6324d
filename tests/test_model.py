"""The colorizer beyond test_colorize.py's shapes, variants and attention
formula: the switches one at a time, bad inputs, the attention maps, padding,
CoordConv's channels, and a small one that learns a picture."""

import pytest
import torch

import lab
import model
import runs


def checkerboard(size=64, cell=16):
    """An RGB checkerboard of orange and blue squares: two lightnesses, two colors."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((yy // cell + xx // cell) % 2).bool()
    rgb = torch.empty(3, size, size)
    for c, (a, b) in enumerate(zip((1.0, 0.9, 0.2), (0.1, 0.2, 0.8))):
        rgb[c] = torch.where(mask, torch.tensor(a), torch.tensor(b))
    return rgb


def test_coords_and_attention_are_switched_one_at_a_time():
    """The 2x2 of the course's ablation: attention and CoordConv apart, the
    paper's model (both) and Deep Koalarization's (neither) as the defaults
    (test_colorize.py). Attention gives maps of where each position looks; the
    coordinates let the network color a flat gray photo unevenly (with
    replicate padding nothing else can)."""
    flat = torch.full((1, 1, 48, 64), 0.3)
    for variant, coords in [("attention", False), ("baseline", True)]:
        torch.manual_seed(0)
        net = model.Colorizer(model.ColorizerConfig(variant=variant, coords=coords, width=8, global_branch=False))
        with torch.no_grad():  # training mode: BatchNorm scales whatever varies to a spread of one
            ab, alpha = net.train()(flat, return_attention=True)
        assert (alpha is not None) == (variant == "attention"), variant
        spread = ab.std(dim=(2, 3)).max().item()
        assert (spread > 0.05) if coords else (spread < 1e-6), (variant, coords, spread)


@pytest.mark.parametrize("key,value", [("variant", "transformer"), ("padding", "reflect"), ("coords", 1),
                                       ("width", 1), ("width", 4096), ("embed_dim", "1000")])
def test_a_checkpoint_config_outside_the_networks_choices_is_refused(key, value):
    """What builds a network from a file judges its config first: an unknown
    variant or padding, a flag that is not a bool, a width out of range."""
    config = {**vars(model.ColorizerConfig(width=8)), key: value}
    assert key in runs.malformed({"config": config, "model": {}})
    default = vars(model.ColorizerConfig(width=8))
    assert "no padding" in runs.malformed({"config": {k: v for k, v in default.items() if k != "padding"}, "model": {}})


def test_colorizer_returns_attention_maps_for_visualization():
    net = model.Colorizer(model.ColorizerConfig(global_branch=False, width=8)).eval()
    ab, alpha = net(torch.zeros(1, 1, 32, 48), return_attention=True)
    assert ab.shape == (1, 2, 32, 48) and alpha.shape == (1, 4 * 6, 4 * 6)


def test_replicate_padding_sees_no_edge():
    """A constant gray photo is the same everywhere, so a model without
    coordinates should color it the same everywhere: with replicate padding it
    does; zero padding marks the edges (the colored frame)."""
    torch.manual_seed(0)
    flat = torch.full((1, 1, 48, 64), 0.3)
    spread = {}
    for padding in ("zeros", "replicate"):
        net = model.Colorizer(model.ColorizerConfig("baseline", False, global_branch=False, width=8, padding=padding))
        with torch.no_grad():
            spread[padding] = net.eval()(flat).std(dim=(2, 3)).max().item()
    assert spread["replicate"] < 1e-6 < spread["zeros"], spread


def test_coord_channels_span_minus_one_to_one():
    grid = model.coord_channels(torch.zeros(2, 1, 3, 5))
    assert grid.shape == (2, 2, 3, 5)
    assert torch.equal(grid[0, 0, 0], torch.linspace(-1, 1, 5))   # x varies along width
    assert torch.equal(grid[0, 1, :, 0], torch.linspace(-1, 1, 3))  # y along height


@pytest.mark.parametrize("variant", ["attention", "baseline"])
def test_small_colorizer_overfits_a_colored_checkerboard(variant):
    torch.manual_seed(0)
    lightness, ab = lab.lab_to_net(lab.rgb_to_lab(checkerboard())[None])
    net = model.Colorizer(model.ColorizerConfig(variant=variant, width=16))
    emb = torch.randn(1, 1000)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(120):
        loss = torch.nn.functional.mse_loss(net(lightness, emb), ab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::20]
