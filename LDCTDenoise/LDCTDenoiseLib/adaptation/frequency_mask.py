"""Frequency masks in the DCT domain: the paper's adaptive random frequency mask and its ablation variants.

Every variant draws a mask M over the DCT coefficients, and an image becomes ``idct(M * dct(image))``. The DCT is
the orthonormal DCT-II (``scipy.fft.dctn(norm="ortho")``) written as two matrix products, so it runs on any torch
device, carries gradients and satisfies ``idct(dct(x)) == x``; its DC coefficient sits at (0, 0), so the radius
needs no shift.

The adaptive mask (our reading of the paper's eq. 3-4, which leaves open how the latent becomes a mask):

- the variational encoder reads the *spectral signature* of the low-dose images, the log mean DCT power in each of
  ``bands`` radial bands, because where the noise sits in frequency is what separates scanners and doses, and that
  statistic is cheap and independent of the patch size;
- it outputs a Gaussian posterior q(z|x) over one latent per band, sampled with the reparameterisation trick and
  pulled towards the prior N(0, 1) by the KL term (so the mask stays random, as the RFM of Yue et al. is);
- the keep probability of a band is sigmoid(z_k) and every coefficient takes its band's value: a soft mask in
  [0, 1] (differentiable, so the encoder learns through it), or a binary one drawn from it with a straight-through
  gradient (``binary=True``, the paper's "binary mask" read literally);
- one mask is drawn per source/target pair and applied to both (see :class:`FrequencyMask` for why);
- the DC coefficient is always kept: the mean HU of a patch is anatomy, not noise.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .settings import MASK_KINDS

LOG_POWER_FLOOR = 1e-12


_MATRICES: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def dct_matrix(size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (dct(x) = C @ x along one axis), built once per (size, device, dtype)."""
    key = (int(size), str(torch.device(device)), dtype)
    if key not in _MATRICES:
        k = np.arange(size)[:, None]
        n = np.arange(size)[None, :]
        matrix = np.cos(np.pi * (n + 0.5) * k / size) * np.sqrt(2.0 / size)
        matrix[0] /= np.sqrt(2.0)
        _MATRICES[key] = torch.from_numpy(matrix).to(device=device, dtype=dtype)
    return _MATRICES[key]


