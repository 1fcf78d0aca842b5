"""The mistakes a new user makes with the README in hand, each one line on stderr, exit status 2, and nothing written:
the sha256 of every file under the working directory (and the run folder) is the same before and after.

Each case was found by trying the README on a fresh machine; before the fix, each ended in a traceback, a message
that blamed the wrong thing, or a silent change of behaviour.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from test_bad_inputs import snapshot

import vaezoo
from vaezoo.cli import main
from vaezoo.errors import VaezooError

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
TINY = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.logging.tensorboard", "false"]  # fmt: skip


def refused(capsys, monkeypatch, workdir: Path, argv: list[str], expected: str | list[str]) -> str:
    """``vaezoo ARGV`` run in ``workdir``: exit 2, one line naming the problem, every file as it was."""
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in [expected] if isinstance(expected, str) else expected:
        assert text in err, err
    assert snapshot(workdir) == before, "files were written, changed or removed"
    return err


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished 20-step ConvVAE run (cosine schedule over 20 steps, checkpoints at 10 and 20)."""
    run_dir = tmp_path_factory.mktemp("vae") / "run"
    argv = ["fit", RECIPE, *TINY, "--trainer.max_steps", "20", "--trainer.checkpoints.every", "10"]
    assert main([*argv, "--run_dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def padded_nvae(tmp_path_factory):
    """The quickstart's small NVAE, saved: it takes 1x32x32 images (MNIST padded by 2)."""
    torch.manual_seed(0)
    return vaezoo.create("nvae-mnist-small").save_pretrained(tmp_path_factory.mktemp("nvae") / "model")


# -- sections and values of the wrong shape ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "overlay, expected",
    [
        ("trainer: 0\n", "trainer: expected a mapping of trainer settings, got int 0"),
        ("trainer: [0]\n", "trainer: expected a mapping of trainer settings, got a list [0]"),
        ("trainer:\n  # lr: 1.0e-3\n  # max_steps: 5\n", "trainer: expected a mapping of trainer settings, got null"),
        ("seed: null\n", "seed: expected int, got null"),
        ("model: {init_args: 5}\n", "model.init_args: expected a mapping of arguments, got int 5"),
        ("model: {init_args: {prior: [1]}}\n", "model.init_args.prior: expected a prior"),
        (
            "model:\n  init_args:\n    posterior: {class_path: GaussianPosterior, init_args: {min_log_sigm: -5}}\n",
            "model.init_args.posterior.init_args.min_log_sigm: unknown argument of GaussianPosterior "
            "(did you mean min_log_sigma",
        ),
    ],
)
def test_an_overlay_of_the_wrong_shape_is_one_line_naming_the_key(tmp_path, capsys, monkeypatch, overlay, expected):
    (tmp_path / "overlay.yaml").write_text(overlay)
    argv = ["fit", RECIPE, *TINY, "--config", "overlay.yaml", "--run_dir", "run"]
    err = refused(capsys, monkeypatch, tmp_path, argv, expected)
    assert "NestedArg" not in err and "did you mean GaussianPosterior" not in err


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--model.init_args.latent_dm", "16"],
            "model.init_args.latent_dm: unknown argument of ConvVAE (did you mean latent_dim?)",
        ),
        (  # the recipe's prior is StandardNormalPrior: it takes no arguments
            ["--model.init_args.prior.init_args.foo", "1"],
            "model.init_args.prior.init_args.foo: unknown argument of StandardNormalPrior",
        ),
        (
            ["--model.init_args.posterior.init_args.min_log_sigm", "-5"],
            "model.init_args.posterior.init_args.min_log_sigm: unknown argument of GaussianPosterior (did you mean "
            "min_log_sigma, max_log_sigma?)",
        ),
        (  # ConvVAE's prior is one instance: a prior built per latent group does not fit its slot
            ["--model.init_args.prior", "NormalPrior"],
            "model.init_args.prior: NormalPrior is not an UnconditionalPrior (p(z) of one group, independent of the "
            "decoder); this slot takes FixedNormalPrior, StandardNormalPrior",
        ),
        (["--model.init_args.prior", "NormalPrio"], "model.init_args.prior: unknown prior 'NormalPrio'; did you mean"),
        (["--trainer.max_stepz", "3"], "trainer.max_stepz: unknown trainer setting (did you mean max_steps,"),
    ],
)
def test_a_misspelt_dotted_key_is_one_line_with_its_path_and_close_matches(
    tmp_path, capsys, monkeypatch, args, expected
):
    err = refused(capsys, monkeypatch, tmp_path, ["fit", RECIPE, *TINY, *args, "--run_dir", "run"], expected)
    assert "NestedArg" not in err


