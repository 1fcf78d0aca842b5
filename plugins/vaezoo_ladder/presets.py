"""Ladder VAE specs, assembled by the generic hierarchical assembler (``HierarchicalVAE``).

Bottom-up: the encoder tower (the core's BatchNorm-Swish residual cells), whose features are remembered per group and passed
to the posteriors unchanged (``PassThroughCombiner``). Top-down: each group's prior comes from the decoder state,
the posterior is the precision-weighted merge (``PrecisionWeightedPosterior``), and the next state is computed from
the latent sample alone (``LatentOnlyCombiner``). Train with ``ELBO`` and a KL warm-up (``kl_warmup_steps``).
"""

from __future__ import annotations

from vaezoo.models import hierarchical_spec, mirrored_layout, same_cell_everywhere


def ladder_vae_spec(*, image_shape: list[int], likelihood: dict, **layout) -> dict:
    """The spec of a convolutional Ladder VAE; ``layout`` is that of :func:`vaezoo.models.mirrored_layout`."""
    cell = {"class_path": "ResidualCell", "init_args": {"use_se": False, "residual_scale": 0.1}}
    components = {
        **same_cell_everywhere(cell),
        "likelihood": likelihood,
        "encoder_combiner": {"class_path": "PassThroughCombiner"},
        "posterior": {"class_path": "PrecisionWeightedPosterior"},
        "decoder_combiner": {"class_path": "LatentOnlyCombiner", "init_args": {"kernel_size": 3}},
    }
    return hierarchical_spec(components, image_shape=image_shape, **mirrored_layout(**layout))


#: name -> (spec keyword arguments, description); ``lvae-mnist`` is the model of recipes/lvae_mnist.yaml
PRESETS: dict[str, tuple[dict, str]] = {
    "lvae-mnist": (
        dict(
            image_shape=[1, 28, 28], likelihood={"class_path": "BernoulliLikelihood"}, channels=16,
            latent_channels=8, num_latent_scales=2, groups_per_scale=2,
        ),
        "Ladder VAE (Sonderby et al. 2016), convolutional, 2 latent scales x 2 groups, for 28x28 binarised digits",
    ),
    "test-lvae": (
        dict(
            image_shape=[1, 8, 8], likelihood={"class_path": "BernoulliLikelihood"}, channels=4, latent_channels=2,
            num_latent_scales=2, groups_per_scale=1,
        ),
        "a tiny Ladder VAE for tests (8x8 binary images)",
    ),
}  # fmt: skip
