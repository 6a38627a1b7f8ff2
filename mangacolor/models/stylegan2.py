"""StyleGAN2: the generator whose latent space is the Coloring Latent Space (paper §III-A, §IV-B-1).

The paper trains StyleGAN2 on heavily blurred colour pages at 256x256 (Appendix D: batch 32,
lr 1e-3, 700k iterations) and then uses its synthesis network as the frozen decoder of the pSp
drafting and inversion encoders (`mangacolor/models/psp.py`). Architecture and parameter names
follow the widely used pure-PyTorch port (docs/architecture.md § StyleGAN2), so a checkpoint of that port
(a torch `.pt` dict with `g_ema`, `latent_avg`, ...) loads with the identity key mapping:
`load_port_checkpoint`. At 256 px with channel multiplier 2 the generator has 30,034,338
parameters (mapping 2,101,248) and the discriminator 28,864,129.

Read top to bottom: channel table -> resampling (the [1,3,3,1] blur) -> equalised-lr layers ->
`ModulatedConv2d` -> `StyledConv` / `ToRGB` -> `Generator` -> `Discriminator` -> losses ->
checkpoint loading.

Speed on CPU (no custom kernels): the blur is one depthwise `conv2d` with the 4x4 kernel (not
the pad/flip/reshape chain of an upfirdn fallback), up-sampling is a stride-2 transposed conv
followed by that blur, down-sampling is the blur followed by a stride-2 conv. Under autograd the
modulated conv scales activations instead of weights (one batched conv, no per-sample weights);
without autograd it uses per-sample weights and a grouped conv. Both compute the same function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Feature maps per resolution. Up to 32 px the width is fixed; from 64 px on it halves per octave
# and is multiplied by `channel_multiplier` (2 in StyleGAN2 config-f, the paper's setting).
# `channel_max` caps every entry: the paper uses 512; tests use a handful of channels.
CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
FIRST_MULTIPLIED = 64

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment after leaky ReLU


def channel_table(channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    return {
        res: min(channel_max, ch * (channel_multiplier if res >= FIRST_MULTIPLIED else 1))
        for res, ch in CHANNELS.items()
    }


@dataclass(frozen=True)
class StyleGAN2Config:
    """Everything that defines the networks' shapes; paper defaults (256 px, config-f)."""

    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: int = 512
    lr_mlp: float = 0.01

    def generator(self) -> Generator:
        return Generator(self.size, self.style_dim, self.n_mlp, self.channel_multiplier, self.channel_max, self.lr_mlp)

    def discriminator(self) -> Discriminator:
        return Discriminator(self.size, self.channel_multiplier, self.channel_max)

    @property
    def n_latent(self) -> int:
        return 2 * int(math.log2(self.size)) - 2


# --------------------------------------------------------------------------------------------
# Resampling with the [1, 3, 3, 1] low-pass filter


def blur_kernel(gain: float = 1.0) -> torch.Tensor:
    """The separable [1,3,3,1] filter as a normalised 4x4 kernel times `gain`."""
    k = torch.tensor(BLUR_TAPS)
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum() * gain


class Blur(nn.Module):
    """Depthwise 4x4 low-pass, symmetric zero padding `pad` on every side.

    `gain` is 4 after a x2 up-sampling: zero insertion leaves a quarter of the energy.
    The kernel is a buffer named `kernel` (as in the port, so state dicts match key for key).
    """

    def __init__(self, pad: int, gain: float = 1.0):
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", blur_kernel(gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        return F.conv2d(x, weight, padding=self.pad, groups=c)


class Upsample(nn.Module):
    """x2 up-sampling of the RGB skip: zero insertion + blur, as one depthwise transposed conv."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        # Padding 1 aligns the output with zero-insertion followed by a (2, 1)-padded blur.
        return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=c)


# --------------------------------------------------------------------------------------------
# Equalised learning rate: weights are drawn from N(0, 1) and scaled by He's constant at run
# time, so that Adam's per-parameter steps are the same size for every layer.


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    # bias in x's dtype: under autocast an fp32 bias would promote the activations back to fp32.
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), LRELU_SLOPE) * LRELU_GAIN


class FusedLeakyReLU(nn.Module):
    """Bias, then leaky ReLU 0.2, then x sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised lr; `lr_mul` slows it down (0.01 in the mapping network)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


