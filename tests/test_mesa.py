"""The trigger search: bad inputs, a frozen classifier, and a short search that finds the backdoor."""

import pytest
import torch
from torch import nn

from mesa_nb.core import MesaError, NonFiniteError, seed_everything
from mesa_nb.data import defender_split, load_digits
from mesa_nb.mesa import Networks
from mesa_nb.search import ClassifierTest, SearchSettings, per_class_asr, search, search_classes, trigger_asr
from mesa_nb.models import build_model, fit
from mesa_nb.threat import backdoor, canonical_trigger

TINY = dict(networks=Networks(8, 16, 16), log_every=1, n_check=8, device="cpu")


def tiny(**kw) -> SearchSettings:
    "Two steps of a batch of 16: a search small enough to run in milliseconds."
    return SearchSettings(**{"search_steps": 2, "search_batch": 16, **kw})


@pytest.fixture(scope="module")
def digits():
    return defender_split(load_digits("test"), seed=0)


@pytest.fixture(scope="module")
def backdoored():
    "A half-width SmallCNN backdoored with trigger 170 -> class 0 (about 5 s on one CPU thread)."
    seed_everything(0)
    train = load_digits("train")
    m = build_model("smallcnn", width=16)
    fit(m, train, epochs=8, lr=0.05, device="cpu")
    backdoor(m, train, canonical_trigger(170, 0), ratio=0.1, epochs=8, lr=0.02, schedule="onecycle", device="cpu")
    return m


class NaNModel(nn.Module):
    def __init__(self): super().__init__(); self.lin = nn.Linear(3, 10)
    def forward(self, x): return self.lin(x.mean((2, 3))) * float("nan")


def test_wrong_number_of_classes(digits):
    with pytest.raises(MesaError, match=r"expected \(2, 10\) logits"):
        search(build_model("smallcnn", num_classes=5), digits[0], 0, tiny(), **TINY)


def test_trigger_larger_than_images(digits):
    with pytest.raises(MesaError, match="does not fit the 16x16 images"):
        search(build_model("smallcnn"), digits[0], 0, tiny(), trigger_shape=(3, 17, 17), **TINY)
    with pytest.raises(MesaError, match="does not fit the 16x16 images"):
        trigger_asr(build_model("smallcnn"), digits[0], torch.rand(4, 3, 20, 20), 0)


def test_target_out_of_range(digits):
    with pytest.raises(MesaError, match="target class 10 is out of range"):
        search(build_model("smallcnn"), digits[0], [0, 10], tiny(), **TINY)
    with pytest.raises(MesaError, match="target class -1 is out of range"):
        ClassifierTest(build_model("smallcnn").eval(), digits[0], [-1])


def test_fewer_images_than_one_batch(digits):
    with pytest.raises(MesaError, match="fewer than one batch of 128"):
        search(build_model("smallcnn"), digits[0].subset(range(100)), 0, SearchSettings(search_steps=1, search_batch=128))


def test_nonfinite_loss_names_step_and_term(digits):
    with pytest.raises(NonFiniteError, match="test function F became NaN or infinite between steps 1 and 1"):
        search(NaNModel(), digits[0], 0, tiny(betas=(0.5,)), **TINY)


def test_classifier_frozen_and_restored(digits):
    m = build_model("smallcnn").train()
    m.head.bias.requires_grad_(False)
    res = search(m, digits[0], [0, 3], tiny(betas=(0.5, 0.8)), **TINY)
    assert all(p.grad is None for p in m.parameters())          # no weight gradients were ever computed
    assert m.training and m.head.weight.requires_grad and not m.head.bias.requires_grad   # caller's flags back
    assert res.k == 4 and res.targets.tolist() == [0, 0, 3, 3] and res.sample(5).shape == (4, 5, 3, 3, 3)


