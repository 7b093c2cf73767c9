import dataclasses

import pytest

from core.config import ConfigError, TrainConfig, build_parser, parse_args


def test_every_field_is_a_flag_with_help():
    parser = build_parser()
    flags = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in flags, f.name
        assert flags[f.name].help and len(flags[f.name].help) > 10


@pytest.mark.parametrize("module", ["core.train", "core.evaluate", "core.predict"])
def test_help_shows_each_default_once_and_never_none(module, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert "(default: None)" not in text
    assert "(default: the checkpoint's reader)" in text or module == "core.train"
    assert "(default: 8)" in text or module != "core.evaluate", "a real default is still shown"


def test_defaults_are_the_reference_recipe():
    cfg, _ = parse_args(["--out", "x"])
    assert (cfg.arch, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.subset_fraction) == (
        "fasterrcnn_resnet50_fpn_v2", 1e-4, 5e-4, 10, 0.1)
    assert (cfg.scheduler, cfg.eta_min, cfg.step_size, cfg.gamma) == ("cosine", 1e-6, 1, 0.7)


def test_argv_round_trip():
    cfg = TrainConfig(data="d", out="runs/a", arch="digitnet_fpn", scheduler="step", epochs=3, lr=2.5e-3,
                      min_size=96, amp=False, skip_invalid=True)
    again, explicit = parse_args(cfg.to_argv())
    assert again == cfg
    assert {"arch", "scheduler", "lr", "min_size", "amp", "skip_invalid"} <= explicit


@pytest.mark.parametrize("argv, message", [
    (["--scheduler", "linear"], "invalid choice"),
    (["--arch", "yolo"], "invalid choice"),
    (["--epochs", "0"], "epochs=0 must be >= 1"),
    (["--lr", "0"], "lr=0.0 must be > 0"),
    (["--lr", "nan"], "finite"),
    (["--subset-fraction", "1.5"], "subset_fraction=1.5 must be <= 1.0"),
    (["--batch-size", "-2"], "batch_size=-2 must be >= 1"),
    (["--epochs", "two"], "invalid int value"),
    (["--lr", "1e-4", "--eta-min", "1e-3"], "eta_min=0.001 must not exceed lr=0.0001"),
    (["--width", "1.5"], "width=1.5 applies to digitnet_fpn only, not fasterrcnn_resnet50_fpn_v2"),
    (["--arch", "digitnet_fpn", "--width", "8"], "width=8.0 must be <= 4.0"),
])
def test_bad_values_fail_loudly(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_args(["--out", "x"] + argv)
    assert message in capsys.readouterr().err


def test_from_dict_rejects_unknown_keys_and_bad_types():
    with pytest.raises(ConfigError, match="unknown configuration keys: colour"):
        TrainConfig.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="epochs='ten' is not a valid int"):
        TrainConfig.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match="epochs=2.5 is not a valid int"):
        TrainConfig.from_dict({"epochs": 2.5})
    cfg = TrainConfig.from_dict({"epochs": "3", "lr": "0.01", "amp": "false", "out": "r"})
    assert (cfg.epochs, cfg.lr, cfg.amp) == (3, 0.01, False)


def test_a_width_widens_digitnet_fpns_backbone_and_fpn():
    wide = TrainConfig(out="r", arch="digitnet_fpn", width=1.5).validate().model_overrides()
    assert wide["widths"] == [36, 48, 96, 192, 288] and wide["fpn_channels"] == 96
    assert "widths" not in TrainConfig(out="r", arch="digitnet_fpn").model_overrides(), \
        "width 1 leaves the architecture's own channels (and a checkpoint's) alone"


def test_the_cpu_time_estimate_follows_the_architecture_and_the_width():
    from core.config import estimated_seconds

    narrow = TrainConfig(out="r", arch="digitnet_fpn", epochs=10, subset_fraction=0.5, device="cpu")
    seconds = estimated_seconds(narrow, 1800, cuda_available=False, cpu_count=2)
    assert seconds == pytest.approx(10 * 900 / 18.0), "18 training images/s on 2 cores"
    wide = TrainConfig(out="r", arch="digitnet_fpn", epochs=10, subset_fraction=0.5, device="cpu", width=1.5)
    assert estimated_seconds(wide, 1800, False, 2) / seconds == pytest.approx(1.5 ** 1.3)
    assert estimated_seconds(narrow, 1800, cuda_available=True, cpu_count=2) is not None, "device cpu asked for"
    assert estimated_seconds(TrainConfig(out="r", arch="digitnet_fpn", device="cuda"), 1800, True, 2) is None


