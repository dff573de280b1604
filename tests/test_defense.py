"""Defense building blocks: bad input, the frozen classifier, and that samplers drive what gets stamped."""
import pytest
import torch

from mesa_nb.core import MesaError, NonFiniteError
from mesa_nb.data import defender_split, load_digits
from mesa_nb.defense import (Retrain, Unlearn, baseline_defense, bank_sampler, fixed_sampler, flag_classes, frozen,
                             reverse_trigger, unlearn)
from mesa_nb.models import build_model
from mesa_nb.threat import canonical_trigger


@pytest.fixture(scope="module")
def split():
    return defender_split(load_digits("test"), seed=0)


def test_flagging():
    assert flag_classes([0.97, 0.02, 0.04]) == [0]
    assert flag_classes([0.97, 0.02, 0.6], threshold=0.5) == [0, 2]
    assert flag_classes([0.1, 0.06]) == []                     # a clean model: nothing flagged
    with pytest.raises(MesaError, match=r"threshold must be in \(0, 1\)"): flag_classes([0.9, 0.1], threshold=1.0)
    # with a margin (the mask path): only a class that leads every other by it
    assert flag_classes([0.97, 0.02, 0.6], margin=0.1) == [0]
    assert flag_classes([0.97, 0.02, 0.9], margin=0.1) == []       # two classes near the top: a universal patch, not a backdoor
    assert flag_classes([0.4, 0.02, 0.1], margin=0.1) == []        # a lead but below the threshold
    with pytest.raises(MesaError, match=r"margin must be in \[0, 1\)"): flag_classes([0.9, 0.1], margin=-0.1)


def test_reverse_trigger_keeps_classifier_frozen_and_clipped(split):
    search, _ = split
    model = build_model("smallcnn")
    model.train()
    trig = reverse_trigger(model, search, target=3, epochs=1, device="cpu")
    assert trig.pattern.shape == (3, 3, 3) and trig.pattern.min() >= 0 and trig.pattern.max() <= 1
    assert all(p.grad is None for p in model.parameters())    # no weight gradients were computed
    assert model.training and all(p.requires_grad for p in model.parameters())   # caller's state restored


def test_reverse_trigger_non_finite(split):
    search, _ = split

    class NaNNet(torch.nn.Module):
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.ones(1))
        def forward(self, x): return (x.flatten(1)[:, :10] * float("nan")) * self.w

    with pytest.raises(NonFiniteError, match="non-finite cross-entropy"):
        reverse_trigger(NaNNet(), search, target=0, epochs=1, device="cpu")


def test_bad_input(split):
    search, held = split
    model = build_model("smallcnn")
    with pytest.raises(MesaError, match="fewer than one batch"): unlearn(model, search.subset(range(10)), None, Retrain())
    with pytest.raises(MesaError, match=r"outside the label range \[0, 10\)"): reverse_trigger(model, search, 11)
    with pytest.raises(MesaError, match="does not fit"): reverse_trigger(model, search, 0, shape=(3, 17, 17))
    with pytest.raises(MesaError, match="retraining ratio"): Retrain(ratio=-0.1)
    with pytest.raises(MesaError, match="runs must be >= 1"): baseline_defense(model, search, held, 0, runs=0)
    with pytest.raises(MesaError, match=r"bank must be \(M, C, h, w\)"): bank_sampler(torch.zeros(3, 3, 3))


def test_unlearn_stamps_only_sampled_triggers_and_keeps_labels():
    x, y = torch.full((2000, 3, 8, 8), 0.5), torch.randint(0, 10, (2000,))
    white = torch.ones(3, 3, 3)
    xs, ys = Unlearn(fixed_sampler(white), ratio=0.1)(x, y)
    assert torch.equal(ys, y)
    changed = (xs != x).flatten(1).any(1)
    assert 0.07 < changed.float().mean() < 0.13
    assert torch.all(xs[changed].flatten(1).sum(1) == 1.0 * 27 + 0.5 * (3 * 64 - 27))   # exactly one white 3x3 patch
    with frozen(build_model("smallcnn")) as m: assert not m.training