def test_search_finds_the_backdoor(backdoored, digits):
    search_ds, eval_ds = digits
    det = search_classes(backdoored, search_ds, SearchSettings(search_steps=100, search_batch=32), beta=0.8, classes=[0, 4],
                         networks=Networks(hidden=256, critic_hidden=256), lr=1e-3, device="cpu")
    asr = per_class_asr(det, backdoored, eval_ds, n=64, images=32)
    assert asr[0] >= 0.8 and asr[0] > asr[1] + 0.6, asr
    pats, _ = det.ensemble_sample(32, target=0)
    assert trigger_asr(backdoored, eval_ds, pats, 0, images=32).mean() >= 0.8


def test_unreachable_level_is_dropped_with_reason(backdoored, digits):
    res = search(backdoored, digits[0], 3, tiny(betas=(0.9,)), **TINY)            # a clean class cannot reach 0.9 in two steps
    assert not bool(res.keep[0])
    assert "no batch of its triggers met the constraint in 2 steps" in res.reasons[0]


def test_authors_objective_runs_with_every_departure(digits):
    "The `paper` objective (the authors' generator, fresh critic batches, images per epoch, one location per batch) through halving."
    res = search(build_model("smallcnn"), digits[0], [0, 3, 5], tiny(betas=(0.5,), objective="paper", search_steps=4), halving=1, **TINY)
    assert type(res.submodels.gen).__name__ == "ChunkedGenerator" and res.objective.draws == "epoch"
    assert sorted(res.trained.tolist()) == [2, 4, 4]                           # one class stopped at the rung
    assert torch.isfinite(res.sample(5)).all() and res.sample(5).shape == (3, 5, 3, 3, 3)


def test_unknown_objective(digits):
    with pytest.raises(MesaError, match="unknown search objective 'bogus'"):
        search(build_model("smallcnn"), digits[0], 0, tiny(objective="bogus"), **TINY)


@pytest.fixture(scope="module")
def quick_backdoored():
    "The `quick` preset's model: a full-width SmallCNN, 15 clean + 15 poisoned epochs, trigger 170 -> class 0 (about 15 s)."
    seed_everything(0)
    train = load_digits("train")
    m = build_model("smallcnn")
    fit(m, train, epochs=15, lr=0.05, device="cpu")
    backdoor(m, train, canonical_trigger(170, 0), ratio=0.1, epochs=15, lr=0.02, schedule="onecycle", device="cpu")
    return m


def test_default_objective_gives_a_staircase(quick_backdoored, digits):
    "At the defaults each level is valid and spread, entropy falls with beta, and the low level's triggers are weaker."
    from mesa_nb.mine import knn_entropy
    pool, held = digits
    res = search(quick_backdoored, pool, 0, SearchSettings(search_steps=300, search_batch=32), device="cpu")
    assert res.keep.all(), res.reasons
    xs = res.sample(1000, seed=1)                                              # (3, 1000, 3, 3, 3)
    asr = torch.stack([trigger_asr(quick_backdoored, held, xs[k, :128], 0, images=64) for k in range(3)])   # (3, 128)
    for k, b in enumerate((0.5, 0.8, 0.9)):
        assert asr[k].mean() >= b and (asr[k] >= b - 0.1).float().mean() >= 0.8, (b, asr[k].mean())
    h = knn_entropy(xs.flatten(2))
    assert h[0] > h[1] > h[2], h
    assert len({tuple(r) for r in (xs[0] > 0.5).flatten(1).int().tolist()}) >= 100        # >= 10 % distinct at beta 0.5
    assert asr[0].mean() <= asr[2].mean() - 0.1


def test_paper_text_objective_collapses(quick_backdoored, digits):
    "Algorithm 2 as the paper's text has it (MINE, alpha 0.1 fixed, one image per trigger) stays on a handful of patterns: the reason for the default."
    res = search(quick_backdoored, digits[0], 0, SearchSettings(betas=(0.5,), objective="paper-text", search_steps=150, search_batch=32), device="cpu")
    xs = res.sample(1000, seed=1)[0]
    assert len({tuple(r) for r in (xs > 0.5).flatten(1).int().tolist()}) <= 100
