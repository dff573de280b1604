"""Trigger-search speed: one search step against its floor, and K generators side by side against K separate searches.

(1) floor  the frozen classifier's forward + backward-to-input on a batch of 128 stamped images (ResNet-18 and
           the small CNN on 32x32 CIFAR-sized inputs, the small CNN on 16x16 digits): what any search must pay per step;
    step   one full search step (`SubModels.step` on a `ClassifierTest`, K = 1, the paper's widths), for the
           default `maxent` objective (32 triggers on 4 images each, k-NN entropy) and the published one:
           noise, generator, stamping on freshly drawn defender images, classifier forward and backward,
           generator update, MINE critic update.
    The ratio step / floor is the search's overhead (target: at most 1.15x).
    The search scores triggers on a copy of the frozen classifier with BatchNorm folded into its convolutions
    (`models.fused`); the floor is that copy's pass too.
(2) K = 10 generators (one per class, the detection case) trained side by side, one classifier pass over
    the 10 x 128 concatenated batch, against 10 separate K = 1 searches each taking one step.
(3) one search step on the classifier as it trains (BatchNorm kept) against the folded copy the search uses.
(4) on a CPU that computes bf16 natively: one search step under bf16 autocast (`models.use_cpu_bf16`, on in the
    `cpu` preset) against the same step in float32.
Pairs are timed in alternating rounds and the median round is reported.
Run: python scripts/bench_search.py [--device cpu|cuda] [--rounds 5] [--resnet-k10]
"""
import argparse

import torch

from mesa_nb.core import as_device
from mesa_nb.data import ImageSet
from mesa_nb.search import OBJECTIVES, ClassifierTest, frozen, normalized_images
from mesa_nb.mesa import Networks, SubModels
from mesa_nb.models import build_model, cpu_bf16, forward, fused, native_bf16
from mesa_nb.threat import stamp

from bench_train import print_header, timed_pair   # the shared timer (this folder)


def fake_images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], name=f"random{size}")