def dct2(image: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (equals scipy.fft.dctn(..., axes=(-2, -1), norm="ortho"))."""
    rows = dct_matrix(image.shape[-2], image.device, image.dtype)
    columns = dct_matrix(image.shape[-1], image.device, image.dtype)
    return rows @ image @ columns.T


def idct2(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (the transpose, since the matrices are orthonormal)."""
    rows = dct_matrix(coefficients.shape[-2], coefficients.device, coefficients.dtype)
    columns = dct_matrix(coefficients.shape[-1], coefficients.device, coefficients.dtype)
    return rows.T @ coefficients @ columns


def radius_map(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """r(u, v) = sqrt(u² + v²) / r_max with r_max = sqrt((H-1)² + (W-1)²): 0 at DC, 1 at the far corner."""
    u = torch.arange(height, dtype=torch.float32, device=device)[:, None]
    v = torch.arange(width, dtype=torch.float32, device=device)[None, :]
    r_max = max(float(np.hypot(height - 1, width - 1)), 1.0)
    return torch.sqrt(u ** 2 + v ** 2) / r_max


def band_index(height: int, width: int, bands: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Radial band (0 .. bands-1) of every DCT coefficient; equal-width bands of r in [0, 1]."""
    return torch.clamp((radius_map(height, width, device) * bands).long(), max=bands - 1)


def apply_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """idct(mask * dct(image)): the image with the masked frequencies removed."""
    return idct2(dct2(image) * mask)


def band_log_power(image: torch.Tensor, bands: int) -> torch.Tensor:
    """Log mean DCT power per radial band, (N, bands): the spectral signature the adaptive encoder reads."""
    power = dct2(image).pow(2).flatten(-2)
    index = band_index(image.shape[-2], image.shape[-1], bands, image.device).flatten()
    one_hot = nn.functional.one_hot(index, bands).to(power.dtype)
    mean_power = (power @ one_hot) / one_hot.sum(0).clamp_min(1.0)
    return torch.log(mean_power.flatten(1) + LOG_POWER_FLOOR)


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, 1)) summed over the latent, averaged over the batch; >= 0."""
    kl = 0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance)
    return kl.sum(-1).mean()


class LatentMaskEncoder(nn.Module):
    """The variational encoder q(z|x): band log powers -> mean and log variance of one latent per band."""

    def __init__(self, bands: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.bands = bands
        self.network = nn.Sequential(nn.Linear(bands, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * bands))

    def forward(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of the pairs whose images are ``images[d][i]`` (one batch per domain, same N)."""
        features = torch.stack([band_log_power(image, self.bands) for image in images]).mean(0)
        # centre the signature per pair so the encoder sees the spectrum's shape, not the patch's overall level
        features = features - features.mean(-1, keepdim=True)
        mean, log_variance = self.network(features).chunk(2, dim=-1)
        return mean, log_variance.clamp(-10.0, 10.0)


class FrequencyMask(nn.Module):
    """One of the four masks, drawn once per source/target pair and applied to both images of the pair.

    Sharing the draw matters: a mask computed from each image alone would differ by domain (the encoder sees the
    noise spectrum), and the discriminator could then tell the domains apart from the mask itself, a cue the denoiser
    can never remove. The adaptive encoder therefore reads the pair's mean spectral signature. The KL is 0 for every
    kind but "adaptive".
    """

    def __init__(self, kind: str = "adaptive", bands: int = 8, fixed_cutoff: float = 0.5,
                 bernoulli_keep: float = 0.5, binary: bool = False) -> None:
        super().__init__()
        if kind not in MASK_KINDS:
            raise ValueError(f"Unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}.")
        if not 0.0 < fixed_cutoff <= 1.0 or not 0.0 <= bernoulli_keep <= 1.0 or bands < 1:
            raise ValueError(f"Mask settings out of range: bands {bands}, fixed_cutoff {fixed_cutoff}, "
                             f"bernoulli_keep {bernoulli_keep}.")
        self.kind = kind
        self.bands = bands
        self.fixed_cutoff = fixed_cutoff
        self.bernoulli_keep = bernoulli_keep
        self.binary = binary
        self.encoder = LatentMaskEncoder(bands) if kind == "adaptive" else None

    def forward(self, latent_sources: list[torch.Tensor], generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask (N, 1, H, W) in [0, 1] for N pairs, and the KL term.

        ``latent_sources`` are the low-dose batches (N, 1, H, W) of each domain, pair i made of their i-th images;
        only the adaptive mask reads them. Apply the mask with :func:`apply_mask`.
        """
        batch, _, height, width = latent_sources[0].shape
        device = latent_sources[0].device
        zero = latent_sources[0].new_zeros(())
        radius = radius_map(height, width, device)
        if self.kind == "none":
            return torch.ones(batch, 1, height, width, device=device), zero
        if self.kind == "fixed":
            return (radius <= self.fixed_cutoff).float().expand(batch, 1, height, width), zero
        if self.kind == "bernoulli":
            keep = torch.rand(batch, 1, height, width, device=device, generator=generator) < self.bernoulli_keep
            return torch.where(radius <= self.fixed_cutoff, torch.ones_like(radius), keep.float()), zero
        mean, log_variance = self.encoder(latent_sources)
        noise = torch.randn(mean.shape, device=device, generator=generator)
        keep_probability = torch.sigmoid(mean + noise * torch.exp(0.5 * log_variance))
        mask = keep_probability[:, band_index(height, width, self.bands, device)][:, None]
        if self.binary:
            drawn = (torch.rand(mask.shape, device=device, generator=generator) < mask).float()
            mask = mask + (drawn - mask).detach()  # straight-through: binary forward, soft gradient
        dc_only = torch.zeros(height, width, device=device)
        dc_only[0, 0] = 1.0
        return mask * (1.0 - dc_only) + dc_only, gaussian_kl(mean, log_variance)
