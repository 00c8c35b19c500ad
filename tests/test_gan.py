"""WGAN-GP losses (known values) and the alternating critic/generator step."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mrisr.archs.critics import LyuCritic, SRGANCritic
from mrisr.archs.lyu import GANCircle
from mrisr.archs.srcnn3d import SRCNN3D
from mrisr.training.gan import (
    Generated,
    critic_loss,
    gan_circle_loss,
    gan_step,
    generator_adversarial_loss,
    gradient_penalty,
    sr_gan_loss,
    super_resolve,
    total_variation,
)


class Linear(nn.Module):
    """D(x) = <w, x> + b: its gradient is w everywhere."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(*shape, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1) + self.b


def test_gradient_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    d = Linear((1, 3, 4, 5))
    real, fake = torch.randn(6, 1, 3, 4, 5, dtype=torch.float64), torch.randn(6, 1, 3, 4, 5, dtype=torch.float64)
    expected = (d.w.detach().norm() - 1) ** 2  # the same for every mixing weight
    torch.testing.assert_close(gradient_penalty(d, real, fake), expected)
    with torch.no_grad():
        d.w.div_(d.w.norm())  # a unit gradient: no penalty
    assert gradient_penalty(d, real, fake).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_penalty_of_a_quadratic_critic_uses_the_mixed_point():
    real = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    fake = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    eps = torch.tensor([0.5, 0.25], dtype=torch.float64)
    quad = lambda x: 0.5 * (x ** 2).sum(1)  # noqa: E731  gradient x: norms 2 and 0.25 at the mixed points
    expected = ((2 - 1) ** 2 + (0.25 - 1) ** 2) / 2
    assert gradient_penalty(quad, real, fake, eps=eps).item() == pytest.approx(expected)


def test_critic_and_generator_losses():
    torch.manual_seed(0)
    d = Linear((1, 2, 2, 2))
    real, fake = torch.randn(4, 1, 2, 2, 2, dtype=torch.float64), torch.randn(4, 1, 2, 2, 2, dtype=torch.float64)
    loss, w, gp = critic_loss(d, real, fake, gp_weight=10.0)
    torch.testing.assert_close(w, d(real).mean() - d(fake).mean())
    torch.testing.assert_close(loss, -w + 10.0 * (d.w.norm() - 1) ** 2)
    torch.testing.assert_close(generator_adversarial_loss(d, fake), -d(fake).mean())


def test_total_variation():
    x = torch.zeros(1, 1, 3, 3, 3)
    x[0, 0, 1, 1, 1] = 1.0  # 2 jumps of 1 among 18 differences per axis
    assert total_variation(x).item() == pytest.approx(3 * 2 / 18)


def data(n: int, shape=(2, 1, 6, 6, 6), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return iter([(torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)) for _ in range(n)])


def spy(opt: torch.optim.Optimizer, log: list, name: str, check=None) -> None:
    step = opt.step

    def wrapped(*args, **kwargs):
        if check is not None:
            check()
        log.append(name)
        return step(*args, **kwargs)

    opt.step = wrapped


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_gan_step_alternates_critic_and_generator_updates():
    torch.manual_seed(0)
    g, d = SRCNN3D(widths=(3, 2), kernels=(3, 1, 3)), SRGANCritic(width=2)
    opt_g, opt_c = torch.optim.Adam(g.parameters(), 1e-2), torch.optim.Adam(d.parameters(), 1e-2)
    log: list[str] = []
    g0, d0 = snapshot(g), snapshot(d)
    after_critic: dict[str, list] = {}

    def generator_untouched():  # before the generator update: the critic steps did not move it
        assert same(snapshot(g), g0)
        after_critic["d"] = snapshot(d)
        after_critic["grad"] = [None if p.grad is None else p.grad.clone() for p in d.parameters()]

    spy(opt_c, log, "critic")
    spy(opt_g, log, "generator", generator_untouched)
    batches = data(5)
    stats = gan_step(sr_gan_loss(g), d, opt_g, opt_c, batches, n_critic=3)
    assert log == ["critic"] * 3 + ["generator"]
    assert next(batches, None) is not None and next(batches, None) is None  # 4 batches used
    assert not same(after_critic["d"], d0)  # the critic learned in its steps
    assert same(snapshot(d), after_critic["d"])  # and not in the generator step
    assert not same(snapshot(g), g0)
    for p, grad in zip(d.parameters(), after_critic["grad"]):  # no critic gradient from the generator step
        assert (p.grad is None and grad is None) or torch.equal(p.grad, grad)
    assert all(p.requires_grad for p in d.parameters())  # unfrozen again
    assert stats.generator_loss == pytest.approx(stats.content + 0.1 * stats.adversarial, rel=1e-5)
    assert stats.critic_loss == pytest.approx(-stats.wasserstein + 10 * stats.gradient_penalty, rel=1e-4, abs=1e-6)


