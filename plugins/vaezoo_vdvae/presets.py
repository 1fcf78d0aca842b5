"""VDVAE specs (Child 2021), assembled by the generic hierarchical assembler (``HierarchicalVAE``).

VDVAE keeps one width at every resolution (``channel_multiplier: 1``); every cell is a bottleneck residual block;
the posterior of a group reads the encoder activation concatenated with the decoder state (``DecoderCombiner``,
``conv1x1(cat[feature, state])``, here used on the encoder side); each group's prior and posterior are bottleneck
Gaussians and the sample is injected into the state by ``ZInjectionCombiner``. Train with ``GradientSkipping``
around ``ELBO`` (and ``trainer.optimizer.grad_clip``), as VDVAE does.
"""

from __future__ import annotations

from vaezoo.models import expand_groups_per_scale, hierarchical_spec, mirrored_layout, same_cell_everywhere


def residual_depth(
    num_latent_scales: int, groups_per_scale: int | list[int], cells_per_group: int, preprocess_blocks: int,
    preprocess_cells: int,
) -> int:  # fmt: skip
    """The number of residual blocks on the top-down path (VDVAE's ``n_blocks``, for the 1/sqrt(depth) scaling)."""
    groups = sum(expand_groups_per_scale(num_latent_scales, groups_per_scale))
    return (groups - 1) * cells_per_group + (num_latent_scales - 1) + preprocess_blocks * preprocess_cells


def vdvae_spec(
    *, image_shape: list[int], likelihood: dict, width: int, bottleneck_ratio: float = 0.25, **layout
) -> dict:
    """The spec of a VDVAE of one ``width`` at every resolution; ``layout`` is that of
    :func:`vaezoo.models.mirrored_layout` (latent_channels, scales, groups, cells)."""
    layout = mirrored_layout(channels=width, channel_multiplier=1, **layout)
    depth = residual_depth(
        layout["num_latent_scales"], layout["groups_per_scale"], layout["encoder_cells_per_group"],
        layout["preprocess_blocks"], layout["preprocess_cells"],
    )  # fmt: skip
    block = {"class_path": "BottleneckBlock", "init_args": {"bottleneck_ratio": bottleneck_ratio, "depth": depth}}
    gaussian = {"bottleneck_ratio": bottleneck_ratio}
    components = {
        **same_cell_everywhere(block),
        "likelihood": likelihood,
        "encoder_combiner": {"class_path": "DecoderCombiner"},
        "encoder_head": block,
        "posterior": {"class_path": "BottleneckNormalPosterior", "init_args": gaussian},
        "prior": {"class_path": "BottleneckNormalPrior", "init_args": gaussian},
        "decoder_combiner": {"class_path": "ZInjectionCombiner", "init_args": {"depth": depth}},
        "decoder_head": {"class_path": "WeightNormConvCell", "init_args": {"kernel_size": 1, "elu_before": True}},
    }
    return hierarchical_spec(components, image_shape=image_shape, **layout)


#: name -> (spec keyword arguments, description); ``vdvae-mnist`` is the model of recipes/vdvae_mnist.yaml
PRESETS: dict[str, tuple[dict, str]] = {
    "vdvae-mnist": (
        dict(
            image_shape=[1, 32, 32], likelihood={"class_path": "BernoulliLikelihood", "init_args": {"crop": 2}},
            width=32, latent_channels=8, num_latent_scales=3, groups_per_scale=2,
        ),
        "VDVAE (Child 2021), width 32, latents at 16x16, 8x8 and 4x4 (2 groups each), for padded binarised digits",
    ),
    "test-vdvae": (
        dict(
            image_shape=[1, 8, 8], likelihood={"class_path": "BernoulliLikelihood"}, width=4, latent_channels=2,
            num_latent_scales=2, groups_per_scale=1,
        ),
        "a tiny VDVAE for tests (8x8 binary images)",
    ),
}  # fmt: skip
