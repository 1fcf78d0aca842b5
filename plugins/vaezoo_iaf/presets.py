"""IAF-VAE specs: the ResNet VAE of Kingma et al. (2016) with a context-conditioned IAF posterior, assembled by the
generic hierarchical assembler (``HierarchicalVAE``).

The paper's ResNet VAE with bidirectional inference is a top-down hierarchical VAE: a bottom-up ResNet, a top-down
ResNet whose state gives each group's prior, and posteriors from the sum of bottom-up and top-down features
(``EncoderCombiner``: ``feature + conv1x1(state)``). Every block is a weight-normalised ELU residual block, and each
posterior sample goes through IAF steps conditioned on the same features (the context ``h``).
"""

from __future__ import annotations

from vaezoo.models import hierarchical_spec, mirrored_layout, same_cell_everywhere


def iaf_vae_spec(*, image_shape: list[int], likelihood: dict, num_flows: int = 1, iaf_steps: int = 2, **layout) -> dict:
    """The spec of a ResNet VAE with IAF posteriors (channel counts double at every down-sampling); ``layout`` is
    that of :func:`vaezoo.models.mirrored_layout` (channels, latent_channels, scales, groups, cells)."""
    block = {"class_path": "WeightNormELUResidualCell", "init_args": {"use_se": False, "residual_scale": 0.1}}
    components = {
        **same_cell_everywhere(block),
        "likelihood": likelihood,
        "flow": {"class_path": "ContextualIAF", "init_args": {"num_steps": iaf_steps}} if num_flows else None,
    }
    return hierarchical_spec(components, image_shape=image_shape, num_flows=num_flows, **mirrored_layout(**layout))


#: name -> (spec keyword arguments, description); ``iaf-vae-mnist`` is the model of recipes/iaf_vae_mnist.yaml
PRESETS: dict[str, tuple[dict, str]] = {
    "iaf-vae-mnist": (
        dict(
            image_shape=[1, 28, 28], likelihood={"class_path": "BernoulliLikelihood"}, channels=16,
            latent_channels=8, num_latent_scales=2, groups_per_scale=2, num_flows=1, iaf_steps=2,
        ),
        "ResNet VAE with context-conditioned IAF posteriors (Kingma et al. 2016) for 28x28 binarised digits",
    ),
    "test-iaf-vae": (
        dict(
            image_shape=[1, 8, 8], likelihood={"class_path": "BernoulliLikelihood"}, channels=4, latent_channels=2,
            num_latent_scales=2, groups_per_scale=1, num_flows=1, iaf_steps=2,
        ),
        "a tiny IAF-VAE for tests (8x8 binary images)",
    ),
}  # fmt: skip
