"""Training throughput on this machine: images per second, forward + backward, batch 128.

For each model and input size it times, on the same batch:
  bare   the model's forward + backward alone (the floor);
  step   one full `fit` step: uint8 -> float, augmentation and normalization on the device, forward,
         backward, SGD update;
and prints images/s for both and their ratio (how much the training pipeline adds to the floor).
Run: python scripts/bench_train.py [--device cpu|cuda] [--repeats 20]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from mesa_nb.core import as_device, environment
from mesa_nb.data import augment, normalize, to_float
from mesa_nb.models import build_model, count_params, prepare


def timed(fn, repeats, device):
    for _ in range(3): fn()                                   # warm-up
    if device.type == "cuda": torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats): fn()
    if device.type == "cuda": torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def bench(name, size, device, repeats, batch=128):
    torch.manual_seed(0)
    model = prepare(build_model(name), device).train()
    cuda = device.type == "cuda"
    xb = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x_ready = normalize(to_float(xb), mean, std)
    if cuda: x_ready = x_ready.contiguous(memory_format=torch.channels_last)

    def bare():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x_ready).float(), y)
        loss.backward()

    def step():
        x = normalize(augment(to_float(xb)), mean, std)
        if cuda: x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    t_bare, t_step = timed(bare, repeats, device), timed(step, repeats, device)
    print(f"| {name} | {size}x{size} | {count_params(model) / 1e6:.2f} M | {batch / t_bare:,.0f} | {batch / t_step:,.0f} | {t_step / t_bare:.2f}x |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    device = as_device(a.device)
    env = environment(device)
    print(f"device {env['device']} ({env['device_name']}), {torch.get_num_threads()} threads, torch {env['torch']}\n")
    print("| model | input | params | fwd+bwd img/s | full train step img/s | step / fwd+bwd |")
    print("|---|---|---|---|---|---|")
    bench("smallcnn", 16, device, a.repeats)
    bench("smallcnn", 32, device, a.repeats)
    bench("resnet18", 32, device, max(3, a.repeats // 4))


if __name__ == "__main__":
    main()