# --------------------------------------------------------------------------------------------
# Synthesis network


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled by an affine map of the style, then demodulated.

    For sample b: w'_{oik} = s_{bi} w_{oik}, then w''_{oik} = w'_{oik} / sqrt(sum_ik w'^2 + 1e-8)
    (Karras et al. 2020, eq. 1-3). `fused=True` builds w'' per sample and runs one grouped conv
    over the batch; `fused=False` scales the activations by s and the output by the demodulation
    coefficients around one shared-weight conv: the same numbers, no per-sample weight tensors,
    channels-last throughout, and on CPU as fast or faster under autograd (bf16 especially).
    `fused=None` picks fused exactly when autograd is off (drafts: batch 1, fewer passes).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = 1e-8
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        # bias_init=1: styles start as the identity scaling.
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        if upsample:
            # The stride-2 transposed 3x3 conv yields 2H+1 pixels; blurring with padding 1 brings
            # them back to 2H, centred like the zero-insertion up-sampling it stands for.
            self.blur = Blur(pad=1, gain=4.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
        s = self.modulation(style)  # (B, in)
        if fused is None:
            fused = not torch.is_grad_enabled()
        if fused:
            return self._forward_grouped(x, s)
        return self._forward_scaled(x, s)

    def _demodulation(self, s: torch.Tensor) -> torch.Tensor:
        """(B, out): 1 / ||s_b * w_o||, via sum_i s_bi^2 * sum_k w_oik^2 (no per-sample weights)."""
        w2 = (self.weight[0] * self.scale).pow(2).sum(dim=(2, 3))  # (out, in)
        return torch.rsqrt(s.pow(2) @ w2.t() + self.eps)

    def _forward_scaled(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * s.view(b, -1, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            out = out * self._demodulation(s).view(b, -1, 1, 1).to(out.dtype)
        return self.blur(out) if self.upsample else out

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        weight = self.weight * self.scale * s.view(b, 1, c, 1, 1)  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + self.eps).view(b, -1, 1, 1, 1)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight.to(x.dtype), stride=2, groups=b)
            out = out.view(b, self.out_channel, out.shape[-2], out.shape[-1])
            return self.blur(out)
        weight = weight.reshape(b * self.out_channel, c, k, k)
        out = F.conv2d(x, weight.to(x.dtype), padding=self.padding, groups=b)
        return out.view(b, self.out_channel, h, w)


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise times a learned scalar (initialised to 0)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    """The learned 4x4 tensor every image starts from."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        # channels-last from the start: oneDNN's and cuDNN's fastest conv layout, kept by every op after.
        return self.input.expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally x2 up) -> noise -> bias + leaky ReLU."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate, upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, style, noise=None, fused: bool | None = None):
        return self.activate(self.noise(self.conv(x, style, fused), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), added to the up-sampled RGB of the level below."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None, fused: bool | None = None):
        out = self.conv(x, style, fused) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    """Mapping network z -> w (8 layers, lr x0.01) and synthesis network w+ -> image in [-1, 1].

    W+ holds `n_latent` = 2*log2(size) - 2 style vectors (14 at 256 px): row 0 styles the 4x4
    conv, row 1 its ToRGB and the x2 up-conv to 8 px; from then on each resolution r uses rows
    (2*log2(r) - 5, 2*log2(r) - 4) for its convs and 2*log2(r) - 3 for its ToRGB.
    """

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channel_max: int = 512, lr_mlp: float = 0.01):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"Generator: size must be a power of two >= 4, got {size}")
        self.config = StyleGAN2Config(size, style_dim, n_mlp, channel_multiplier, channel_max, lr_mlp)
        self.size = size
        self.style_dim = style_dim
        self.log_size = int(math.log2(size))
        self.n_latent = self.log_size * 2 - 2
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.channels = channel_table(channel_multiplier, channel_max)

        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)]
        )

        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = ch[4]
        for log_res in range(3, self.log_size + 1):
            out_channel = ch[2**log_res]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel

        # Fixed noise maps, used with randomize_noise=False (deterministic drafts).
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))

    # -- latents ---------------------------------------------------------------------------

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z (B, style_dim) -> w (B, style_dim)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average w over `n` random z: the centre of truncation, pSp's start latent. (1, style_dim)."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=generator, device="cpu").to(device)
        return self.style(z).mean(0, keepdim=True)

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        device = self.input.input.device
        return [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=generator).to(device)
                for i in range(self.num_layers)]

    def _noise_list(self, noise, randomize_noise: bool) -> list:
        if noise is not None:
            return list(noise)
        if randomize_noise:
            return [None] * self.num_layers
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- synthesis -------------------------------------------------------------------------

    def synthesis(self, w_plus: torch.Tensor, noise: list | None = None, randomize_noise: bool = True,
                  fused: bool | None = None) -> torch.Tensor:
        """W+ (B, n_latent, style_dim) -> image (B, 3, size, size)."""
        if w_plus.ndim != 3 or w_plus.shape[1] != self.n_latent:
            raise ValueError(f"Generator.synthesis: expected W+ of shape (B, {self.n_latent}, {self.style_dim}), "
                             f"got {tuple(w_plus.shape)}")
        noise = self._noise_list(noise, randomize_noise)
        out = self.input(w_plus.shape[0])
        out = self.conv1(out, w_plus[:, 0], noise[0], fused)
        skip = self.to_rgb1(out, w_plus[:, 1], fused=fused)
        i = 1
        for up_conv, conv, to_rgb, n1, n2 in zip(self.convs[::2], self.convs[1::2], self.to_rgbs,
                                                  noise[1::2], noise[2::2]):
            out = up_conv(out, w_plus[:, i], n1, fused)
            out = conv(out, w_plus[:, i + 1], n2, fused)
            skip = to_rgb(out, w_plus[:, i + 2], skip, fused)
            i += 2
        return skip

    def forward(
        self,
        styles: list[torch.Tensor] | torch.Tensor,
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        noise: list | None = None,
        randomize_noise: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The port's call: `styles` is a list of one or two z (or w with input_is_latent), or a W+
        tensor. Two styles are mixed at `inject_index` (random when None). Returns (image, W+ or None).
        """
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("Generator.forward: truncation < 1 needs truncation_latent (see mean_latent)")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) == 1:
            s = styles[0]
            latent = s if s.ndim == 3 else s.unsqueeze(1).expand(-1, self.n_latent, -1)
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            first = styles[0].unsqueeze(1).expand(-1, inject_index, -1)
            second = styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)
            latent = torch.cat([first, second], dim=1)
        image = self.synthesis(latent, noise, randomize_noise)
        return image, (latent if return_latents else None)


