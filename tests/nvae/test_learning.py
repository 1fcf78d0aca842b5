"""Learning, not just running: a tiny NVAE improves its test ELBO on the bundled digits by a stated margin within a
fixed number of steps.

The model is ``nvae-mnist-small`` shrunk (4 channels, 2 groups per scale of 8 latent channels, no flows: 94,486
parameters) and trained with the trainer's own step (``NVAEObjective`` with its KL warm-up, Adamax) on dynamically
binarised digits, batch 32, for 40 steps. The untrained model scores about -549 nats on 200 fixed test digits (a
Bernoulli of 1/2 per pixel is -543); measured after 40 steps: -295.7 and -293.6 nats (seeds 0 and 1), a gain of
about 254 nats. The margin asserted, 150 nats, is well inside that; a model whose updates do nothing or go the wrong
way fails it. One thread: on a CPU shared with other work, two OpenMP threads spin (see README, "Performance");
about 15 s on one core.
"""

from __future__ import annotations

import torch
from torch.utils.data import Subset
from trainers import make_trainer
from vaezoo_datasets import BundledMNIST
from vaezoo_nvae.objective import NVAEObjective

import vaezoo
from vaezoo.evaluation import evaluate

STEPS = 40
BATCH = 32
MARGIN_NATS = 150.0


def test_a_tiny_nvae_improves_its_test_elbo_by_the_margin(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = vaezoo.create(
            "nvae-mnist-small", encoder_channels=4, decoder_channels=4, groups_per_scale=2, latent_channels=8,
            num_flows=0,
        )  # fmt: skip
        data = BundledMNIST(batch_size=BATCH, pad=2)
        train = data.train_dataset().tensors[0]
        test = Subset(data.test_dataset(), range(200))
        before = evaluate(model, test, k=0, batch_size=100, seed=0).elbo_nats

        trainer = make_trainer(
            max_steps=STEPS, lr=1e-2, warmup_steps=10, progress=False, tensorboard=False, device="cpu",
            channels_last=True,
        )  # fmt: skip
        trainer.prepare(model, NVAEObjective(), BATCH, len(train), seed=0)
        generator = torch.Generator().manual_seed(0)
        losses = []
        for step in range(STEPS):
            batch = train[torch.randint(0, len(train), (BATCH,), generator=generator)]
            loss, _, _, applied = trainer.train_step([data.train_transform(batch, generator)], step)
            assert applied, f"step {step} was skipped (non-finite loss or gradient)"
            losses.append(float(loss))
        after = evaluate(model, test, k=0, batch_size=100, seed=0).elbo_nats
    finally:
        torch.set_num_threads(threads)

    assert before < -500  # untrained: about a fair coin per pixel
    assert after - before > MARGIN_NATS, f"test ELBO {before:.1f} -> {after:.1f} nats after {STEPS} steps"
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10  # the training loss went down too