def test_weights_training_could_not_start_from_are_refused_naming_the_file_and_what_it_holds(tmp_path):
    import torch

    from core.model import build_model

    def refusal(contents, arch="digitnet_fpn"):
        path = tmp_path / "best.pt"
        torch.save(contents, path)
        with pytest.raises(ConfigError) as caught:
            TrainConfig(out="r", arch=arch, weights=str(path), lr=1e-4).check_weights()
        assert caught.value.fields == ["weights"], "the form names its weights field"
        return str(caught.value)

    assert refusal({"hello": torch.zeros(1)}) == \
        f"{tmp_path}/best.pt is not a checkpoint: no digitnet_fpn weights in it (a dict of 'hello')"
    assert refusal({"epoch": 3, "note": "x"}).endswith("is not a checkpoint: no model weights in it (a dict of "
                                                        "'epoch', 'note')")
    assert refusal([1, 2, 3]).endswith("no model weights in it (a list of 3 items)")
    digitnet = build_model("digitnet_fpn", weights="none")[0].state_dict()
    assert "only 0.0% of fasterrcnn_resnet50_fpn_v2's weights fit" in refusal(digitnet, "fasterrcnn_resnet50_fpn_v2")
    with pytest.raises(ConfigError, match="weights file .*missing.pt: no such file"):
        TrainConfig(out="r", arch="digitnet_fpn", weights=str(tmp_path / "missing.pt")).check_weights()
    # A plain state dict that fits is accepted (torchvision's own format), and so is ours inside a "model" key.
    torch.save(digitnet, tmp_path / "state.pt")
    torch.save({"model": digitnet, "epoch": 3}, tmp_path / "trainer.pt")
    for name in ("state.pt", "trainer.pt"):
        TrainConfig(out="r", arch="digitnet_fpn", weights=str(tmp_path / name)).check_weights()


def test_a_from_scratch_learning_rate_on_trained_weights_is_noted_not_refused(tmp_path, capsys):
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x")  # the note reads only the settings: check_weights judges the file
    tune = TrainConfig(out="r", arch="digitnet_fpn", weights=str(weights), lr=1e-3)
    note = tune.fine_tune_lr_note()
    assert note.startswith(f"learning rate 0.001 is one to train from scratch: on the weights of {weights}")
    assert "Fine-tuning usually takes 1e-4 to 2e-4" in note
    for quiet in (dataclasses.replace(tune, lr=5e-4), dataclasses.replace(tune, weights="none"),
                  dataclasses.replace(tune, weights="auto"), dataclasses.replace(tune, resume=True),
                  dataclasses.replace(tune, weights=str(tmp_path / "not-there.pt"))):
        assert quiet.fine_tune_lr_note() is None, quiet
    parse_args(["--out", "x", "--arch", "digitnet_fpn", "--weights", str(weights), "--lr", "1e-3"])
    assert capsys.readouterr().err == f"core.train: note: {note}\n", "the command line says what the page warns"
    parse_args(["--out", "x", "--arch", "digitnet_fpn", "--weights", str(weights), "--lr", "2e-4"])
    assert capsys.readouterr().err == ""


def test_a_data_folder_that_is_not_there_is_named_as_a_path_to_check(tmp_path):
    with pytest.raises(ConfigError, match=f"no folder at {tmp_path}/nowhere: check the path") as caught:
        TrainConfig(out="r", data=str(tmp_path / "nowhere")).check_data()
    assert caught.value.fields == ["data"]
    assert TrainConfig(out="r", data=str(tmp_path)).check_data().data == str(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="photo.jpg is a file: name the dataset folder"):
        TrainConfig(out="r", data=str(tmp_path / "photo.jpg")).check_data()
