"""CUT, contrastive unpaired translation (Park et al. 2020): step 3 of the synthetic pages (paper §IV-A-3).

Refined xDoG pages still differ from real black-and-white pages at the pixel level; CUT translates
them one way into the real domain. It is trained on 64x64 crops, so that it learns the target's
local pixel statistics (screentone, ink density) rather than page layout, and then applied to whole
pages: every part of it is convolutional.

Pieces, as in the paper (see docs/architecture.md § CUT):
  - `ResnetGenerator`: reflection pad, 7x7 conv, two stride-2 convs, `n_blocks` residual blocks,
    two x2 upsamplings, 7x7 conv, tanh; InstanceNorm. `encode` returns the features PatchNCE taps.
  - `PatchSampleMLP`: picks the same random positions in the source's and the output's features
    and projects them through a per-layer 2-layer MLP to 256-d unit vectors. Its MLPs are created
    from the first batch's channel counts, so its optimiser must be made after the first forward.
  - `patch_nce_loss`: cross-entropy of each output patch against all source patches of the same
    image, the one at the same position being the positive (temperature 0.07).
  - `PatchDiscriminator`: the 70x70 PatchGAN (3 stride-2 layers), LSGAN losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mangacolor.models.refiner import refine_batch


@dataclass(frozen=True)
class CUTConfig:
    in_channels: int = 1
    out_channels: int = 1
    ngf: int = 64  # generator width at full resolution; x2 and x4 after the downsamplings
    n_blocks: int = 9
    ndf: int = 64
    d_layers: int = 3  # 3 -> the 70x70 PatchGAN
    # Taps for PatchNCE: "input", "down1", "down2" (the stride-2 convs, before norm) and
    # "res{i}" (the output of residual block i, counted from 1).
    nce_layers: tuple[str, ...] = ("input", "down1", "down2", "res1", "res5")
    nce_dim: int = 256
    n_patches: int = 256
    tau: float = 0.07
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True  # identity PatchNCE on target-domain images

    @classmethod
    def fastcut(cls, **overrides) -> CUTConfig:
        """FastCUT: no identity term, a heavier NCE weight."""
        return cls(**{"nce_idt": False, "lambda_nce": 10.0, **overrides})


TINY = CUTConfig(ngf=4, n_blocks=2, ndf=4, d_layers=2, nce_layers=("input", "down1", "down2", "res1", "res2"), nce_dim=16, n_patches=16)


class ResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, cfg: CUTConfig = CUTConfig()):
        super().__init__()
        self.cfg = cfg
        ngf = cfg.ngf
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(cfg.in_channels, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True))
        self.down1 = nn.Conv2d(ngf, ngf * 2, 3, stride=2, padding=1)
        self.down1_act = nn.Sequential(nn.InstanceNorm2d(ngf * 2), nn.ReLU(True))
        self.down2 = nn.Conv2d(ngf * 2, ngf * 4, 3, stride=2, padding=1)
        self.down2_act = nn.Sequential(nn.InstanceNorm2d(ngf * 4), nn.ReLU(True))
        self.blocks = nn.ModuleList(ResnetBlock(ngf * 4) for _ in range(cfg.n_blocks))
        # Nearest x2 + conv rather than transposed convs: no checkerboard on whole pages.
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ngf * 4, ngf * 2, 3, padding=1),
            nn.InstanceNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ngf * 2, ngf, 3, padding=1),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        )
        self.to_page = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, cfg.out_channels, 7), nn.Tanh())
        for name in cfg.nce_layers:
            self._tap_index(name)  # fail at construction on a misspelt tap

    def _tap_index(self, name: str) -> int:
        """Order of a tap along the forward pass: input 0, down1 1, down2 2, res{i} 2 + i."""
        fixed = {"input": 0, "down1": 1, "down2": 2}
        if name in fixed:
            return fixed[name]
        if name.startswith("res") and name[3:].isdigit() and 1 <= int(name[3:]) <= self.cfg.n_blocks:
            return 2 + int(name[3:])
        raise ValueError(f"unknown CUT tap {name!r}: use input, down1, down2 or res1..res{self.cfg.n_blocks}")

    def encode(self, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> list[torch.Tensor]:
        """Features at `layers` (default cfg.nce_layers), in that order; stops after the last one."""
        layers = tuple(layers or self.cfg.nce_layers)
        want = {self._tap_index(n): n for n in layers}
        last = max(want)
        found: dict[str, torch.Tensor] = {}

        def tap(i, t):
            if i in want:
                found[want[i]] = t

        tap(0, x)
        if last >= 1:
            h = self.down1(self.stem(x))
            tap(1, h)
        if last >= 2:
            h = self.down2(self.down1_act(h))
            tap(2, h)
            h = self.down2_act(h)
        for i, block in enumerate(self.blocks, start=1):
            if 2 + i > last:
                break
            h = block(h)
            tap(2 + i, h)
        return [found[n] for n in layers]

    def forward(self, x):
        h = self.down2_act(self.down2(self.down1_act(self.down1(self.stem(x)))))
        for block in self.blocks:
            h = block(h)
        return self.to_page(self.up(h))


class PatchSampleMLP(nn.Module):
    """Samples positions of each tapped feature map and projects them to unit `nce_dim` vectors."""

    def __init__(self, nce_dim: int = 256, n_patches: int = 256):
        super().__init__()
        self.nce_dim = nce_dim
        self.n_patches = n_patches
        self.mlps = nn.ModuleList()

    @property
    def built(self) -> bool:
        return len(self.mlps) > 0

    def build(self, channels: list[int], device: torch.device | str | None = None) -> None:
        """Create one MLP per tapped layer; called by the first forward or, on resume, before loading weights."""
        for c in channels:
            mlp = nn.Sequential(nn.Linear(c, self.nce_dim), nn.ReLU(inplace=True), nn.Linear(self.nce_dim, self.nce_dim))
            for m in mlp:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            self.mlps.append(mlp.to(device) if device is not None else mlp)

    def forward(
        self,
        feats: list[torch.Tensor],
        patch_ids: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """feats: NCHW maps -> (N, P, nce_dim) unit vectors per layer, and the positions used.

        Pass the returned positions back in to sample the other image at the same places. The
        positions are drawn on the CPU from `generator`, so a seeded run does not depend on device.
        """
        if not self.built:
            self.build([f.shape[1] for f in feats], feats[0].device)
        if len(feats) != len(self.mlps):
            raise ValueError(f"PatchSampleMLP was built for {len(self.mlps)} layers, got {len(feats)}")
        out, ids_out = [], []
        for i, (feat, mlp) in enumerate(zip(feats, self.mlps)):
            n, c, h, w = feat.shape
            if patch_ids is None:
                ids = torch.randperm(h * w, generator=generator)[: min(self.n_patches, h * w)]
            else:
                ids = patch_ids[i]
            ids = ids.to(feat.device)
            # Sample in NCHW order, then transpose the samples: the gradient that flows back into the
            # feature map stays contiguous. (Indexing a transposed view sent back a channels-last
            # gradient, and for a 1-image batch PyTorch 2.15's CPU backward of the residual blocks
            # got that wrong: batch 1 trained on other gradients than each image of batch 2.)
            z = mlp(feat.flatten(2)[:, :, ids].transpose(1, 2))  # N, P, C
            out.append(F.normalize(z, dim=-1))
            ids_out.append(ids)
        return out, ids_out


def patch_nce_loss(feat_q: torch.Tensor, feat_k: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """PatchNCE for (N, P, D) unit vectors: query patch p of the output against all P source
    patches of the same image, the positive being source patch p. Returns the mean over N·P.

    The keys are detached, as in CUT: the gradient flows through the output's features only.
    """
    logits = torch.bmm(feat_q, feat_k.detach().transpose(1, 2)) / tau  # N, P, P
    n, p, _ = logits.shape
    target = torch.arange(p, device=logits.device).expand(n, p)
    return F.cross_entropy(logits.reshape(n * p, p).float(), target.reshape(-1))


def nce_loss(G: ResnetGenerator, F_mlp: PatchSampleMLP, src: torch.Tensor, out: torch.Tensor, tau: float, generator=None) -> torch.Tensor:
    """Average PatchNCE over the tapped layers between an input batch and its translation."""
    feat_k = G.encode(src)
    feat_q = G.encode(out)
    k_pool, ids = F_mlp(feat_k, generator=generator)
    q_pool, _ = F_mlp(feat_q, patch_ids=ids)
    return sum(patch_nce_loss(q, k, tau) for q, k in zip(q_pool, k_pool)) / len(q_pool)


class PatchDiscriminator(nn.Module):
    """PatchGAN: with n_layers 3 each output sees a 70x70 patch of the input."""

    def __init__(self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1), nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1), nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def lsgan_d_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_pred.float() - 1).pow(2).mean() + fake_pred.float().pow(2).mean())


def lsgan_g_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    return (fake_pred.float() - 1).pow(2).mean()


def init_weights(module: nn.Module) -> None:
    """Xavier initialisation (paper, Appendix D: every model)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build(cfg: CUTConfig) -> tuple[ResnetGenerator, PatchDiscriminator, PatchSampleMLP]:
    G = ResnetGenerator(cfg)
    D = PatchDiscriminator(cfg.out_channels, cfg.ndf, cfg.d_layers)
    init_weights(G)
    init_weights(D)
    return G, D, PatchSampleMLP(cfg.nce_dim, cfg.n_patches)


def apply_cut(G: ResnetGenerator, page, device=None, amp_dtype=None):
    """Translate a whole uint8 HxW page (fully convolutional; pads to a multiple of 4, crops back).

    Pages are padded to at least 8 px a side: the reflection pads at 1/4 scale need 2 px there.
    """
    return apply_cut_batch(G, [page], device=device, amp_dtype=amp_dtype)[0]


def apply_cut_batch(G: ResnetGenerator, pages, device=None, amp_dtype=None):
    """`apply_cut` of several uint8 HxW pages of one size in one forward pass."""
    return refine_batch(G, pages, multiple_of=4, min_size=8, device=device, amp_dtype=amp_dtype)
