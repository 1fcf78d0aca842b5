"""The assembler's joint-prior hook, with the core's standard Normal joint prior: it must change nothing but the
bookkeeping (same weights, same log p and importance weights, same samples), and ``own_priors`` switches it off."""

from __future__ import annotations

import torch

from vaezoo.components import StandardNormalJointPrior
from vaezoo.models.hierarchical import HierarchicalVAE


def _pair():
    # two groups at the top (lowest-resolution) scale, one below: the joint prior spans the two
    arguments = {**HierarchicalVAE.example_arguments(), "groups_per_scale": [1, 2], "adaptive_groups": False}
    torch.manual_seed(0)
    plain = HierarchicalVAE(**arguments)
    torch.manual_seed(0)
    joint = HierarchicalVAE(**arguments, joint_prior=StandardNormalJointPrior)
    return plain.eval(), joint.eval()


def test_a_standard_normal_joint_prior_scores_and_samples_like_the_own_priors():
    plain, joint = _pair()
    assert plain.state_dict().keys() == joint.state_dict().keys()  # seeded init unchanged: it is built last
    for key, value in plain.state_dict().items():
        assert torch.equal(value, joint.state_dict()[key]), key
    assert joint.num_top_groups == 2 and joint.joint_prior.channels == 2 * joint.latent_channels
    x = torch.rand(3, 1, 8, 8)
    noise = [torch.randn(s) for s in plain.latent_shapes(3)]
    with torch.no_grad():
        a, b = plain(x, noise=noise), joint(x, noise=noise)
    torch.testing.assert_close(b.log_p, a.log_p, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.log_iw, a.log_iw, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.recon, a.recon)
    # the top rows are log q - log p: their sum is the single-sample KL of the top scale
    top = slice(0, joint.num_top_groups)
    single_sample_kl = torch.stack([(q.log_prob(z) - p.log_prob(z)).flatten(1).sum(1) for q, p, z in zip(
        a.extras["posteriors"][top], a.extras["priors"][top], a.extras["latents"][top], strict=True)])  # fmt: skip
    torch.testing.assert_close(b.kl[top].sum(0), single_sample_kl.sum(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.kl[2:], a.kl[2:])
    assert "prior_noise" not in a.extras and len(b.extras["prior_noise"]) == 2 and b.extras["log_p_exact"]
    with torch.no_grad():
        for temperature in (1.0, 0.6):  # the joint prior applies the temperature, once
            torch.testing.assert_close(
                joint.sample_params(3, temperature, noise=noise), plain.sample_params(3, temperature, noise=noise)
            )
        with joint.own_priors():
            c = joint(x, noise=noise)
    torch.testing.assert_close(c.kl, a.kl)  # own priors: the analytic KL again
    assert joint.sample_report() == {"sampler": "exact"}


def test_without_a_joint_prior_the_model_has_no_samplers_and_no_protocol_notes():
    plain, _ = _pair()
    assert plain.samplers() == {} and plain.evaluation_protocol() == {} and plain.sample_report() == {}
    try:
        plain.sample_params(2, sampler="ode")
    except ValueError as exc:
        assert "unknown sampler 'ode'" in str(exc)
    else:
        raise AssertionError("an unknown sampler must be refused")
