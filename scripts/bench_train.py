"""Training throughput on this machine: images per second, forward + backward, batch 128.

For each model and input size it times, on the same batch:
  bare   the model's forward + backward alone (the floor);
  step   one full `fit` step: uint8 -> float, augmentation and normalization on the device, forward,
         backward, SGD update;
and prints images/s for both and their ratio (how much the training pipeline adds to the floor). The two are
timed in alternating rounds and the median round is reported.
Run: python scripts/bench_train.py [--device cpu|cuda] [--repeats 4]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mesa_nb.core import as_device, environment
from mesa_nb.data import augment, normalize, to_float
from mesa_nb.models import build_model, count_params, forward, prepare


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def print_header(device):
    "The machine line every benchmark starts with."
    env = environment(device)
    print(f"device {env['device']} ({env['device_name']}), {torch.get_num_threads()} threads, torch {env['torch']}\n")


def timed_pair(a, b, device, rounds=5, repeats=1):
    "Median seconds per call of `a` and of `b`, measured in alternating rounds (so drift hits both alike)."
    for _ in range(2): a(); b()                               # warm-up
    ta, tb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            sync(device); t0 = time.perf_counter()
            for _ in range(repeats): fn()
            sync(device); out.append((time.perf_counter() - t0) / repeats)
    return statistics.median(ta), statistics.median(tb)


def bench(name, size, device, repeats, batch=128):
    torch.manual_seed(0)
    model = prepare(build_model(name), device).train()
    xb = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x_ready = normalize(to_float(xb), mean, std)
    if device.type == "cuda": x_ready = x_ready.contiguous(memory_format=torch.channels_last)   # outside the timing

    def bare():
        loss = F.cross_entropy(forward(model, x_ready), y)
        model.zero_grad(set_to_none=True); loss.backward()      # fresh gradients, as in a real step

    def step():
        loss = F.cross_entropy(forward(model, normalize(augment(to_float(xb)), mean, std)), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    t_bare, t_step = timed_pair(bare, step, device, repeats=repeats)
    print(f"| {name} | {size}x{size} | {count_params(model) / 1e6:.2f} M | {batch / t_bare:,.0f} | {batch / t_step:,.0f} | {t_step / t_bare:.2f}x |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=4, help="calls per timing round (5 alternating rounds)")
    a = p.parse_args()
    device = as_device(a.device)
    print_header(device)
    print("| model | input | params | fwd+bwd img/s | full train step img/s | step / fwd+bwd |")
    print("|---|---|---|---|---|---|")
    bench("smallcnn", 16, device, a.repeats)
    bench("smallcnn", 32, device, a.repeats)
    bench("resnet18", 32, device, max(1, a.repeats // 4))


if __name__ == "__main__":
    main()