def test_a_misplaced_key_points_to_its_section(tmp_path, capsys, monkeypatch):
    (tmp_path / "overlay.yaml").write_text("max_steps: 3\n")
    argv = ["fit", RECIPE, *TINY, "--config", "overlay.yaml", "--run_dir", "run"]
    refused(capsys, monkeypatch, tmp_path, argv, "max_steps: unknown recipe key (did you mean trainer.max_steps?)")


# -- devices this machine does not have --------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_this_machine_lacks_is_refused_before_anything_is_built(tmp_path, capsys, monkeypatch, vae_run):
    argv = ["fit", RECIPE, *TINY, "--trainer.device", "cuda", "--run_dir", "run"]
    refused(capsys, monkeypatch, tmp_path, argv, "trainer.device: 'cuda', but this machine has no cuda device")
    argv = ["sample", str(vae_run), "--device", "cuda:1", "--out", "x.png"]
    refused(capsys, monkeypatch, tmp_path, argv, "--device: 'cuda:1', but this machine has no cuda device")
    argv = ["evaluate", str(vae_run), "--device", "cuda", "--k", "0"]
    refused(capsys, monkeypatch, tmp_path, argv, "--device: 'cuda', but this machine has no cuda device")
    refused(
        capsys, monkeypatch, tmp_path, ["sample", str(vae_run), "--device", "tpu"], "--device: 'tpu' is not a device"
    )


def test_the_device_check_counts_devices(monkeypatch):
    from vaezoo.hardware import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1", "--device")
    with pytest.raises(VaezooError, match=r"--device: 'cuda:2', but this machine has 2 cuda device\(s\) \(0..1\)"):
        check_device("cuda:2", "--device")


# -- data that does not fit the model ----------------------------------------------------------------------------
def test_evaluate_names_the_data_setting_the_model_needs(tmp_path, capsys, monkeypatch, padded_nvae):
    argv = ["evaluate", str(padded_nvae), "--k", "0", "--data", "BundledMNIST"]
    refused(
        capsys, monkeypatch, tmp_path, argv,
        "--data: the model takes 1x32x32 images, BundledMNIST gives 1x28x28; set pad: 2 (pads 28x28 to 32x32)",
    )  # fmt: skip
    no_data = ["evaluate", str(padded_nvae), "--k", "0"]
    err = refused(capsys, monkeypatch, tmp_path, no_data, "no data: this model takes 1x32x32 images")
    assert "--data BundledMNIST" not in err  # the old hint, wrong for every NVAE on MNIST
    fits = "{class_path: BundledMNIST, init_args: {pad: 2, test_size: 10}}"
    assert main(["evaluate", str(padded_nvae), "--k", "0", "--data", fits]) == 0


def test_the_data_check_names_channels_and_sizes():
    from types import SimpleNamespace

    from vaezoo.data.fit import check_data_fits

    class Folder:  # a data module whose constructor takes image_size and mode
        def __init__(self, image_size: int = 64, mode: str = "RGB") -> None:
            self.image_shape = (3, image_size, image_size)

    with pytest.raises(
        VaezooError, match=r"takes 1x32x32 images, Folder gives 3x64x64; set image_size: 32 and mode: L"
    ):
        check_data_fits(SimpleNamespace(image_shape=(1, 32, 32)), Folder())
    check_data_fits(SimpleNamespace(image_shape=(3, 64, 64)), Folder())


