"""The Inception and its weights (inception.py) beyond test_colorize.py's
logits: its sizes, every way a weights file can be wrong (said in one line,
naming the file), and the download, tried on local files with a fake server:
its checksum, per-process temporary files, the Hugging Face cache, offline."""

import argparse
import hashlib
import io
import json
import os
import signal
import struct
import urllib.error

import pytest
import torch

import inception
from conftest import posix_only, write_safetensors


def test_inception_stem_sizes_at_299():
    net = inception.InceptionResNetV2().eval()
    x = torch.zeros(1, 3, 299, 299)
    sizes = {}
    with torch.no_grad():
        for name, module in net.named_children():
            if name == "classif":
                break
            x = module(x)
            sizes[name] = tuple(x.shape[1:])
    assert sizes["conv2d_1a"] == (32, 149, 149)
    assert sizes["maxpool_5a"] == (192, 35, 35)
    assert sizes["mixed_5b"] == (320, 35, 35)
    assert sizes["mixed_6a"] == (1088, 17, 17)
    assert sizes["mixed_7a"] == (2080, 8, 8)
    assert sizes["conv2d_7b"] == (1536, 8, 8)


def test_inception_embedding_takes_gray_images_to_logits(inception_net):
    gray = torch.rand(2, 1, 64, 80).expand(2, 3, 64, 80)
    emb = inception.inception_embedding(inception_net, gray)
    assert emb.shape == (2, 1000) and torch.isfinite(emb).all()
    assert not emb.requires_grad


def test_a_weights_file_missing_a_tensor_is_refused_by_name(inception_net, tmp_path):
    """Loading is strict: a missing tensor is named, with the file it is missing from."""
    state = inception_net.state_dict()
    del state["conv2d_1a.bn.running_var"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing \(1\): conv2d_1a\.bn\.running_var$"):
        inception.load_inception(tmp_path / "broken.pth")


def test_safetensors_reader_reads_half_precision_and_empty_tensors(tmp_path):
    tensors = {"h": torch.randn(3, 4).half(), "b": torch.randn(5).bfloat16(),
               "i": torch.arange(6).view(2, 3), "e": torch.zeros(0, 4)}
    write_safetensors(tensors, tmp_path / "t.safetensors")
    got = inception.read_safetensors(tmp_path / "t.safetensors")
    assert set(got) == set(tensors)
    for k, t in tensors.items():
        assert got[k].dtype == t.dtype and torch.equal(got[k], t), k


def raw_safetensors(path, header, data=b"", length=None):
    head = json.dumps(header).encode() if isinstance(header, dict) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head) if length is None else length) + head + data)
    return path


