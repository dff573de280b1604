"""Training throughput on this machine: images per second, forward + backward, batch 128.

For each model and input size it times, on the same batch:
  bare   the model's forward + backward alone (the floor);
  step   one full `fit` step: uint8 -> float, augmentation and normalization on the device, forward,
         backward, SGD update;
and prints images/s for both and their ratio (how much the training pipeline adds to the floor). On CPU it also
times the full step of the same network in the default (contiguous) memory layout against channels-last, the
layout the library's networks train in, and prints the gain; on a CPU that computes bf16 natively, also the full step
under bf16 autocast (how the `cpu` preset trains, `RunConfig.bf16`) against float32. A second table times the small
CNN with the library's pooling layers (`models.GlobalAvgPool`, `models.MaxPool`) against the same network and weights
with `torch.nn`'s (`AdaptiveAvgPool2d`, `MaxPool2d`): a training step, a search's pass (forward and the gradient to the
input, on the folded network) and a forward pass without a gradient (evaluation, 1,024 images), in bf16 where the CPU
computes it natively. Pairs are timed in alternating rounds and the median round is reported.
Run: python scripts/bench_train.py [--device cpu|cuda] [--repeats 4]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mesa_nb.core import as_device, environment
from mesa_nb.data import augment, normalize, to_float
from mesa_nb.models import GlobalAvgPool, MaxPool, build_model, channels_last, count_params, cpu_bf16, forward, fused, native_bf16, prepare


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def print_header(device):
    "The machine line every benchmark starts with."
    env = environment(device)
    print(f"device {env['device']} ({env['device_name']}), {torch.get_num_threads()} threads, torch {env['torch']}\n")


def timed_all(fns, device, rounds=5, repeats=1) -> list[float]:
    "Median seconds per call of each of `fns`, measured in alternating rounds (so drift hits them alike)."
    for _ in range(2):
        for fn in fns: fn()                                   # warm-up
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            sync(device); t0 = time.perf_counter()
            for _ in range(repeats): fn()
            sync(device); out.append((time.perf_counter() - t0) / repeats)
    return [statistics.median(t) for t in times]


def timed_pair(a, b, device, rounds=5, repeats=1):
    "Median seconds per call of `a` and of `b`, measured in alternating rounds."
    return tuple(timed_all([a, b], device, rounds, repeats))


def bench(name, size, device, repeats, batch=128):
    torch.manual_seed(0)
    model = prepare(build_model(name), device).train()
    xb = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x_ready = normalize(to_float(xb), mean, std)
    if channels_last(model, device): x_ready = x_ready.contiguous(memory_format=torch.channels_last)   # outside the timing

    def bare():
        loss = F.cross_entropy(forward(model, x_ready), y)
        model.zero_grad(set_to_none=True); loss.backward()      # fresh gradients, as in a real step

    def make_step(m, o, bf16=False):
        def step():
            loss = F.cross_entropy(forward(m, normalize(augment(to_float(xb)), mean, std), bf16), y)
            o.zero_grad(set_to_none=True); loss.backward(); o.step()
        return step

    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fns, cpu_bf16 = [bare, make_step(model, opt)], device.type == "cpu" and native_bf16(device)
    if device.type == "cpu":                                    # the same network and weights in the default layout
        plain = build_model(name).to(device).train(); plain.load_state_dict(model.state_dict()); plain.arch = None   # no arch: left contiguous
        fns.append(make_step(plain, sgd(plain)))
    if cpu_bf16:                                                # and in channels-last under bf16 autocast (`use_cpu_bf16`, the `cpu` preset)
        twin = prepare(build_model(name), device).train(); twin.load_state_dict(model.state_dict())
        fns.append(make_step(twin, sgd(twin), bf16=True))
    t_bare, t_step, *rest = timed_all(fns, device, repeats=repeats)
    layout = f"{batch / rest[0]:,.0f} | {rest[0] / t_step:.2f}x" if device.type == "cpu" else "– | –"
    bf16 = f"{batch / rest[-1]:,.0f} | {t_step / rest[-1]:.2f}x" if cpu_bf16 else "– | –"
    print(f"| {name} | {size}x{size} | {count_params(model) / 1e6:.2f} M | {batch / t_bare:,.0f} | {batch / t_step:,.0f} | {t_step / t_bare:.2f}x | {layout} | {bf16} |")


def torch_nn_pooling(model):
    "The same network with `torch.nn`'s pooling layers in place of the library's."
    for i, layer in enumerate(model.features):
        if isinstance(layer, MaxPool): model.features[i] = torch.nn.MaxPool2d(layer.k)
        if isinstance(layer, GlobalAvgPool): model.features[i] = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return model


def bench_pooling(device, repeats, size=32, batch=128):
    torch.manual_seed(0)
    ours = prepare(build_model("smallcnn"), device).train()
    theirs = prepare(torch_nn_pooling(build_model("smallcnn")), device).train(); theirs.load_state_dict(ours.state_dict())
    x = torch.randn(batch, 3, size, size, device=device); y = torch.randint(0, 10, (batch,), device=device)
    xs = torch.randn(8 * batch, 3, size, size, device=device)

    def train_step(m, o):
        def step():
            loss = F.cross_entropy(forward(m, x), y); o.zero_grad(set_to_none=True); loss.backward(); o.step()
        return step

    def search_pass(net):
        def step():
            xi = x.detach().requires_grad_(); torch.autograd.grad(forward(net, xi).softmax(-1)[:, 0].sum(), xi)
        return step

    def evaluation(net):
        def step():
            with torch.no_grad(): forward(net, xs)
        return step

    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fo, ft = fused(ours).eval(), fused(theirs).eval()
    for p in [*fo.parameters(), *ft.parameters()]: p.requires_grad_(False)
    with cpu_bf16(native_bf16(device)):
        rows = [("training step", train_step(ours, sgd(ours)), train_step(theirs, sgd(theirs))),
                ("search pass (gradient to the input)", search_pass(fo), search_pass(ft)),
                (f"evaluation ({8 * batch} images, no gradient)", evaluation(fo), evaluation(ft))]
        for name, a, b in rows:
            t_ours, t_theirs = timed_pair(a, b, device, repeats=repeats)
            print(f"| {name} | {t_theirs * 1e3:.1f} | {t_ours * 1e3:.1f} | {t_theirs / t_ours:.2f}x |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=4, help="calls per timing round (5 alternating rounds)")
    a = p.parse_args()
    device = as_device(a.device)
    print_header(device)
    print("| model | input | params | fwd+bwd img/s | full train step img/s | step / fwd+bwd | contiguous layout step img/s | channels-last gain "
          "| bf16 step img/s (native-bf16 CPU) | bf16 gain over float32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bench("smallcnn", 16, device, a.repeats)
    bench("smallcnn", 32, device, a.repeats)
    bench("resnet18", 32, device, max(1, a.repeats // 4))
    print(f"\nsmallcnn 32x32, batch 128, {'bf16' if native_bf16(device) else 'float32'}: the library's pooling layers against torch.nn's\n")
    print("| pass | torch.nn's layers (ms) | the library's (ms) | gain |\n|---|---|---|---|")
    bench_pooling(device, a.repeats)


if __name__ == "__main__":
    main()
