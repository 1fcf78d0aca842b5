"""A convolutional VAE (Kingma & Welling 2014) with one latent vector, from registered components."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaezoo.components import BernoulliLikelihood, StandardNormalPrior
from vaezoo.errors import ConfigError
from vaezoo.hub.mixin import ModelHubMixin
from vaezoo.interfaces import Example, GenerativeModel, Likelihood, ModelOutput, UnconditionalPrior, VectorPosterior

from .components import GaussianPosterior


class ConvVAE(ModelHubMixin, GenerativeModel):
    """Two stride-2 conv layers down to a latent vector and two transposed convs back up.

    ``image_shape`` is ``[C, H, W]`` with H and W divisible by 4.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 32,
        hidden_channels: int = 32,
        hidden_units: int = 256,
        prior: UnconditionalPrior | None = None,
        posterior: VectorPosterior | None = None,
        likelihood: Likelihood | None = None,
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if h % 4 or w % 4:
            raise ConfigError(f"model.image_shape: height and width must be divisible by 4, got {h}x{w}")
        if min(c, latent_dim, hidden_channels, hidden_units) < 1:
            raise ConfigError("model: image channels, latent_dim, hidden_channels and hidden_units must be positive")
        self.image_shape = (c, h, w)
        self.latent_dim = latent_dim
        self.prior = prior or StandardNormalPrior()
        self.posterior = posterior or GaussianPosterior()
        self.likelihood = likelihood or BernoulliLikelihood()
        ch, feat = hidden_channels, (h // 4) * (w // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, ch, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * ch * feat, hidden_units), nn.SiLU(),
            nn.Linear(hidden_units, 2 * latent_dim),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_units), nn.SiLU(),
            nn.Linear(hidden_units, 2 * ch * feat), nn.SiLU(),
            nn.Unflatten(1, (2 * ch, h // 4, w // 4)),
            nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(ch, self.likelihood.param_channels(c), 4, 2, 1),
        )  # fmt: skip

    def latent_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, self.latent_dim)]

    def forward(self, x: Tensor, noise: list[Tensor] | None = None) -> ModelOutput:
        x = self.likelihood.preprocess(x)
        prior = self.prior(x, (x.shape[0], self.latent_dim))
        q = self.posterior(self.encoder(2 * x - 1), prior)
        z, eps = q.sample(noise[0] if noise else None)
        params = self.decoder(z)
        log_q, log_p = q.log_prob(z).sum(1), prior.log_prob(z).sum(1)
        # the closed form for two diagonal Gaussians; otherwise the estimate from the sample
        closed_form = getattr(q, "gaussian", False) and getattr(prior, "gaussian", False)
        kl = q.kl(prior).sum(1) if closed_form else log_q - log_p
        recon = -self.likelihood.log_prob(params, x)
        return ModelOutput(recon=recon, kl=kl.unsqueeze(0), log_q=log_q, log_p=log_p, params=params, noise=[eps])

    def encode(self, x: Tensor) -> list[Tensor]:
        x = self.likelihood.preprocess(x)
        prior = self.prior(x, (x.shape[0], self.latent_dim))
        return [self.posterior(self.encoder(2 * x - 1), prior).mu]

    def decode(self, latents: list[Tensor]) -> Tensor:
        return self.likelihood.mean(self.decoder(latents[0]))

    def sample_params(self, n: int, temperature: float = 1.0, noise: list[Tensor] | None = None) -> Tensor:
        anchor = next(self.parameters())
        prior = self.prior(anchor.new_zeros(n, 1), (n, self.latent_dim), temperature)
        z, _ = prior.sample(noise[0] if noise else None)
        return self.decoder(z)

    @classmethod
    def example(cls) -> Example:
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
        noise = [torch.randn(2, 3)]
        return Example(
            build=lambda: cls(image_shape=(1, 8, 8), latent_dim=3, hidden_channels=4, hidden_units=8),
            inputs=(x, noise),
            output_shape=(2,),
            call=lambda m, i: m(*i).nelbo,
        )