# --------------------------------------------------------------------------------------------
# Discriminator


class ConvLayer(nn.Sequential):
    """[blur] -> equalised conv (stride 2 after the blur when downsampling) -> [bias + leaky ReLU].

    A Sequential so its state-dict keys are `0.kernel`, `1.weight`, `2.bias` like the port's.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            # Pad so that blur (4 taps) then the stride-2 k x k conv maps H to exactly H/2.
            layers.append(Blur(pad=(2 + kernel_size - 1) // 2))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_channel: int, out_channel: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1/sqrt(2) keeps the variance of the sum of two unit-variance branches.
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """Residual discriminator: 1x1 fromRGB, one ResBlock per octave down to 4x4, minibatch
    standard deviation, 3x3 conv, two linear layers -> one logit per image."""

    def __init__(self, size: int = 256, channel_multiplier: int = 2, channel_max: int = 512,
                 stddev_group: int = 4):
        super().__init__()
        ch = channel_table(channel_multiplier, channel_max)
        log_size = int(math.log2(size))
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_channel = ch[size]
        for log_res in range(log_size, 2, -1):
            out_channel = ch[2 ** (log_res - 1)]
            convs.append(ResBlock(in_channel, out_channel))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(in_channel + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activate=True),
            EqualLinear(ch[4], 1),
        )

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the mean over features of the std over a group of samples as one channel."""
        b, c, h, w = x.shape
        # The largest group size <= stddev_group that divides the batch (the port needs b % 4 == 0).
        group = next(g for g in range(min(b, self.stddev_group), 0, -1) if b % g == 0)
        y = x.float().view(group, -1, c, h, w)
        std = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # (b // group,)
        std = std.view(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, std.to(x.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # the fast conv layout (see ConstantInput)
        out = self.minibatch_stddev(self.convs(x))
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))


