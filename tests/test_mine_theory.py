"""Bad input to the MINE estimator and the MESA theory pieces: each gets a MesaError naming the problem and the fix,
and a loss or critic output that goes NaN/inf stops training with a NonFiniteError saying where."""
import math

import pytest
import torch

from mesa_nb.core import MesaError, NonFiniteError
from mesa_nb.mine import StatisticsNetwork, dv_bound, estimate_mi, knn_entropy, log_mean_exp, mine_loss
from mesa_nb.mesa import Networks, SubModels, check_levels, levels, mixture_weights, sample_mixture, validity


def tiny(beta=(0.5,), alpha=0.1, **kw):
    "A SubModels small enough to step in milliseconds."
    return SubModels(1, list(beta), alpha=alpha, networks=Networks(2, 8, 8), **kw)


def test_mesa_errors_are_value_errors():
    with pytest.raises(ValueError): levels(0)


# ---- levels, beta, alpha, N ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.2, 1.5, [0.5, 1.0], float("nan")])
def test_beta_outside_open_unit_interval(beta):
    with pytest.raises(MesaError, match=r"open interval \(0, 1\)"): check_levels(beta)
    with pytest.raises(MesaError, match=r"open interval \(0, 1\)"): tiny(beta=[beta] if not isinstance(beta, list) else beta)


def test_no_levels():
    with pytest.raises(MesaError, match="no levels"): check_levels([])


@pytest.mark.parametrize("N", [0, -3, 2.5, "4"])
def test_N_below_one(N):
    with pytest.raises(MesaError, match="N must be an integer >= 1"): levels(N)


@pytest.mark.parametrize("alpha", [-0.1, [0.1, -1.0], float("inf")])
def test_negative_alpha(alpha):
    with pytest.raises(MesaError, match="alpha must be finite and >= 0"): tiny(beta=(0.3, 0.6), alpha=alpha)


def test_alpha_count_mismatch():
    with pytest.raises(MesaError, match="one per sub-model"): tiny(beta=(0.3, 0.6), alpha=[0.1, 0.1, 0.1])


def test_alpha_zero_allowed():
    out = tiny(alpha=0.0).step(lambda x: x[..., 0], batch=4)
    assert out["entropy"].shape == (1,)


# ---- empty batches and shapes ----------------------------------------------------------------------------------------
def test_empty_batches():
    with pytest.raises(MesaError, match="non-empty"): dv_bound(torch.empty(0), torch.randn(3))
    with pytest.raises(MesaError, match="non-empty"): dv_bound(torch.randn(3), torch.empty(2, 0))
    with pytest.raises(MesaError, match="non-empty"): log_mean_exp(torch.empty(0))
    with pytest.raises(MesaError, match="empty sample batch"): estimate_mi(torch.empty(0, 2), torch.empty(0, 2))
    with pytest.raises(MesaError, match="at least 1"): sample_mixture(torch.rand(2, 5, 1), torch.ones(2), 0)
    with pytest.raises(MesaError, match="n >= 1"): validity(lambda x: x[..., 0], torch.rand(1, 0, 1), [0.5])
    with pytest.raises(MesaError, match="at least 1"): tiny().sample(0)
    with pytest.raises(MesaError, match="batch >= 2"): tiny().fit(lambda x: x[..., 0], steps=1, batch=1)


def test_mismatched_shapes():
    with pytest.raises(MesaError, match="same number of paired samples"): estimate_mi(torch.rand(10, 2), torch.rand(9, 2))
    with pytest.raises(MesaError, match="leading"): dv_bound(torch.randn(2, 4), torch.randn(3, 4))
    T = StatisticsNetwork(3, 2, hidden=4, k=2)
    with pytest.raises(MesaError, match="same B"): T(torch.rand(2, 5, 3), torch.rand(2, 4, 2))
    with pytest.raises(MesaError, match=r"x of shape \(k=2, B, 3\)"): T(torch.rand(2, 5, 4), torch.rand(2, 5, 2))
    with pytest.raises(MesaError, match=r"must map \(K, B, dim\)"): tiny().step(lambda x: x.sum(), batch=4)
    with pytest.raises(MesaError, match="one weight per sub-model"): sample_mixture(torch.rand(2, 5, 1), torch.ones(3), 2)
    with pytest.raises(MesaError, match="one beta per sub-model"): validity(lambda x: x[..., 0], torch.rand(2, 5, 1), [0.5])
    with pytest.raises(MesaError, match="more samples than k"): knn_entropy(torch.rand(3, 2), k=3)


def test_bad_settings():
    with pytest.raises(MesaError, match="rate must be in"): mine_loss(torch.randn(4), torch.randn(4), rate=0.0)
    with pytest.raises(MesaError, match="rate must be in"): tiny(rate=2.0)
    with pytest.raises(MesaError, match="holdout"): estimate_mi(torch.rand(100, 1), torch.rand(100, 1), holdout=1.0)
    with pytest.raises(MesaError, match="finite, >= 0"): sample_mixture(torch.rand(2, 5, 1), torch.tensor([1.0, -1.0]), 2)
    with pytest.raises(MesaError, match="no sub-model left"): mixture_weights(torch.zeros(2), keep=torch.tensor([False, False]))
    with pytest.raises(MesaError, match="pass beta together with slope"): mixture_weights(torch.zeros(2), slope=lambda b: 1 - b)
    with pytest.raises(MesaError, match="noise must be one of"): Networks(noise="gauss")


def test_non_finite_inputs_refused_up_front():
    with pytest.raises(MesaError, match="NaN or infinite values"): estimate_mi(torch.full((100, 1), float("nan")), torch.rand(100, 1))
    with pytest.raises(MesaError, match="NaN or infinite"): knn_entropy(torch.tensor([[0.0], [math.inf], [1.0], [2.0], [3.0]]))


# ---- non-finite values during training -------------------------------------------------------------------------------
def test_critic_overflow_in_estimate_mi_names_step_and_term():
    x = torch.full((100, 8), 3e38)  # finite, but the critic's first layer overflows float32
    with pytest.raises(NonFiniteError, match=r"between steps 1 and 5") as e:
        estimate_mi(x, torch.rand(100, 1), hidden=8, steps=5, check_every=5)
    assert "critic output" in str(e.value) or "MINE loss" in str(e.value)


def test_nan_test_function_names_step_and_term():
    sm = tiny(beta=(0.3, 0.6))
    sm.fit(lambda x: x[..., 0], steps=4, batch=8, log_every=2)          # fine for 4 steps
    bad = lambda x: torch.where(torch.arange(2)[:, None] == 1, float("nan"), x[..., 0])   # model 1 only
    with pytest.raises(NonFiniteError, match=r"test function F became NaN or infinite between steps 5 and 6 \(sub-model 1"):
        sm.fit(bad, steps=2, batch=8, log_every=2)


def test_nan_critic_output_in_submodels():
    sm = tiny()
    with torch.no_grad(): sm.critic.l3.bias.fill_(float("nan"))
    sm.step(lambda x: x[..., 0], batch=4)                                  # no sync, no error inside the step
    with pytest.raises(NonFiniteError, match=r"entropy term became NaN or infinite between steps 1 and 1"):
        sm.check_finite()


def test_step_does_not_sync():
    "The training step returns tensors (the caller decides when to read them) and raises nothing on NaN by itself."
    sm = tiny()
    out = sm.step(lambda x: x[..., 0] * float("nan"), batch=4)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in out.values())
    with pytest.raises(NonFiniteError): sm.check_finite()