def test_defend_on_a_clean_model_flags_nothing_and_returns_it_unchanged():
    from mesa_nb.core import seed_everything
    from mesa_nb.defense import DetectSettings, defend
    from mesa_nb.search import SearchSettings
    from mesa_nb.models import fit
    seed_everything(0)
    train, test = load_digits("train"), load_digits("test")
    model = build_model("smallcnn")
    fit(model, train, epochs=8, lr=0.05, device="cpu")
    report, repaired = defend(model, test.images, test.labels, 10, test.mean, test.std, detection=DetectSettings(detect_steps=80),
                              mesa=SearchSettings(search_batch=32, check_triggers=32, check_images=32), device="cpu")
    assert report.flagged == [] and report.chosen is None and repaired is model
    assert max(report.detection.per_class_asr) < 0.5
    assert "no backdoor detected" in report.summary()
    assert report.mesa == {}


def test_defend_bad_input():
    from mesa_nb.defense import RepairSettings, defend
    from mesa_nb.search import SearchSettings
    test = load_digits("test")
    model = build_model("smallcnn")
    with pytest.raises(MesaError, match="does not fit the 16x16 images"):
        defend(model, test.images, test.labels, 10, trigger_size=20)
    with pytest.raises(MesaError, match="fewer than one batch"):
        defend(model, test.images[:100], test.labels[:100], 10)
    with pytest.raises(MesaError, match=r"float images must be raw pixels in \[0, 1\]"):
        defend(model, test.images.float(), test.labels, 10)
    with pytest.raises(MesaError, match=r"labels must lie in \[0, 5\)"):
        defend(model, test.images, test.labels, 5)
    with pytest.raises(MesaError, match=r"classes to repair \[10\] must lie in \[0, 10\)"):     # refused before any search runs
        defend(model, test.images, test.labels, 10, classes=[10])
    with pytest.raises(MesaError, match="unknown ensemble 'mean'"):
        defend(model, test.images, test.labels, 10, removal=RepairSettings(ensemble="mean"))
    with pytest.raises(MesaError, match=r"schedule weighs betas \[0.5, 0.8, 0.9\]; got betas \[0.9\]"):
        defend(model, test.images, test.labels, 10, mesa=SearchSettings(betas=(0.9,)), removal=RepairSettings(ensemble="schedule"))
    with pytest.raises(MesaError, match=r"masks must be distinct forms from \('pixel', 'blend'\); got \('ratio',\)"):
        defend(model, test.images, test.labels, 10, trigger_size=None, mesa=SearchSettings(masks="ratio"))


def test_every_method_is_judged_on_the_same_held_out_images(tmp_path, monkeypatch):
    "The split happens once per run: clean, attack, MESA (each level and the ensemble), baseline and ideal see one held-out set."
    import mesa_nb.defense as defense
    import mesa_nb.experiment as experiment
    from mesa_nb.experiment import Run, make_config
    seen, real = [], defense.evaluate

    def spy(model, held, *a, **kw):
        seen.append(held.digest())
        return real(model, held, *a, **kw)

    monkeypatch.setattr(defense, "evaluate", spy); monkeypatch.setattr(experiment, "evaluate", spy)
    run = Run(make_config("smoke", out_dir=str(tmp_path), device="cpu", save_models=False, defenses=["baseline", "ideal", "finetune"]),
              log=lambda *a: None)
    run.clean(); run.attack(); run.defend(); run.removals()
    # clean + attack + the backdoored model before repair (its surface, in `defend`) + 4 MESA candidates + baseline runs + ideal + fine-tuning
    assert len(seen) == 2 + 1 + 4 + run.cfg.baseline_runs + 1 + 1
    assert list(run.record["defense"].methods())[-2:] == ["ideal", "fine-tuning"]
    assert set(seen) == {run.held.digest()} == {run.record["evaluation"].held} == {run.report.settings["held"]}


def test_defend_splits_as_a_run_does_or_takes_the_split():
    from mesa_nb.defense import defend
    test = load_digits("test")
    model = build_model("smallcnn")
    with pytest.raises(MesaError, match="either as images and labels .* or as one `split`, not both"):
        defend(model, test.images, test.labels, 10, split=defender_split(test, 0))
    with pytest.raises(MesaError, match="either as images and labels"):
        defend(model)