# --------------------------------------------------------------------------------------------
# Losses (Karras et al. 2020; the port's training recipe)


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def d_r1_loss(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real images (R1); `real_img` must require grad. Weight it by gamma/2."""
    (grad,) = torch.autograd.grad(real_pred.float().sum(), real_img, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_pred).mean()


def g_path_regularize(fake_img: torch.Tensor, latents: torch.Tensor, mean_path_length: float | torch.Tensor,
                      decay: float = 0.01, noise: torch.Tensor | None = None):
    """Path-length regulariser: a = ||J_w^T y|| for y ~ N(0, I)/sqrt(HW), penalty E(a - ā)^2.

    ā is an exponential moving average (`decay`) of a; it is not detached inside the penalty, as in
    the reference implementations. `noise` replaces the random y (tests). Returns
    (penalty, new mean path length (detached), per-sample path lengths).
    """
    if noise is None:
        noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img.float() * noise).sum(), latents, create_graph=True)
    path_lengths = torch.sqrt(grad.float().pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
    penalty = (path_lengths - path_mean).pow(2).mean()
    return penalty, path_mean.detach(), path_lengths


def mixing_noise(batch: int, style_dim: int, prob: float, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One z per image, or with probability `prob` two (style mixing regularisation)."""
    mix = prob > 0 and torch.rand((), generator=generator).item() < prob
    return [torch.randn(batch, style_dim, generator=generator).to(device) for _ in range(2 if mix else 1)]


# --------------------------------------------------------------------------------------------
# Weights


def load_port_checkpoint(path: str | Path, size: int = 256, style_dim: int = 512, n_mlp: int = 8,
                         channel_multiplier: int = 2, channel_max: int = 512, key: str = "g_ema",
                         map_location: str | torch.device = "cpu") -> tuple[Generator, torch.Tensor]:
    """Generator + average latent (1, style_dim) from a checkpoint of the common PyTorch port.

    Such a file is a torch pickle `{"g": ..., "d": ..., "g_ema": ..., "latent_avg": ..., "g_optim": ...}`
    of plain tensors; our parameter and buffer names are the port's, so `key`'s state dict loads
    as is. Without `latent_avg` in the file the average is estimated from 4096 mapped samples.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"StyleGAN2 checkpoint not found: {path}. Expected a .pt file of the rosinality "
            "stylegan2-pytorch port (dict with 'g_ema'), e.g. one converted from an official .pkl "
            "with that port's convert_weight.py; place it there or pass its path."
        )
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or key not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise KeyError(f"{path}: expected a dict with a {key!r} state dict (the port's format), found {found}")
    generator = Generator(size, style_dim, n_mlp, channel_multiplier, channel_max)
    load_port_state_dict(generator, ckpt[key], source=str(path))
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is None:
        latent_avg = generator.mean_latent(4096, torch.Generator().manual_seed(0))
    return generator, latent_avg.reshape(1, -1).float()


def load_port_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Strict load with an error that lists what differs (wrong size/multiplier is the usual cause)."""
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    mismatched = sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: does not fit {type(module).__name__}({getattr(module, 'config', '')}): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, "
            f"shape mismatch {mismatched[:5]}; check size / style_dim / n_mlp / channel_multiplier"
        )
    module.load_state_dict(state)


def generator_state(generator: Generator, latent_avg: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) for `save_weights`: the port-named state dict plus `latent_avg`."""
    state = {**generator.state_dict(), "latent_avg": latent_avg.detach().reshape(1, -1)}
    return state, {"stylegan2": asdict(generator.config)}


def generator_from_state(state: dict[str, torch.Tensor], metadata: dict, source: str = "weights") -> tuple[Generator, torch.Tensor]:
    """Inverse of `generator_state` (e.g. after `load_weights(path)`)."""
    if "stylegan2" not in metadata:
        raise KeyError(f"{source}: no 'stylegan2' config in the file's metadata; expected a generator "
                       "saved by mangacolor.training.stylegan (generator_state)")
    state = dict(state)
    latent_avg = state.pop("latent_avg")
    generator = StyleGAN2Config(**metadata["stylegan2"]).generator()
    load_port_state_dict(generator, state, source)
    return generator, latent_avg


def load_generator(path: str | Path) -> tuple[Generator, torch.Tensor]:
    """A generator saved by our training (.safetensors) or a port checkpoint (.pt, 256 px config-f)."""
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        return load_port_checkpoint(path)
    from mangacolor.io.weights import load_weights

    state, metadata = load_weights(path)
    return generator_from_state(state, metadata, str(path))