def test_generator_loss_is_l1_content_plus_a_tenth_of_the_adversarial_term():
    torch.manual_seed(0)
    g, d = SRCNN3D(widths=(2, 2), kernels=(3, 1, 3)), LyuCritic("cpce", width=2)
    x, y = torch.rand(2, 1, 6, 6, 6), torch.rand(2, 1, 6, 6, 6)
    seen = {}

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):  # the generator's gradient is that of L1 + 0.1 * (-D(SR))
            seen["grads"] = [p.grad.clone() for p in g.parameters()]

    gan_step(sr_gan_loss(g), d, Recorder(g.parameters(), lr=0.0), torch.optim.SGD(d.parameters(), lr=0.0),
             iter([(x, y)] * 2), n_critic=1)
    sr = super_resolve(g, x)
    expected = torch.autograd.grad((sr - y).abs().mean() - 0.1 * d(sr).mean(), list(g.parameters()))
    for got, want in zip(seen["grads"], expected):
        torch.testing.assert_close(got, want)


def test_feature_content_loss_replaces_the_perceptual_loss():
    g = SRCNN3D(widths=(2, 2), kernels=(3, 1, 3))
    x, y = torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5)
    phi = nn.Conv3d(1, 2, 3)
    out = sr_gan_loss(g, feature_net=phi)((x, y))
    sr = x + g(x)
    torch.testing.assert_close(out.content, ((phi(sr) - phi(y)) ** 2).mean())
    torch.testing.assert_close(out.fake["hr"], sr)


def identity_pair() -> GANCircle:
    pair = GANCircle(widths=[2, 2], recon=[2, 2])
    with torch.no_grad():
        for gen in (pair.g, pair.f):
            gen.out.weight.zero_()
            gen.out.bias.zero_()
    return pair


def test_gan_circle_loss_terms():
    pair = identity_pair()  # G and F are the identity: no cycle or identity loss
    x, y = torch.rand(2, 1, 5, 5, 5), torch.rand(2, 1, 5, 5, 5)
    out = gan_circle_loss(pair, cyc_weight=1.0, idt_weight=0.5, jst_weight=0.01, tau=0.9, supervised_weight=2.0)((x, y))
    expected = 0.01 * (0.9 * total_variation(x) + 0.1 * total_variation(y - x)) + 2.0 * (x - y).abs().mean()
    torch.testing.assert_close(out.content, expected)
    assert torch.equal(out.fake["hr"], x) and torch.equal(out.fake["lr"], y)
    assert torch.equal(out.real["hr"], y) and torch.equal(out.real["lr"], x)
    with torch.no_grad():
        # F adds 0.5: cycle |F(G(x)) - x| = 0.5, |G(F(y)) - y| = 0.5; identity |F(x) - x| = 0.5
        pair.f.out.bias.fill_(0.5)
    out = gan_circle_loss(pair, cyc_weight=1.0, idt_weight=0.5, jst_weight=0.0, supervised_weight=0.0)((x, y))
    assert out.content.item() == pytest.approx(1.0 * (0.5 + 0.5) + 0.5 * 0.5)


def test_gan_step_trains_both_gan_circle_generators_against_two_critics():
    torch.manual_seed(0)
    pair = GANCircle(widths=[2, 2], recon=[2, 2])
    critics = nn.ModuleDict({"hr": SRGANCritic(width=1), "lr": SRGANCritic(width=1)})
    opt_g = torch.optim.Adam(pair.parameters(), 1e-2)
    opt_c = torch.optim.Adam(critics.parameters(), 1e-2)
    log: list[str] = []
    spy(opt_c, log, "critic")
    spy(opt_g, log, "generator")
    before = {name: snapshot(m) for name, m in itertools.chain(critics.items(), [("g", pair.g), ("f", pair.f)])}
    gan_step(gan_circle_loss(pair), critics, opt_g, opt_c, data(3), n_critic=2, adv_weight=1.0)
    assert log == ["critic", "critic", "generator"]
    for name, m in itertools.chain(critics.items(), [("g", pair.g), ("f", pair.f)]):
        assert not same(snapshot(m), before[name]), name


def test_generated_is_what_loss_functions_return():
    g = SRCNN3D(widths=(2, 2), kernels=(3, 1, 3))
    out = sr_gan_loss(g)((torch.rand(1, 1, 4, 4, 4), torch.rand(1, 1, 4, 4, 4), None))
    assert isinstance(out, Generated) and out.content.ndim == 0
