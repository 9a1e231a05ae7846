"""Chunked cross-entropy (lcdata_train.loss) equals the plain full-logits loss, value and gradients."""

import pytest

torch = pytest.importorskip("torch")

from lcdata_train.loss import IGNORE, chunked_cross_entropy, plain_cross_entropy  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _inputs(n=50, d=16, v=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    y[::7] = IGNORE
    return h, w, y


@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 4096])
def test_chunked_equals_plain(chunk):
    h, w, y = _inputs()
    ref, n_ref = plain_cross_entropy(h, w, y)
    gh_ref, gw_ref = torch.autograd.grad(ref * 0.37, (h, w))
    out, n = chunked_cross_entropy(h, w, y, chunk=chunk)
    gh, gw = torch.autograd.grad(out * 0.37, (h, w))
    assert int(n) == int(n_ref) == 50 - 8
    torch.testing.assert_close(out.double(), ref.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gh, gh_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-6, atol=1e-9)


def test_chunked_fp32_batched_shapes_and_frozen_weight():
    h, w, y = _inputs(n=64, d=8, v=33, seed=1)
    h = h.detach().float().view(4, 16, 8).requires_grad_()
    w = w.detach().float()  # no grad wanted for w
    out, n = chunked_cross_entropy(h, w, y.view(4, 16), chunk=10)
    ref, _ = plain_cross_entropy(h, w, y.view(4, 16))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    (g,) = torch.autograd.grad(out, h)
    (g_ref,) = torch.autograd.grad(ref, h)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    assert g.shape == (4, 16, 8)


def test_all_ignored_gives_zero():
    h, w, y = _inputs(n=5)
    out, n = chunked_cross_entropy(h, w, torch.full_like(y, IGNORE), chunk=2)
    assert float(out.detach()) == 0.0 and int(n) == 0
