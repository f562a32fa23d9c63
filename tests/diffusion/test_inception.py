"""FID Inception-v3 (netlab/diffusion/inception.py): weights-file checks, feature shapes, FID
against `frechet_distance`, an independent PyTorch build of the same network (when torch is
installed), the .pth converter, and `eval.inception_weights` in the image task."""

import pathlib
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from netlab import configlib
from netlab.diffusion import inception
from netlab.diffusion.image_task import ImageDiffusion
from netlab.diffusion.metrics import frechet_distance, gaussian_stats
from netlab.errors import UserError

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "diffusion"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "w.npz"
    np.savez(path, **inception.random_weights(0))
    return str(path)


@pytest.fixture(scope="module")
def net(weights_file):
    return inception.InceptionFeatures(weights_file, batch_size=2)


def _images(n, side=16, seed=0):
    rng = np.random.default_rng(seed)
    smooth = rng.uniform(-1, 1, (n, side // 4, side // 4, 3))  # low-frequency structure
    x = np.repeat(np.repeat(smooth, 4, 1), 4, 2) + 0.3 * rng.standard_normal((n, side, side, 3))
    return np.clip(x, -1, 1).astype(np.float32)


def test_random_weights_load_and_give_finite_pool3_features(net):
    f = net(_images(3))  # 2 + a zero-padded batch of 1
    assert f.shape == (3, 2048) and np.isfinite(f).all() and f.std() > 1e-3
    np.testing.assert_allclose(net(_images(3)[1:]), f[1:], rtol=1e-5, atol=1e-6)  # padding is inert
    # grey -> RGB: traced only (a second compiled program would cost more than the whole file)
    grey = jax.ShapeDtypeStruct((2, 16, 16, 1), np.float32)
    assert jax.eval_shape(inception.features, net.weights, grey).shape == (2, 2048)


@pytest.mark.parametrize("damage", ["drop", "reshape"])
def test_bad_weights_file_names_the_key(tmp_path, damage):
    w = inception.random_weights(1)
    key = "Mixed_6c.branch7x7dbl_3.conv.weight"
    if damage == "drop":
        del w[key]
    else:
        w[key] = w[key][:, :, :, :3]
    np.savez(tmp_path / "bad.npz", **w)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        inception.load_weights(tmp_path / "bad.npz")
    assert "\n" not in str(err.value) and "convert" in str(err.value)


def test_fid_of_a_set_with_itself_is_zero_and_matches_frechet_distance(net):
    a, b = _images(2, seed=1), _images(3, seed=2)  # each Inception call costs ~1 s on a CPU
    fa, fb = net(a), net(b)
    # fid(a, a) is this on net(a), computed above (net.fid's wiring is checked on (a, b) below)
    assert abs(inception.frechet_distance_of_features(fa, fa)) < 1e-9 * np.trace(
        gaussian_stats(fa)[1]
    )
    # net.fid is the Frechet distance of its features' Gaussians: the SVD form it uses here
    # (n < d) against the eigh form of `frechet_distance` on 300 of the 2048 features (two
    # 2048^2 eighs take ~8 s on a busy CPU) and on 30-d features below
    sub = inception.frechet_distance_of_features(fa[:, :300], fb[:, :300])
    assert sub == pytest.approx(
        frechet_distance(*gaussian_stats(fa[:, :300]), *gaussian_stats(fb[:, :300])), rel=1e-5
    )
    expected = inception.frechet_distance_of_features(fa, fb)
    assert expected > 0 and net.fid(a, b) == pytest.approx(expected, rel=1e-5)
    x = np.random.default_rng(0).standard_normal((22, 30)) * np.linspace(
        0.1, 2, 30
    )  # n < d: the SVD form
    assert inception.frechet_distance_of_features(x[:10] + 0.3, x[10:]) == pytest.approx(
        frechet_distance(*gaussian_stats(x[:10] + 0.3), *gaussian_stats(x[10:])), rel=1e-6
    )


def _torch_inception(torch):
    """The FID Inception-v3 from torch.nn layers, written from the architecture description (Szegedy
    et al. 2016; pytorch-fid's FIDInception blocks), independently of the jax code."""
    nn, F = torch.nn, torch.nn.functional

    class Basic(nn.Module):
        def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
            super().__init__()
            self.conv = nn.Conv2d(
                cin, cout, kernel_size, stride=stride, padding=padding, bias=False
            )
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg(x):
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    class A(nn.Module):
        def __init__(self, cin, pool):
            super().__init__()
            self.branch1x1 = Basic(cin, 64, 1)
            self.branch5x5_1, self.branch5x5_2 = Basic(cin, 48, 1), Basic(48, 64, 5, padding=2)
            self.branch3x3dbl_1 = Basic(cin, 64, 1)
            self.branch3x3dbl_2 = Basic(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = Basic(96, 96, 3, padding=1)
            self.branch_pool = Basic(cin, pool, 1)

        def forward(self, x):
            d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat(
                [
                    self.branch1x1(x),
                    self.branch5x5_2(self.branch5x5_1(x)),
                    d,
                    self.branch_pool(avg(x)),
                ],
                1,
            )

    class B(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = Basic(cin, 384, 3, stride=2)
            self.branch3x3dbl_1 = Basic(cin, 64, 1)
            self.branch3x3dbl_2 = Basic(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = Basic(96, 96, 3, stride=2)

        def forward(self, x):
            d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), d, F.max_pool2d(x, 3, stride=2)], 1)

    class C(nn.Module):
        def __init__(self, cin, c7):
            super().__init__()
            row, col = (
                dict(kernel_size=(1, 7), padding=(0, 3)),
                dict(kernel_size=(7, 1), padding=(3, 0)),
            )
            self.branch1x1 = Basic(cin, 192, 1)
            self.branch7x7_1, self.branch7x7_2 = Basic(cin, c7, 1), Basic(c7, c7, **row)
            self.branch7x7_3 = Basic(c7, 192, **col)
            self.branch7x7dbl_1, self.branch7x7dbl_2 = Basic(cin, c7, 1), Basic(c7, c7, **col)
            self.branch7x7dbl_3, self.branch7x7dbl_4 = Basic(c7, c7, **row), Basic(c7, c7, **col)
            self.branch7x7dbl_5 = Basic(c7, 192, **row)
            self.branch_pool = Basic(cin, 192, 1)

        def forward(self, x):
            s = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for i in range(1, 6):
                d = getattr(self, f"branch7x7dbl_{i}")(d)
            return torch.cat([self.branch1x1(x), s, d, self.branch_pool(avg(x))], 1)

    class D(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1, self.branch3x3_2 = Basic(cin, 192, 1), Basic(192, 320, 3, stride=2)
            self.branch7x7x3_1 = Basic(cin, 192, 1)
            self.branch7x7x3_2 = Basic(192, 192, (1, 7), padding=(0, 3))
            self.branch7x7x3_3 = Basic(192, 192, (7, 1), padding=(3, 0))
            self.branch7x7x3_4 = Basic(192, 192, 3, stride=2)

        def forward(self, x):
            s = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return torch.cat(
                [self.branch3x3_2(self.branch3x3_1(x)), s, F.max_pool2d(x, 3, stride=2)], 1
            )

    class E(nn.Module):
        def __init__(self, cin, last):
            super().__init__()
            self.last = last
            self.branch1x1 = Basic(cin, 320, 1)
            self.branch3x3_1 = Basic(cin, 384, 1)
            self.branch3x3_2a = Basic(384, 384, (1, 3), padding=(0, 1))
            self.branch3x3_2b = Basic(384, 384, (3, 1), padding=(1, 0))
            self.branch3x3dbl_1, self.branch3x3dbl_2 = (
                Basic(cin, 448, 1),
                Basic(448, 384, 3, padding=1),
            )
            self.branch3x3dbl_3a = Basic(384, 384, (1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = Basic(384, 384, (3, 1), padding=(1, 0))
            self.branch_pool = Basic(cin, 192, 1)

        def forward(self, x):
            s = self.branch3x3_1(x)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            p = F.max_pool2d(x, 3, stride=1, padding=1) if self.last else avg(x)
            return torch.cat(
                [
                    self.branch1x1(x),
                    self.branch3x3_2a(s),
                    self.branch3x3_2b(s),
                    self.branch3x3dbl_3a(d),
                    self.branch3x3dbl_3b(d),
                    self.branch_pool(p),
                ],
                1,
            )

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = Basic(3, 32, 3, stride=2)
            self.Conv2d_2a_3x3 = Basic(32, 32, 3)
            self.Conv2d_2b_3x3 = Basic(32, 64, 3, padding=1)
            self.Conv2d_3b_1x1 = Basic(64, 80, 1)
            self.Conv2d_4a_3x3 = Basic(80, 192, 3)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
            self.Mixed_6a = B(288)
            self.Mixed_6b, self.Mixed_6c = C(768, 128), C(768, 160)
            self.Mixed_6d, self.Mixed_6e = C(768, 160), C(768, 192)
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = D(768), E(1280, False), E(2048, True)

        def forward(self, x):  # NCHW in [-1, 1]
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(
                self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2))), 3, stride=2
            )
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)

    return Net().eval()


def test_matches_independent_pytorch_build_and_converter(tmp_path):
    torch = pytest.importorskip("torch", reason="torch gives the independent Inception check")
    model = _torch_inception(torch)
    w = inception.random_weights(2)
    sd = {k: torch.from_numpy(v) for k, v in w.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    state = dict(
        model.state_dict(), **{"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    )
    torch.save(state, tmp_path / "w.pth")
    inception.main(["convert", str(tmp_path / "w.pth"), str(tmp_path / "w.npz")])
    x = _images(2, side=16, seed=3)  # the shape `net` compiled: one Inception program per file
    with torch.no_grad():
        ref = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    got = inception.InceptionFeatures(str(tmp_path / "w.npz"), batch_size=2)(x)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_convert_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="no such file"):
        inception.main(["convert", str(tmp_path / "none.pth"), str(tmp_path / "w.npz")])
    (tmp_path / "w.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(SystemExit, match="needs torch"):
        inception.main(["convert", str(tmp_path / "w.pth"), str(tmp_path / "w.npz")])


def _rgb_npz(tmp_path, n=6, side=16):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "rgb.npz",
        x=rng.uniform(-1, 1, (n, side, side, 3)).astype(np.float32),
        label=rng.integers(0, 10, n),
    )
    return str(tmp_path / "rgb.npz")


def test_image_task_fid_from_config(tmp_path, weights_file):
    base = {
        "data.source": "npz",
        "data.path": _rgb_npz(tmp_path),
        "data.image_size": 16,  # 2 samples of 16x16 RGB: the program `net` compiled
        "model.patch": 2,
        "model.depth": 1,
        "model.width": 32,
        "model.num_heads": 2,
        "eval.num_samples": 2,
        "diffusion.sample_steps": 2,
    }
    c = configlib.load(
        str(CONFIGS / "cifar10_dit.py"),
        "cpu",
        dict(base, **{"eval.inception_weights": "no/such.npz"}),
    )
    with pytest.raises(UserError, match="eval.inception_weights") as err:
        ImageDiffusion(c)
    assert "\n" not in str(err.value)
    task = ImageDiffusion(
        configlib.load(
            str(CONFIGS / "cifar10_dit.py"),
            "cpu",
            dict(base, **{"eval.inception_weights": weights_file}),
        )
    )
    params = nn.unbox(jax.jit(task.init_variables)(jax.random.key(0)))["params"]
    scalars, _ = task.evaluate(params, {}, 0, str(tmp_path))
    assert np.isfinite(scalars["fid"]) and scalars["fid"] > 0 and "sample_std_c0" in scalars
