"""Speed of the Coloring Latent Space stage (docs/architecture.md § Targets): StyleGAN2 training and drafts.

Prints, for the paper's sizes (256 px, channel multiplier 2, pSp IR-SE-50):
  - the machine's fp32 matmul GFLOP/s right before the runs (the CPU is shared: scale by it);
  - one StyleGAN2 training step (D + G, batch 4): seconds without the lazy regularisers, the
    extra seconds of a path-length step (every 4th) and of an R1 step (every 16th), the amortised
    step and images/s; wall time and this process's CPU time (less sensitive to other users);
  - optionally (--baseline) the same step with a re-creation of the common port's CPU code path
    (resampling as upfirdn over single-channel planes, grouped modulated convs, NCHW) measured in
    the same process, so that the speed-up does not depend on the load of the day;
  - draft generation (encoder + synthesis) in ms per 256x256 page, batch 1.

    uv run python benchmarks/drafting.py                      # CPU, fp32 and bf16
    uv run python benchmarks/drafting.py --baseline           # + the port-like step (slow: minutes)
    uv run python benchmarks/drafting.py --device cuda --precision bf16 --batch 32
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from mangacolor.device import DeviceSpec
from mangacolor.models import stylegan2 as sg
from mangacolor.models.psp import PSp, EncoderConfig
from mangacolor.training.stylegan import StyleGANTrainConfig, build_state, stylegan_step

PORT_STEP_S = 88.0  # docs/architecture.md § Targets: the port's batch-4 step on the project's 2-core CPU


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float]:
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def matmul_gflops(device: torch.device) -> float:
    a = torch.randn(2048, 2048, device=device)
    a @ a
    runs = [timed(lambda: a @ a, device)[0] for _ in range(5)]
    return 2 * 2048**3 / statistics.median(runs) / 1e9


def forward_gflops() -> tuple[float, float]:
    """Forward GFLOP per image of G and D (counted on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        cfg = sg.StyleGAN2Config()
        g, d = cfg.generator(), cfg.discriminator()
        with FlopCounterMode(display=False) as fg:
            g.synthesis(torch.empty(1, g.n_latent, 512), fused=False)
        with FlopCounterMode(display=False) as fd:
            d(torch.empty(1, 3, 256, 256))
    return fg.get_total_flops() / 1e9, fd.get_total_flops() / 1e9


# -- the port-like baseline ------------------------------------------------------------------------


def upfirdn_planes(x: torch.Tensor, kernel: torch.Tensor, up: int, pad0: int, pad1: int) -> torch.Tensor:
    """Generic up-sample / FIR filter on every (image, channel) plane separately: the CPU fallback
    style of the port (zero insertion by reshape + pad, then a 1-channel conv over B*C planes)."""
    b, c, h, w = x.shape
    x = x.contiguous().reshape(b * c, 1, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(b * c, 1, h * up, w * up)
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    x = F.conv2d(x, torch.flip(kernel, [0, 1]).to(x.dtype).view(1, 1, *kernel.shape))
    return x.reshape(b, c, x.shape[-2], x.shape[-1])


@contextlib.contextmanager
def port_like():
    patches = [
        (sg.Blur, "forward", lambda self, x: upfirdn_planes(x, self.kernel, 1, self.pad, self.pad)),
        (sg.Upsample, "forward", lambda self, x: upfirdn_planes(x, self.kernel, 2, 2, 1)),
        (sg.ConstantInput, "forward", lambda self, b: self.input.repeat(b, 1, 1, 1)),
        (sg.Discriminator, "forward",
         lambda self, x: self.final_linear(self.final_conv(self.minibatch_stddev(self.convs(x))).flatten(1))),
    ]
    original_conv = sg.ModulatedConv2d.forward
    patches.append((sg.ModulatedConv2d, "forward", lambda self, x, style, fused=None: original_conv(self, x, style, True)))
    saved = [(cls, name, getattr(cls, name)) for cls, name, _ in patches]
    try:
        for cls, name, fn in patches:
            setattr(cls, name, fn)
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


# -- measurements --------------------------------------------------------------------------------


def training_step(spec: DeviceSpec, batch: int, steps: int, regularisers: bool) -> dict[str, float]:
    cfg = StyleGANTrainConfig(batch_size=batch, iterations=1000)
    torch.manual_seed(0)
    state = build_state(cfg, spec.device)
    real = torch.rand(batch, 3, 256, 256, device=spec.device) * 2 - 1
    run = lambda step: timed(lambda: stylegan_step(state, real, step, cfg, spec), spec.device)  # noqa: E731
    run(1)  # warm-up: oneDNN / cuDNN pick their kernels
    plain = [run(s) for s in range(1, 1 + steps)]  # 1..steps: no regulariser falls on these
    out = {"plain_wall": statistics.median(w for w, _ in plain), "plain_cpu": statistics.median(c for _, c in plain)}
    if regularisers:
        w4, c4 = run(4)  # path length
        w16, c16 = run(16)  # path length + R1
        out.update(path_wall=w4 - out["plain_wall"], r1_wall=w16 - w4, path_cpu=c4 - out["plain_cpu"], r1_cpu=c16 - c4)
        out["amortised_wall"] = out["plain_wall"] + out["path_wall"] / cfg.g_reg_every + out["r1_wall"] / cfg.d_reg_every
    return out


@torch.no_grad()
def draft_ms(spec: DeviceSpec, pages: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per page, medians."""
    torch.manual_seed(0)
    g = sg.StyleGAN2Config().generator()
    psp = PSp(EncoderConfig(input_nc=1), g, torch.zeros(1, 512)).to(spec.device).eval()
    page = torch.rand(1, 1, 256, 256, device=spec.device) * 2 - 1
    with spec.autocast():
        psp(page)
        runs = [timed(lambda: psp(page), spec.device) for _ in range(pages)]
    return 1000 * statistics.median(w for w, _ in runs), 1000 * statistics.median(c for _, c in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed plain steps (median)")
    parser.add_argument("--pages", type=int, default=5, help="timed drafts (median)")
    parser.add_argument("--no-regularisers", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also time the port-like fp32 step (minutes on CPU)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-draft", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    g_f, d_f = forward_gflops()
    # Per image. D step: G fwd, D fwd on real and fake, their backward (weights + inputs: 2x).
    # G step: G fwd + backward (2x), D fwd + input-only backward (1x).
    step_gflop = args.batch * (g_f * (1 + 1 + 2) + d_f * (2 + 4 + 1 + 1))
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"machine: fp32 matmul {matmul_gflops(device):.0f} GFLOP/s now (shared machine: figures move with load)")
    print(f"StyleGAN2 256 px x2: G forward {g_f:.1f} GFLOP/image, D forward {d_f:.1f} GFLOP/image; "
          f"plain training step at batch {args.batch} = {step_gflop / 1000:.2f} TFLOP")

    plain_fp32 = None
    for precision in precisions:
        amp = {"fp32": None, "bf16": torch.bfloat16}[precision]
        spec = DeviceSpec(device, amp, 0)
        if not args.skip_train:
            r = training_step(spec, args.batch, args.steps, not args.no_regularisers)
            plain_fp32 = r if precision == "fp32" else plain_fp32
            line = (f"[{precision}] StyleGAN2 train step, batch {args.batch}: plain {r['plain_wall']:.2f} s wall "
                    f"({r['plain_cpu']:.1f} s CPU, {step_gflop / r['plain_wall']:.0f} GFLOP/s)")
            if "amortised_wall" in r:
                line += (f"; +path-length {r['path_wall']:.2f} s every 4, +R1 {r['r1_wall']:.2f} s every 16; "
                         f"amortised {r['amortised_wall']:.2f} s = {args.batch / r['amortised_wall']:.2f} images/s")
            print(line, flush=True)
            if device.type == "cpu" and args.batch == 4:
                idle = r["plain_cpu"] / torch.get_num_threads()
                print(f"[{precision}]   port's ~{PORT_STEP_S:.0f} s / this step: x{PORT_STEP_S / r['plain_wall']:.1f} by wall time, "
                      f"x{PORT_STEP_S / idle:.1f} by CPU time / {torch.get_num_threads()} threads ({idle:.1f} s, "
                      f"the wall time of an idle machine); target x5 (<= {PORT_STEP_S / 5:.1f} s)", flush=True)
        if not args.skip_draft:
            wall, cpu = draft_ms(spec, args.pages)
            print(f"[{precision}] draft (pSp IR-SE-50 + synthesis), 256 px, batch 1: {wall:.0f} ms/page wall "
                  f"({cpu:.0f} ms CPU)", flush=True)

    if args.baseline and not args.skip_train:
        spec = DeviceSpec(device, None, 0)
        ours = plain_fp32 or training_step(spec, args.batch, 1, False)
        with port_like():
            port = training_step(spec, args.batch, 1, False)
        print(f"[fp32] same process: port-like step {port['plain_wall']:.2f} s wall ({port['plain_cpu']:.1f} s CPU), "
              f"ours {ours['plain_wall']:.2f} s wall ({ours['plain_cpu']:.1f} s CPU): "
              f"x{port['plain_wall'] / ours['plain_wall']:.1f} wall, x{port['plain_cpu'] / ours['plain_cpu']:.1f} CPU")


if __name__ == "__main__":
    main()