# -- loading a folder ----------------------------------------------------------------------------------------------
def test_load_takes_a_model_folder_and_a_run_folder_by_path(vae_run, monkeypatch):
    monkeypatch.chdir(vae_run.parent)
    reference = vaezoo.load(f"local-dir:{vae_run / 'model'}")
    x = torch.rand(2, 1, 28, 28)
    for name in ("run/model", "run", "./run", "local-dir:run", str(vae_run)):
        model = vaezoo.load(name)
        torch.manual_seed(1)
        got = model(x).nelbo
        torch.manual_seed(1)
        torch.testing.assert_close(got, reference(x).nelbo, rtol=0, atol=0)
    with pytest.raises(VaezooError, match=r"^run/checkpoints: missing config.json: not a saved model folder"):
        vaezoo.load("run/checkpoints")
    with pytest.raises(
        VaezooError, match=r"acme/model: no such model folder \(a Hub repo is written hf-hub:acme/model"
    ):
        vaezoo.load("acme/model")
    (vae_run.parent / "unfinished").mkdir()
    (vae_run.parent / "unfinished" / "config.yaml").write_text("model: {}\n")
    with pytest.raises(VaezooError, match=r"a run folder without a saved model"):
        vaezoo.load("unfinished")


# -- resuming with other schedules ---------------------------------------------------------------------------------
def test_resume_with_a_changed_schedule_says_what_changed_and_refuses(tmp_path, capsys, monkeypatch, vae_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(vae_run, run)
    resume = ["fit", RECIPE, *TINY, "--trainer.max_steps", "20", "--run_dir", "run", "--resume", "true"]
    refused(
        capsys, monkeypatch, tmp_path, [*resume, "--trainer.max_steps", "25"],
        ["--resume: the run's schedules would change (max_steps 20 -> 25)", "--allow_changed_schedule true"],
    )  # fmt: skip
    refused(capsys, monkeypatch, tmp_path, [*resume, "--trainer.optimizer.lr", "0.5"], "(lr 0.003 -> 0.5)")
    refused(
        capsys, monkeypatch, tmp_path, [*resume, "--data.init_args.batch_size", "16"],
        "global_batch 64 -> 16; steps_per_epoch 70 -> 281",
    )  # fmt: skip
    refused(
        capsys, monkeypatch, tmp_path, [*resume, "--objective.init_args.kl_warmup_portion", "0.5"],
        "(objective.init_args.kl_warmup_portion 0.15 -> 0.5)",
    )  # fmt: skip
    # asked for, it resumes: the cosine decay is re-stretched over 25 steps from step 20 on
    assert main([*resume, "--trainer.max_steps", "25", "--allow_changed_schedule", "true"]) == 0


# -- requested features that cannot run ----------------------------------------------------------------------------
def test_tensorboard_asked_for_without_the_package_is_refused(tmp_path, capsys, monkeypatch):
    from vaezoo import loggers

    monkeypatch.setattr(loggers, "tensorboard_installed", lambda: False)
    argv = ["fit", RECIPE, *TINY[:-2], "--trainer.logging.tensorboard", "true", "--run_dir", "run"]
    refused(
        capsys, monkeypatch, tmp_path, argv, "trainer.logging.tensorboard is true, but the tensorboard package is not"
    )
    argv = ["fit", RECIPE, *TINY[:-2], "--trainer.logging.loggers", "[TensorBoard]", "--run_dir", "run"]
    refused(
        capsys, monkeypatch, tmp_path, argv, "error: trainer.logging.loggers[0]: TensorBoard cannot log here: the "
        'tensorboard package is not installed (pip install "vaezoo[tensorboard]")'
    )  # fmt: skip
    argv = ["fit", RECIPE, *TINY[:-2], "--trainer.max_steps", "1", "--run_dir", "run"]
    assert main(argv) == 0  # the default (null): logs to TensorBoard when installed, and says which
    assert "logs: metrics.jsonl (no TensorBoard: the package is not installed)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("loggers", "expected"),
    [
        ("[TensorBord]", "trainer.logging.loggers[0]: unknown logger 'TensorBord'; did you mean TensorBoard? (choices:"),
        ("[ELBO]", "trainer.logging.loggers[0]: ELBO is registered as objective, not as a logger (loggers: "),
        ("[{class_path: TensorBoard, init_args: {folder: x}}]",
         "trainer.logging.loggers[0].init_args.folder: unknown argument of TensorBoard (it takes: none)"),
        ("[TensorBoard, TensorBoard]", "trainer.logging.loggers[1]: TensorBoard is named twice"),
        ("[{init_args: {}}]", "trainer.logging.loggers must be a list of logger names or {class_path: NAME, init_args"),
    ],
    ids=["misspelt", "another-kind", "unknown-argument", "twice", "no-class-path"],
)  # fmt: skip
def test_a_logger_that_cannot_be_built_is_refused(loggers, expected, tmp_path, capsys, monkeypatch):
    argv = ["fit", RECIPE, *TINY[:-2], "--trainer.logging.loggers", loggers, "--run_dir", "run"]
    refused(capsys, monkeypatch, tmp_path, argv, expected)