def bench_floor(name, size, device, rounds, batch=128, objective="paper-text"):
    torch.manual_seed(0)
    ds = fake_images(1024, size)
    ob = OBJECTIVES[objective]
    with frozen(build_model(name), device) as bare:
        model = fused(bare)                                                   # what `search` scores triggers on
        # the same 128 stamped images per step either way: `maxent` scores 32 triggers on 4 images each
        Fk = ClassifierTest(model, ds, [0], seed=0, device=device, trigger_images=ob.trigger_images)
        sm = SubModels(27, [0.8], seed=0, device=device, entropy=ob.entropy, slack=ob.slack)   # paper widths: noise 64, 512, 512
        imgs = normalized_images(ds, device)[:batch]
        pats = torch.rand(batch, 3, 3, 3, device=device)
        x_ready = stamp(imgs, pats, "random")                                 # (B, C, H, W) stamped, normalized

        def floor():
            x = x_ready.detach().requires_grad_()
            p = forward(model, x).softmax(-1)[:, 0]                             # (B,)
            torch.autograd.grad(p.sum(), x)

        def step(): sm.step(Fk, batch // ob.trigger_images)

        t_floor, t_step = timed_pair(floor, step, device, rounds)
    print(f"| {name} | {objective} | {size}x{size} | {batch} | {t_floor * 1e3:,.1f} ms | {t_step * 1e3:,.1f} ms | {t_step / t_floor:.3f}x |")
    return t_step / t_floor


def bench_fold(name, size, device, rounds, batch=128):
    "One maxent search step on the classifier with BatchNorm kept, against the folded copy the search uses."
    torch.manual_seed(0)
    ds = fake_images(1024, size)
    ob = OBJECTIVES["maxent"]
    with frozen(build_model(name), device) as bare:
        tests = [ClassifierTest(m, ds, [0], seed=0, device=device, trigger_images=ob.trigger_images) for m in (bare, fused(bare))]
        sms = [SubModels(27, [0.8], seed=0, device=device, entropy=ob.entropy, slack=ob.slack) for _ in tests]
        t_kept, t_folded = timed_pair(lambda: sms[0].step(tests[0], batch // ob.trigger_images),
                                      lambda: sms[1].step(tests[1], batch // ob.trigger_images), device, rounds)
    print(f"| {name} | {size}x{size} | {t_kept * 1e3:,.1f} ms | {t_folded * 1e3:,.1f} ms | {t_kept / t_folded:.2f}x |")


def bench_side_by_side(name, size, device, rounds, k=10, batch=128, hidden=512):
    torch.manual_seed(0)
    ds = fake_images(1024, size)
    with frozen(build_model(name), device) as model:
        F_all = ClassifierTest(model, ds, list(range(k)), seed=0, device=device)
        together = SubModels(27, [0.8] * k, networks=Networks(hidden=hidden, critic_hidden=hidden), seed=0, device=device)
        singles = [(ClassifierTest(model, ds, [c], seed=c, device=device),
                    SubModels(27, [0.8], networks=Networks(hidden=hidden, critic_hidden=hidden), seed=c, device=device)) for c in range(k)]

        def side_by_side(): together.step(F_all, batch)

        def separate():
            for Fc, sm in singles: sm.step(Fc, batch)

        t_sep, t_tog = timed_pair(separate, side_by_side, device, rounds)
    print(f"| {name} | {size}x{size} | {hidden} | {k} x {batch} | {t_sep * 1e3:,.1f} ms | {t_tog * 1e3:,.1f} ms | "
          f"{t_sep / t_tog:.2f}x | {t_tog / (t_sep / k):.2f}x |")


def bench_bf16(name, size, device, rounds, batch=128, objective="maxent"):
    "One search step under `cpu_bf16` (how the `cpu` preset searches) against the same step in float32."
    torch.manual_seed(0)
    ds, ob = fake_images(1024, size), OBJECTIVES[objective]
    with frozen(build_model(name), device) as bare:
        Fk = ClassifierTest(fused(bare), ds, [0], seed=0, device=device, trigger_images=ob.trigger_images)
        sm = SubModels(27, [0.8], seed=0, device=device, entropy=ob.entropy, slack=ob.slack)

        def step(bf16):
            with cpu_bf16(bf16): sm.step(Fk, batch // ob.trigger_images)

        t32, t16 = timed_pair(lambda: step(False), lambda: step(True), device, rounds)
    print(f"| {name} | {objective} | {size}x{size} | {t32 * 1e3:,.1f} ms | {t16 * 1e3:,.1f} ms | {t32 / t16:.2f}x |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (median reported)")
    p.add_argument("--resnet-k10", action="store_true", help="also time K = 10 side by side for ResNet-18 (always on CUDA)")
    a = p.parse_args()
    device = as_device(a.device)
    print_header(device)
    print("(1) one search step against its floor (frozen classifier forward + backward to the input)\n")
    print("| model | objective | input | stamped images | floor | search step | step / floor |")
    print("|---|---|---|---|---|---|---|")
    for ob in ("maxent", "paper-text"):
        bench_floor("resnet18", 32, device, a.rounds, objective=ob)      # the paper preset's classifier
        bench_floor("smallcnn", 32, device, a.rounds, objective=ob)      # the cpu preset's (CIFAR-10)
        bench_floor("smallcnn", 16, device, a.rounds, objective=ob)      # the quick preset's (digits)
    print("\n(3) one search step with BatchNorm kept against the folded classifier the search uses\n")
    print("| model | input | BatchNorm kept | folded | speedup |")
    print("|---|---|---|---|---|")
    for name, size in (("resnet18", 32), ("smallcnn", 32), ("smallcnn", 16)): bench_fold(name, size, device, a.rounds)
    if device.type == "cpu" and native_bf16(device):
        print("\n(4) one search step under bf16 autocast (`use_cpu_bf16`, the `cpu` preset) against float32, on a CPU with native bf16\n")
        print("| model | objective | input | float32 | bf16 | speedup |")
        print("|---|---|---|---|---|---|")
        for name, size in (("smallcnn", 32), ("smallcnn", 16)): bench_bf16(name, size, device, a.rounds)
    print("\n(2) K = 10 generators side by side against 10 separate searches (one step each)\n")
    print("| model | input | generator width | samples | 10 separate steps | side by side | speedup | side by side / one K=1 step |")
    print("|---|---|---|---|---|---|---|---|")
    bench_side_by_side("smallcnn", 16, device, a.rounds)
    bench_side_by_side("smallcnn", 16, device, a.rounds, batch=64, hidden=256)
    if a.resnet_k10 or device.type == "cuda": bench_side_by_side("resnet18", 32, device, max(1, a.rounds // 2))


if __name__ == "__main__":
    main()
