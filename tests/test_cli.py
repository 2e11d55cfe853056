"""The command line: help, LightningCLI fit/test/resume through YAML, config validation."""

from __future__ import annotations

import pytest

from neurodecode.cli.main import main

from .conftest import REPO, write_projected_features


@pytest.fixture(scope="module")
def tiny_store(tiny_nsd, tmp_path_factory):
    """Features of the tiny world's stimuli: a fixed random projection of the simulation's own
    generating features (any embedding works for the CLI tests; it is deterministic and cheap)."""
    path = tmp_path_factory.mktemp("features") / "tiny-features.h5"
    return write_projected_features(tiny_nsd, path, width=16)


def _overrides(tiny_nsd, store, root_dir, epochs):
    return [
        f"--data.init_args.root={tiny_nsd}",
        f"--data.init_args.feature_store={store}",
        "--data.init_args.feature_model=gt-projection",
        "--data.init_args.feature_layer=image",
        "--data.init_args.val_images=10",
        "--model.init_args.hidden_dim=32",
        "--model.init_args.n_blocks=1",
        "--model.init_args.projector_dim=32",
        "--model.init_args.prior=null",
        "--model.init_args.test_n_draws=3",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.default_root_dir={root_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
    ]


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    for name in ("simulate", "demo", "fit", "test", "predict"):
        assert name in text


def test_fit_resume_and_test_through_lightning_cli(tiny_nsd, tiny_store, tmp_path):
    config = str(REPO / "experiments/sim_retrieval.yaml")
    main(["fit", "-c", config, *_overrides(tiny_nsd, tiny_store, tmp_path, 2)])
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, "fit wrote no checkpoint"
    first = checkpoints[-1]
    assert "epoch=1" in first.name
    # resume: continues from epoch 2 up to 3 epochs
    main(
        [
            "fit",
            "-c",
            config,
            *_overrides(tiny_nsd, tiny_store, tmp_path / "resumed", 3),
            f"--ckpt_path={first}",
        ]
    )
    resumed = sorted((tmp_path / "resumed").rglob("*.ckpt"))
    assert resumed and "epoch=2" in resumed[-1].name
    import torch

    state = torch.load(resumed[-1], map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] > 0
    main(
        [
            "test",
            "-c",
            config,
            *_overrides(tiny_nsd, tiny_store, tmp_path / "test", 1),
            f"--ckpt_path={resumed[-1]}",
        ]
    )


def test_real_data_configs_validate_with_print_config(capsys):
    for name in (
        "nsd_mindeye1_subj01.yaml",
        "nsd_mindeye1_subj01_prepared.yaml",
        "sim_multisubject.yaml",
        "sim_retrieval.yaml",
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "-c", str(REPO / "experiments" / name), "--print_config"])
        assert exit_info.value.code in (0, None)
        printed = capsys.readouterr().out
        assert "RetrievalModule" in printed and "NSDDataModule" in printed
    assert "hidden_dim: 4096" in _printed_mindeye(capsys)


def _printed_mindeye(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(REPO / "experiments/nsd_mindeye1_subj01.yaml"), "--print_config"])
    return capsys.readouterr().out


def test_config_typo_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "-c",
                str(REPO / "experiments/sim_retrieval.yaml"),
                "--model.init_args.hiden_dim=3",
            ]
        )
    assert "hiden_dim" in capsys.readouterr().err


def test_simulate_accepts_an_empty_out_folder_and_refuses_a_full_one(tmp_path, capsys):
    out = tmp_path / "world"
    out.mkdir()
    config = str(REPO / "datasets/sim/tiny.yaml")
    assert main(["simulate", "fmri", "--config", config, "--out", str(out), "--quiet"]) == 0
    assert (out / "ground_truth.h5").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "fmri", "--config", config, "--out", str(out), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("neurodecode simulate: error: ") and "already exists" in err


def test_fit_experiment_resumes_a_killed_fit_from_its_last_whole_checkpoint(
    tiny_nsd, tiny_store, tmp_path
):
    """``neurodecode demo``'s fit (``fit_experiment(resume_key=...)``): a rerun after 2 of 3
    epochs trains the third only, a truncated newer checkpoint is skipped, and a finished fit is
    reused as it is."""
    import numpy as np
    import yaml

    from neurodecode.cli.lightning import fit_experiment, latest_checkpoint

    experiment = yaml.safe_load((REPO / "experiments/sim_retrieval.yaml").read_text())
    experiment["data"]["init_args"].update(
        root=str(tiny_nsd),
        feature_store=str(tiny_store),
        feature_model="gt-projection",
        feature_layer="image",
        val_images=10,
    )
    experiment["model"]["init_args"].update(
        hidden_dim=32, n_blocks=1, projector_dim=32, prior=None, test_n_draws=3
    )
    experiment["trainer"].update(max_epochs=2, enable_progress_bar=False)
    _, _, first = fit_experiment(experiment, tmp_path, resume_key="k")
    assert first["resumed_from"] is None and first["epochs"] == 2
    folder = tmp_path / "checkpoints" / "k"
    whole, done = latest_checkpoint(folder)
    assert "epoch=1" in whole.name and done == 2
    (folder / "epoch=9-step=99.ckpt").write_bytes(b"killed while writing")  # newest, unreadable
    assert latest_checkpoint(folder) == (whole, 2)

    experiment["trainer"]["max_epochs"] = 3  # a longer run of the same fit goes on from epoch 2
    model, _, resumed = fit_experiment(experiment, tmp_path, resume_key="k")
    assert resumed["resumed_from"] == str(whole) and resumed["epochs"] == 3
    again, _, reused = fit_experiment(experiment, tmp_path, resume_key="k")
    assert reused["epochs"] == 3 and "epoch=2" in reused["resumed_from"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the finished fit, not a new one
    _, _, other = fit_experiment(experiment, tmp_path, resume_key="other")  # another key: fresh
    assert other["resumed_from"] is None