def test_bn_readjustment_of_a_model_without_batchnorm_is_refused(tmp_path, capsys, monkeypatch, vae_run):
    argv = ["sample", str(vae_run), "--readjust_bn", "50", "--out", "x.png"]
    refused(capsys, monkeypatch, tmp_path, argv, "BN re-adjustment: ConvVAE has no BatchNorm layers")


# -- the test suite itself -----------------------------------------------------------------------------------------
def test_no_test_can_leak_global_state_into_the_next(tmp_path):
    """Two tests in one process under the suite's own conftest: the first changes dynamo's config through
    monkeypatch (whose undo deletes torch config entries), an environment variable and the thread count; the second
    must see them as they were."""
    (tmp_path / "conftest.py").write_text((REPO_ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_order.py").write_text(
        textwrap.dedent(
            """
            import os

            import torch
            import torch._dynamo.config as dynamo_config


            def test_a_changes_global_state(monkeypatch):
                monkeypatch.setattr(dynamo_config, "recompile_limit", 3)
                dynamo_config.fail_on_recompile_limit_hit = True
                os.environ["VAEZOO_LEAKED"] = "1"
                torch.set_num_threads(1)


            def test_b_sees_it_as_it_was():
                assert dynamo_config.recompile_limit == 8 and dynamo_config.fail_on_recompile_limit_hit is False
                assert "VAEZOO_LEAKED" not in os.environ
                assert torch.get_num_threads() == 2
            """
        )
    )
    env = {**os.environ, "VAEZOO_TEST_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "test_order.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout[-3000:]


NVAE_RECIPE = str(REPO_ROOT / "recipes" / "nvae_mnist_small.yaml")


@pytest.mark.parametrize(
    "args, expected",
    [
        (  # a combiner slot takes a combiner: a cell would take aux_channels as its stride and fail mid-forward
            ["--model.init_args.decoder_combiner", "ResidualCell"],
            "model.init_args.decoder_combiner: ResidualCell is a cell, not a combiner (choices: DecoderCombiner, "
            "EncoderCombiner, LatentOnlyCombiner, PassThroughCombiner, ZInjectionCombiner)",
        ),
        (  # the per-group prior slot is built with (in_channels, latent_channels): one instance does not fit
            ["--model.init_args.prior", "StandardNormalPrior"],
            "model.init_args.prior: StandardNormalPrior is not a ConditionalPrior (p(z_i | z_<i) from the decoder "
            "state); this slot takes BottleneckNormalPrior, NormalPrior",
        ),
        (
            ["--model.init_args.top_prior", "NormalPrior"],
            "model.init_args.top_prior: NormalPrior is not an UnconditionalPrior (p(z) of one group, independent of "
            "the decoder); this slot takes FixedNormalPrior, StandardNormalPrior",
        ),
        (  # ConvVAE's posterior over a flat vector would take (in_channels, latent_channels) as its sigma bounds
            ["--model.init_args.posterior", "GaussianPosterior"],
            "model.init_args.posterior: GaussianPosterior is not a GroupPosterior (q(z_i | x, z_<i) of one latent "
            "group); this slot takes BottleneckNormalPosterior, NormalPosterior, PrecisionWeightedPosterior, "
            "ResidualNormalPosterior",
        ),
        (["--model", "{preset: nvae-mnist-smal}"], "model.preset: unknown preset 'nvae-mnist-smal'"),
    ],
    ids=[
        "cell-as-combiner",
        "instance-prior-per-group",
        "conditional-prior-on-top",
        "vector-posterior-per-group",
        "misspelt-preset",
    ],
)
def test_a_component_in_the_wrong_slot_is_one_line_naming_what_the_slot_takes(
    tmp_path, capsys, monkeypatch, args, expected
):
    refused(capsys, monkeypatch, tmp_path, ["fit", NVAE_RECIPE, *args, "--run_dir", "run"], expected)
