"""The residual surface's cost: one model's surface against its floor, and evaluation with BatchNorm folded.

For the small CNN on 16x16 (digits) and 32x32 (CIFAR-10) inputs, on random images of that size:
  floor    the network's bare forward pass (eval, no gradients, BatchNorm folded) over as many images as one surface
           classifies, in batches of 2,048, each through `models.forward_chunks` as the surface's are (on a CPU, 65,536
           pixels a call);
  surface  `defense.surface` in float32 on the 3x3 family (512 black-and-white and 512 colour members), `--images`
           stamped images each: drawing the images, stamping every member, classifying, counting;
  bf16     the same surface as runs measure it: under bf16 autocast where the device computes bf16 natively
           (`models.native_bf16`; elsewhere float32 again, and the ratio is 1);
  plain    the floor's forward pass through the network as it trains (BatchNorm kept), which evaluation used before;
and prints seconds, the surface against its floor (what drawing and stamping add), float32 against bf16, and plain
against folded (what folding BatchNorm into the convolutions saves). Pairs are timed in alternating rounds and the median round is reported.
Run: python scripts/bench_surface.py [--images 16] [--device cpu] [--rounds 3]
"""
import argparse

import torch

from mesa_nb.core import as_device
from mesa_nb.data import ImageSet
from mesa_nb.defense import surface
from mesa_nb.models import build_model, forward_chunks, fused, native_bf16, prepare
from mesa_nb.threat import trigger_family

from bench_train import print_header, timed_all   # the shared timer (this folder)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16, help="stamped images per family member (the cpu preset: 16; quick: 32)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    device = as_device(a.device)
    print_header(device)
    print(f"bf16 native on {device}: {native_bf16(device)}")
    print("| network, input | images per surface | surface (s) | floor (s) | surface / floor | float32 / bf16 surface | plain / folded forward |")
    print("|---|---|---|---|---|---|---|")
    for size in (16, 32):
        g = torch.Generator().manual_seed(0)
        ds = ImageSet(torch.randint(0, 256, (2000, 3, size, size), generator=g, dtype=torch.uint8), torch.randint(0, 10, (2000,), generator=g),
                      [str(c) for c in range(10)])
        model = prepare(build_model("smallcnn", 10), device).eval()
        family = trigger_family(ds.shape, 3, images=a.images)
        n = family.size * a.images
        x = torch.randn(2048, 3, size, size, device=device)
        folded, chunks = fused(model), -(-n // 2048)

        @torch.no_grad()
        def floor(net=folded):
            for _ in range(chunks): forward_chunks(net, x)

        t_surface, t_bf16, t_floor, t_plain = timed_all([lambda: surface(model, ds, family, 0, device=device, bf16=False),
                                                         lambda: surface(model, ds, family, 0, device=device), floor, lambda: floor(model)], device, rounds=a.rounds)
        print(f"| small CNN, {size}x{size} | {n:,} | {t_surface:.2f} | {t_floor:.2f} | {t_surface / t_floor:.2f}x | {t_surface / t_bf16:.2f}x | "
              f"{t_plain / t_floor:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