def test_all_to_all_check_flags_an_all_to_all_model_and_not_its_clean_one():
    "An all-to-all backdoor lifts every class alike (no outlier); the source table's top sources form a permutation."
    from mesa_nb.core import seed_everything
    from mesa_nb.defense import DetectSettings, detect
    from mesa_nb.models import fit
    from mesa_nb.search import SearchSettings
    from mesa_nb.threat import backdoor, trigger_outcomes
    seed_everything(0)
    train, test = load_digits("train"), load_digits("test")
    pool, held = defender_split(test, seed=0)
    clean = build_model("smallcnn")
    fit(clean, train, epochs=15, lr=0.05, device="cpu")
    attacked = build_model("smallcnn"); attacked.load_state_dict(clean.state_dict())
    t = canonical_trigger(170)
    backdoor(attacked, train, t, ratio=0.3, epochs=40, lr=0.05, schedule="onecycle", device="cpu", all_to_all=True)
    assert trigger_outcomes(attacked, held, t, device="cpu", shift=1)[0] > 0.8           # c -> c + 1 on most images
    mesa, settings = SearchSettings(search_batch=32, check_triggers=32, check_images=64), DetectSettings(detect_steps=100, check_all_to_all=True)
    det = detect(attacked, pool, 3, mesa, settings, device="cpu")[0]
    assert det.all_to_all and det.flagged == list(range(10)), det.verdict()
    assert sorted(det.sources) == list(range(10)) and "all-to-all check" in det.verdict() and "(class " not in det.verdict()   # no p-value flagged them
    assert detect(attacked, pool, 3, mesa, DetectSettings(detect_steps=100), device="cpu")[0].flagged == []   # the p-value rule alone: nothing
    det = detect(clean, pool, 3, mesa, settings, device="cpu")[0]
    assert not det.all_to_all and det.flagged == [] and len(set(det.sources)) < 10, det.sources


def test_every_classifier_pass_follows_the_bf16_setting(split, monkeypatch):
    "Training, the search, a reversal, accuracy and trigger ASR all run under bf16 autocast inside `cpu_bf16()`, and in float32 outside it."
    import torch.nn as nn
    from mesa_nb import models
    from mesa_nb.models import accuracy, cpu_bf16, fit, training_arithmetic
    from mesa_nb.search import ClassifierTest, frozen, trigger_asr

    class Probe(nn.Module):                                  # no BatchNorm: `fused` keeps it as it is, so its record survives
        def __init__(self):
            super().__init__(); self.conv, self.fc, self.seen = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 10), []
        def forward(self, x):
            self.seen.append(torch.is_autocast_enabled("cpu"))
            return self.fc(self.conv(x).mean((2, 3)))

    monkeypatch.setattr(models, "native_bf16", lambda device: True)   # autocast runs on any x86 CPU; natively or not only the speed differs
    pool, held = split
    small = pool.subset(torch.arange(128))
    pat = canonical_trigger(170, 0).patch
    passes = {"fit": lambda m: fit(m, small, epochs=1, batch_size=64, device="cpu"),
              "accuracy": lambda m: accuracy(m, held, device="cpu"),
              "trigger_asr": lambda m: trigger_asr(m, held, pat[None], 0, images=8, device="cpu"),
              "reversal": lambda m: reverse_trigger(m, small, 0, epochs=1, batch_size=64, device="cpu"),
              "search": lambda m: ClassifierTest(frozen_model(m), small, [0], device="cpu")(torch.rand(1, 4, 27))}
    frozen_model = lambda m: m.eval().requires_grad_(False)
    for name, run in passes.items():
        for on in (True, False):
            probe = Probe()
            with cpu_bf16(on): run(probe)
            assert probe.seen and set(probe.seen[-1:]) == {on}, (name, on, probe.seen[-3:])
    with cpu_bf16(): assert training_arithmetic("cpu") == "bf16 autocast"
    assert training_arithmetic("cpu") == "float32"
