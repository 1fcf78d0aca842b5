"""The presets: vaezoo's hierarchical assembler with this plugin's cells and priors in its slots, and vaezoo's own
components (core, not another plugin's) everywhere else."""

from __future__ import annotations

from vaezoo.models.specs import hierarchical_spec, mirrored_layout, same_cell_everywhere


def gated_spec(channels: int, **overrides) -> dict:
    cell = {"class_path": "GatedResidualCell", "init_args": {"kernel_size": 3}}
    spec = hierarchical_spec(
        {
            **same_cell_everywhere(cell),
            "likelihood": {"class_path": "BernoulliLikelihood", "init_args": {"crop": 2}},
            "prior": {"class_path": "LearnedScalePrior"},
        },
        image_shape=[1, 32, 32],
        **mirrored_layout(channels=channels, latent_channels=4, num_latent_scales=2, groups_per_scale=2),
    )
    spec["init_args"].update(overrides)
    return spec