@pytest.mark.parametrize("case,why", [
    ("empty", "too short"),
    ("huge header", "does not fit"),
    ("not json", "not JSON"),
    ("json list", "not a JSON object"),
    ("bad dtype", "no known dtype"),
    ("bad shape", "bad shape"),
    ("offsets outside", "outside"),
    ("size mismatch", "needs"),
    ("truncated", "outside"),
])
def test_safetensors_reader_refuses_malformed_files(tmp_path, case, why):
    p = tmp_path / f"{case.replace(' ', '_')}.safetensors"
    ok = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    if case == "empty":
        p.write_bytes(b"\x01\x02")
    elif case == "huge header":
        raw_safetensors(p, ok, bytes(16), length=2**63)
    elif case == "not json":
        raw_safetensors(p, b"{not json", bytes(16))
    elif case == "json list":
        raw_safetensors(p, b"[1, 2]", bytes(16))
    elif case == "bad dtype":
        raw_safetensors(p, {"w": {"dtype": "F33", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "bad shape":
        raw_safetensors(p, {"w": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "offsets outside":
        raw_safetensors(p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}, bytes(16))
    elif case == "size mismatch":
        raw_safetensors(p, {"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "truncated":
        write_safetensors({"w": torch.randn(64, 64)}, p)
        p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match=why) as err:
        inception.read_safetensors(p)
    assert str(p) in str(err.value)


def test_strict_loading_names_missing_unexpected_and_misshaped_keys(inception_net, tmp_path):
    state = dict(inception_net.state_dict())
    del state["repeat.3.branch0.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["classif.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError) as err:
        inception.load_inception(tmp_path / "broken.pth")
    msg = str(err.value)
    for part in ("missing (1): repeat.3.branch0.conv.weight", "unexpected (1): extra.weight",
                 "classif.bias (7,) != (1000,)", "broken.pth"):
        assert part in msg


def test_a_file_that_is_not_weights_is_refused_clearly(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: cannot be read"):
        inception.read_state_dict(junk)
    torch.save({"lr": 0.1}, tmp_path / "config.pt")
    with pytest.raises(ValueError, match="no state dict"):
        inception.read_state_dict(tmp_path / "config.pt")
    # a pickle of objects: refused, without torch's advice to load it unsafely
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match="objects other than tensors, which are not loaded") as refused:
        inception.read_state_dict(tmp_path / "objects.pt")
    assert "weights_only" not in str(refused.value)


@posix_only  # a FIFO, and an alarm should open() wait on it
def test_a_weights_path_that_is_not_a_regular_file_is_refused_before_it_is_opened(tmp_path):
    os.mkfifo(tmp_path / "weights.safetensors")

    def blocked(*_):
        raise TimeoutError("open() waited for a writer to the FIFO")
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        for path, why in [(tmp_path / "weights.safetensors", "not a regular file"),
                          (tmp_path, "not a regular file"), (tmp_path / "gone.pth", "no such file")]:
            for read in (inception.read_state_dict, inception.read_safetensors, inception.sha256_of, inception.load_inception):
                with pytest.raises(ValueError) as err:
                    read(path)
                assert str(err.value) == f"{path}: {why}", read
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -----------------------------------------------------------------------------
# The download, with a fake server


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": "11"}


def isolated_caches(monkeypatch, tmp_path):
    """This project's and Hugging Face's caches under tmp_path, online: the
    user's own caches and settings stay out of the test. Returns cache_dir()."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "xdg" / "colorize"


def no_network(url, timeout):
    raise AssertionError("nothing should be downloaded here")


def hub_snapshot(hub, data):
    """A file as huggingface_hub keeps it: blobs/<sha256>, linked from snapshots/<revision>/."""
    repo = hub / "models--timm--inception_resnet_v2.tf_in1k"
    sha = hashlib.sha256(data).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    (repo / "snapshots" / "e5a4b3c2").mkdir(parents=True)
    os.symlink(os.path.join("..", "..", "blobs", sha), repo / "snapshots" / "e5a4b3c2" / "model.safetensors")
    return repo / "snapshots" / "e5a4b3c2" / "model.safetensors", sha


def test_download_checks_sha256_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(inception.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"not weights"))
    with pytest.raises(RuntimeError, match="sha256"):
        inception.default_inception_path()
    assert os.listdir(tmp_path / "colorize") == []
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(b"not weights").hexdigest())
    path = inception.default_inception_path()
    assert open(path, "rb").read() == b"not weights"
    assert os.listdir(tmp_path / "colorize") == [os.path.basename(path)]


def test_offline_download_explains_the_manual_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(inception.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as err:
        inception.default_inception_path()
    assert inception.INCEPTION_URL in str(err.value) and "--inception none" in str(err.value)


@pytest.mark.parametrize("error", [None, TimeoutError("timed out"), ConnectionResetError("reset"),
                                   KeyboardInterrupt()])
def test_download_without_a_length_shows_megabytes_and_any_failure_leaves_nothing(tmp_path, monkeypatch,
                                                                                 capsys, error):
    """No Content-Length: '2 MB', not '2/0 MB'. A stall, a broken connection or
    Ctrl-C after the first megabyte: no .part file, and the progress line ended."""
    cache = isolated_caches(monkeypatch, tmp_path)
    body = bytes(3 << 20)

    class Response(io.BytesIO):
        headers = {}

        def read(self, n=-1):
            if error is not None and self.tell():
                raise error
            return super().read(n)
    monkeypatch.setattr(inception.urllib.request, "urlopen", lambda url, timeout: Response(body))
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(body).hexdigest())
    if error is None:
        assert open(inception.default_inception_path(), "rb").read() == body
        assert os.listdir(cache) == ["inception_resnet_v2.tf_in1k.safetensors"]
    else:
        with pytest.raises(KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else RuntimeError):
            inception.default_inception_path()
        assert os.listdir(cache) == []
    progress = capsys.readouterr().err.split("\n", 1)[1]  # after the "downloading ..." line
    assert progress == ("\r  1 MB\r  2 MB\r  3 MB\n" if error is None else "\r  1 MB\n")


def test_two_downloads_at_once_each_write_their_own_file(tmp_path, monkeypatch):
    """A second process starts and finishes while the first is under way: each
    writes its own temporary file, and the first then takes the finished one."""
    cache = isolated_caches(monkeypatch, tmp_path)
    body = b"the weights"
    pids = iter(range(1000, 2000))
    monkeypatch.setattr(inception.os, "getpid", lambda: next(pids))
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(body).hexdigest())
    second = []  # the second process's result

    class Racing(io.BytesIO):
        headers = {"Content-Length": str(len(body))}

        def read(self, n=-1):
            if not second:
                second.append("started")
                second.append(inception.default_inception_path())
            return super().read(n)
    monkeypatch.setattr(inception.urllib.request, "urlopen", lambda url, timeout: Racing(body))
    path = inception.default_inception_path()
    assert second[1] == path and open(path, "rb").read() == body
    assert os.listdir(cache) == [os.path.basename(path)]


@posix_only  # the Hugging Face cache links its snapshots to its blobs; HOME
@pytest.mark.parametrize("where", ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"])
def test_weights_timm_downloaded_are_used_without_a_download(tmp_path, monkeypatch, where):
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    setting, hub = {"HF_HUB_CACHE": (tmp_path / "hub", tmp_path / "hub"),
                    "HF_HOME": (tmp_path / "hf", tmp_path / "hf" / "hub"),
                    "XDG_CACHE_HOME": (tmp_path / "xdg", tmp_path / "xdg" / "huggingface" / "hub"),
                    "HOME": (tmp_path / "home", tmp_path / "home" / ".cache" / "huggingface" / "hub")}[where]
    monkeypatch.setenv(where, str(setting))
    f = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, f)
    path, sha = hub_snapshot(hub, f.getvalue())
    monkeypatch.setattr(inception, "INCEPTION_SHA256", sha)
    monkeypatch.setattr(inception.urllib.request, "urlopen", no_network)
    assert inception.default_inception_path() == str(path)
    assert inception.default_inception_path(download=False) == str(path)  # torchrun's other ranks


@posix_only  # the Hugging Face cache links its snapshots to its blobs
@pytest.mark.parametrize("offline", ["1", "true", "YES"])
def test_hf_hub_offline_never_downloads_and_a_hub_file_of_another_sha256_is_ignored(tmp_path, monkeypatch,
                                                                                    offline):
    cache = isolated_caches(monkeypatch, tmp_path)
    hub_snapshot(tmp_path / "hub", b"another revision")
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(inception.urllib.request, "urlopen", no_network)
    with pytest.raises(RuntimeError) as err:
        inception.default_inception_path()
    msg = str(err.value)
    assert inception.INCEPTION_URL in msg and "--inception none" in msg and "HF_HUB_OFFLINE" in msg.splitlines()[0]
    assert inception.default_inception_path(download=False) == str(cache / "inception_resnet_v2.tf_in1k.safetensors")
    assert not cache.exists()


@posix_only  # HOME: Windows has no XDG_CACHE_HOME and finds ~ elsewhere
@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch, xdg):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert inception.cache_dir() == str(tmp_path / ".cache" / "colorize")


def test_a_cache_folder_that_cannot_be_made_or_written_is_one_line(tmp_path, monkeypatch):
    isolated_caches(monkeypatch, tmp_path)
    monkeypatch.setattr(inception.urllib.request, "urlopen", no_network)
    (tmp_path / "file").write_text("XDG_CACHE_HOME names a file")
    (tmp_path / "readonly" / "colorize").mkdir(parents=True)
    for xdg in (tmp_path / "file", tmp_path / "readonly"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
        if xdg.name == "readonly":  # as root, chmod cannot make it read-only: access() says so instead
            monkeypatch.setattr(inception.os, "access", lambda path, mode: False)
        with pytest.raises(RuntimeError) as err:
            inception.default_inception_path()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(str(xdg / "colorize") + ": "), msg
        assert "XDG_CACHE_HOME" in msg and "--inception PATH" in msg
