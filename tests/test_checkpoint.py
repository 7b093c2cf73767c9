import json
import os

import pytest
import torch

from conftest import assert_same_detections
from core.checkpoint import load_checkpoint, main as checkpoint_main
from core.model import rebuild_model
from core.predict import NumberReader, detect, load_model


def test_export_makes_a_small_inference_copy_with_metadata(tiny_run, tiny_data, tmp_path, capsys):
    metrics = tmp_path / "test.json"
    metrics.write_text(json.dumps({"mAP": 0.5, "AP50": 0.9, "task2_accuracy": 0.8, "split": "test", "images": 8}))
    out = tmp_path / "default.pt"
    assert checkpoint_main(["export", f"{tiny_run}/last.pt", str(out), "--task2-threshold", "0.6",
                            "--metrics-json", str(metrics)]) == 0
    assert os.path.getsize(out) < os.path.getsize(f"{tiny_run}/best.pt") * 0.6
    raw = torch.load(out, weights_only=True)
    assert "optimizer" not in raw and raw["weights_dtype"] == "float16"
    loaded = load_model(str(out), "cpu")
    assert loaded.reader == NumberReader.plain(0.6)
    assert loaded.meta["evaluations"][0]["split"] == "test"
    assert loaded.meta["commands"], "the training commands travel with the model"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    original = load_checkpoint(f"{tiny_run}/last.pt")["model"]
    restored = rebuild_model(raw["model_kwargs"])  # load_model folds BatchNorms away: compare the stored weights
    restored.load_state_dict(load_checkpoint(str(out))["model"])
    for key, value in restored.state_dict().items():
        assert value.dtype == original[key].dtype, key
        assert torch.allclose(value, original[key], rtol=1e-3, atol=1e-3), key
    assert "Task 2 reader recorded: every digit scoring >= 0.60" in capsys.readouterr().out
    assert checkpoint_main(["show", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["arch"] == "digitnet_fpn" and shown["task2_threshold"] == 0.6


def test_export_records_a_one_line_reader_in_place_of_a_threshold(tiny_run, tmp_path, capsys):
    first, second = tmp_path / "plain.pt", tmp_path / "reader.pt"
    assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(first), "--task2-threshold", "0.6"]) == 0
    assert checkpoint_main(["export", str(first), str(second), "--task2-reader", "0.8,0.4"]) == 0
    loaded = load_model(str(second), "cpu")
    assert loaded.reader == NumberReader(0.8, 0.4, one_line=True)
    assert "task2_threshold" not in loaded.meta, "one record of how numbers are read, not two"
    assert checkpoint_main(["export", str(first), str(tmp_path / "bad.pt"), "--task2-reader", "0.4,0.8"]) == 2
    assert "member 0.8 is above anchor 0.4" in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()


def test_export_reports_a_bad_source(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"nope")
    assert checkpoint_main(["export", str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]) == 2
    assert "x.pt" in capsys.readouterr().err and not (tmp_path / "y.pt").exists()


def test_export_writes_out_every_model_option(tiny_run, tmp_path):
    """The exported copy records the inference-time options too (input size policy, second pass), so it
    reads images the same way when a later version of the code changes its defaults."""
    from core.model import ARCHITECTURES

    source = load_checkpoint(f"{tiny_run}/best.pt")
    trimmed = dict(source, model_kwargs={k: v for k, v in source["model_kwargs"].items()
                                         if not k.startswith("refine_")})
    torch.save(trimmed, tmp_path / "trimmed.pt")
    checkpoint_main(["export", str(tmp_path / "trimmed.pt"), str(tmp_path / "out.pt")])
    kwargs = torch.load(tmp_path / "out.pt", weights_only=True)["model_kwargs"]
    assert set(ARCHITECTURES["digitnet_fpn"].defaults) <= set(kwargs)
    assert kwargs["refine_min_score"] == ARCHITECTURES["digitnet_fpn"].defaults["refine_min_score"]
    assert kwargs["size_policy"] == source["model_kwargs"]["size_policy"]


def test_average_writes_the_mean_of_one_models_weights(tiny_run, tmp_path, capsys):
    first = load_checkpoint(f"{tiny_run}/best.pt")
    shifted = dict(first, model={k: v + 1.0 if v.is_floating_point() else v for k, v in first["model"].items()},
                   commands=["python -m core.train --second"])
    torch.save(shifted, tmp_path / "shifted.pt")
    out = tmp_path / "soup.pt"
    assert checkpoint_main(["average", f"{tiny_run}/best.pt", str(tmp_path / "shifted.pt"), "--out", str(out)]) == 0
    assert "--sweep-task2" in capsys.readouterr().out, "says how to pick the average's reader"
    soup = load_checkpoint(str(out))
    for key, value in first["model"].items():
        expected = value + 0.5 if value.is_floating_point() else value
        assert torch.allclose(soup["model"][key], expected, atol=1e-6), key
    assert "metrics" not in soup and "task2_reader" not in soup and len(soup["averaged_from"]) == 2
    assert soup["commands"][-1].startswith("python -m core.checkpoint average")
    assert "python -m core.train --second" in soup["commands"] and first["commands"][0] in soup["commands"]
    loaded = load_model(str(out), "cpu")  # inference rebuilds from the average alone (or raises CheckpointError)
    assert len(detect(loaded, [torch.rand(3, 64, 64)])) == 1


def test_average_refuses_checkpoints_of_different_models(tiny_run, tmp_path, capsys):
    first = load_checkpoint(f"{tiny_run}/best.pt")
    other = dict(first, class_names=[*first["class_names"], "letter"])
    torch.save(other, tmp_path / "other.pt")
    out = tmp_path / "soup.pt"
    assert checkpoint_main(["average", f"{tiny_run}/best.pt", str(tmp_path / "other.pt"), "--out", str(out)]) == 2
    assert "class_names" in capsys.readouterr().err and not out.exists()
    assert checkpoint_main(["average", f"{tiny_run}/best.pt", "--out", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err and not out.exists()


def test_export_records_only_an_evaluation_file(tiny_run, tmp_path, capsys):
    (tmp_path / "hello.json").write_text('{"hello": 1}')
    (tmp_path / "cut.json").write_text('{"mAP": 0.5,')
    for name, said in (("hello.json", "no mAP in it"), ("cut.json", "not JSON")):
        assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(tmp_path / "out.pt"), "--metrics-json",
                                str(tmp_path / name)]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
    (tmp_path / "m.json").write_text('{"mAP": 0.5, "task2_accuracy": 0.7, "split": "test", "other": 3}')
    assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(tmp_path / "out.pt"), "--metrics-json",
                            str(tmp_path / "m.json")]) == 0
    assert load_checkpoint(str(tmp_path / "out.pt"))["evaluations"] == [{"mAP": 0.5, "task2_accuracy": 0.7,
                                                                         "split": "test"}]


def test_is_checkpoint_file_tells_checkpoints_from_other_files(tiny_run, tmp_path):
    from core.checkpoint import is_checkpoint_file

    torch.save({"hello": torch.zeros(1)}, tmp_path / "state.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    (tmp_path / "cut.pt").write_bytes(open(f"{tiny_run}/best.pt", "rb").read()[:300])
    assert is_checkpoint_file(f"{tiny_run}/best.pt") and is_checkpoint_file(f"{tiny_run}/last.pt")
    assert not any(is_checkpoint_file(str(tmp_path / n)) for n in ("state.pt", "text.pt", "cut.pt", "gone.pt"))


def test_average_takes_a_fine_tune_and_its_start_read_another_way(tiny_run, tmp_path, capsys):
    from core.model import reading_options

    first = load_checkpoint(f"{tiny_run}/best.pt")
    read_otherwise = dict(first, model_kwargs={**first["model_kwargs"], "view_scales": [0.8, 1.0, 1.25],
                                               "line_heights": "shared"})
    torch.save(read_otherwise, tmp_path / "exported.pt")
    out = tmp_path / "soup.pt"
    assert checkpoint_main(["average", str(tmp_path / "exported.pt"), f"{tiny_run}/best.pt", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"reads images as {tmp_path / 'exported.pt'} does" in said and "--reading-of" in said
    soup = load_checkpoint(str(out))
    assert reading_options(soup["model_kwargs"]) == reading_options(read_otherwise["model_kwargs"])
    assert checkpoint_main(["average", f"{tiny_run}/best.pt", f"{tiny_run}/best.pt", "--out", str(out), "--force"]) == 0
    assert "reads images as" not in capsys.readouterr().out, "one way of reading: nothing to say"
    channels = first["model_kwargs"]["fpn_channels"]
    wider = dict(first, model_kwargs={**first["model_kwargs"], "fpn_channels": 2 * channels})
    torch.save(wider, tmp_path / "wider.pt")
    assert checkpoint_main(["average", f"{tiny_run}/best.pt", str(tmp_path / "wider.pt"), "--out", str(out),
                            "--force"]) == 2
    err = capsys.readouterr().err
    assert f"differs from {tiny_run}/best.pt in fpn_channels {2 * channels} (not {channels})" in err, err
    assert len(err) < 300, "names what differs, not every option"


def test_writing_commands_never_replace_their_source_and_replace_a_file_only_with_force(tiny_run, tmp_path, capsys):
    best = f"{tiny_run}/best.pt"
    copy = tmp_path / "copy.pt"
    assert checkpoint_main(["export", best, str(copy), "--float32"]) == 0
    before = copy.read_bytes()
    assert checkpoint_main(["export", str(copy), str(copy), "--force"]) == 2
    assert "is the file this command reads" in capsys.readouterr().err and copy.read_bytes() == before
    assert checkpoint_main(["export", best, str(copy)]) == 2
    assert f"{copy} exists: name a new file, or pass --force to replace it" in capsys.readouterr().err
    assert checkpoint_main(["average", best, str(copy), "--out", str(copy)]) == 2
    assert copy.read_bytes() == before, "nothing already saved is lost"
    assert checkpoint_main(["export", best, str(copy), "--force"]) == 0 and copy.read_bytes() != before
    capsys.readouterr()
    nested = tmp_path / "soup" / "deeper" / "best.pt"  # the README's --out runs/soup/best.pt, its folder not made yet
    assert checkpoint_main(["average", best, str(copy), "--out", str(nested)]) == 0 and nested.is_file()
    (tmp_path / "afile").write_text("x")
    assert checkpoint_main(["export", best, str(tmp_path / "afile" / "x.pt")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err


def test_export_sets_and_removes_the_closer_look(tiny_run, tmp_path, capsys):
    from core.model import RefinePolicy, closer_look_of, refine_policy_of

    shipped = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints", "default.pt")  # auto size
    plain, closer = tmp_path / "plain.pt", tmp_path / "closer.pt"
    assert checkpoint_main(["export", shipped, str(plain), "--look-closer", "off"]) == 0
    assert closer_look_of(load_model(str(plain), "cpu").model) is None
    assert "looked at again" not in load_model(str(plain), "cpu").inference_note()
    assert checkpoint_main(["export", str(plain), str(closer), "--look-closer", "700,1000,0.8,0.9,12"]) == 0
    loaded = load_model(str(closer), "cpu")
    look = closer_look_of(loaded.model)
    assert (look.max_short, look.max_long, look.trigger, look.min_score, look.small_px, look.follow, look.locate) == \
        (700, 1000, 0.8, 0.9, 12, 0.0, 0.0), "five values: the closer look's crops do not grow"
    assert look.refine_policy(refine_policy_of(loaded.model)) == refine_policy_of(loaded.model), \
        "and its second pass reads them as the first look's does"
    assert "looked at again" in loaded.inference_note() and "looked at again" not in loaded.inference_note(300)
    assert "there, a crop whose number runs" not in loaded.inference_note()
    following = tmp_path / "following.pt"
    assert checkpoint_main(["export", str(closer), str(following), "--look-closer", "700,1000,0.8,0.9,12,2.5"]) == 0
    loaded = load_model(str(following), "cpu")
    assert closer_look_of(loaded.model).follow == 2.5
    assert "there, a crop whose number runs to its side grows 2.5 digit heights" in loaded.inference_note()
    assert "locates a number" not in loaded.inference_note()
    assert checkpoint_main(["export", str(closer), str(following), "--look-closer", "700,1000,0.8,0.9,12,2,0.1",
                            "--force"]) == 0
    loaded = load_model(str(following), "cpu")
    first = refine_policy_of(loaded.model)
    assert closer_look_of(loaded.model).refine_policy(first) == RefinePolicy(first.below_px, 0.1, 2.0), \
        "the closer look locates at its own score and grows its crops"
    assert "there, a digit scoring 0.1 locates a number to read again" in loaded.inference_note()
    for source, bad, why in ((shipped, "100,896,0.85,0.98,10", "closer_max_short 100"),
                             (shipped, "640,896,0.85,1.5,10", "closer_min_score 1.5"),
                             (shipped, "640,896,0.85,0.98,10,12", "closer_follow 12.0 must be 0 (off) to 10"),
                             (shipped, "640,896,0.85,0.98,10,2,1.5", "closer_locate 1.5 must be a score"),
                             (f"{tiny_run}/best.pt", "640,896,0.85,0.98,10", "needs the auto input size")):
        assert checkpoint_main(["export", source, str(tmp_path / "bad.pt"), "--look-closer", bad]) == 2
        assert why in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()
    with pytest.raises(SystemExit):
        checkpoint_main(["export", shipped, str(tmp_path / "bad.pt"), "--look-closer", "640,896"])
    assert "SHORT,LONG,TRIGGER,MIN,SMALL_PX[,FOLLOW[,LOCATE]]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        checkpoint_main(["export", shipped, str(tmp_path / "bad.pt"), "--look-closer", "640,896,0.85,0.98,10,2,0.1,1"])
    assert "is not SHORT,LONG" in capsys.readouterr().err


def test_export_sets_and_removes_the_views_and_sets_line_heights(tiny_run, tmp_path, capsys):
    from core.model import RefinePolicy, refine_policy_of, view_scales_of

    views, plain = tmp_path / "views.pt", tmp_path / "plain.pt"
    assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(views), "--views", "0.8,1,1.25"]) == 0
    loaded = load_model(str(views), "cpu")
    assert view_scales_of(loaded.model) == (0.8, 1.0, 1.25)
    assert "the read that is kept (that crop, or else the whole image) is read at 0.8x, 1x, 1.25x that size" \
        in loaded.inference_note()
    loaded.model.refine_policy = RefinePolicy(0.0, 0.5)
    assert "one pass; each image is read at 0.8x, 1x, 1.25x" in loaded.inference_note()
    assert checkpoint_main(["export", str(views), str(plain), "--views", "off"]) == 0
    assert view_scales_of(load_model(str(plain), "cpu").model) == (1.0,)
    assert "1.25x" not in load_model(str(plain), "cpu").inference_note()
    for bad, why in (("0.8,1.25", "1.0 among them"), ("1,5", r"0.5..2")):
        assert checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--views", bad]) == 2
        assert why in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()
    with pytest.raises(SystemExit):
        checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--views", "0.8;1"])
    assert "0.8,1,1.25" in capsys.readouterr().err
    confirm = tmp_path / "confirm.pt"
    assert checkpoint_main(["export", str(views), str(confirm), "--view-photos", "confirm"]) == 0
    again = load_model(str(confirm), "cpu")
    assert again.model.view_photos == "confirm" and "stands alone is located and read whole" in again.inference_note()
    assert again.meta["exported_from"] == os.path.abspath(f"{tiny_run}/best.pt"), \
        "an export of an export names the training run"
    assert checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--view-photos", "all"]) == 2
    assert "--view-photos: view_photos 'all' must be one of once, confirm" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()
    batched = tmp_path / "batched.pt"
    assert checkpoint_main(["export", str(confirm), str(batched), "--crop-views", "batched"]) == 0
    again = load_model(str(batched), "cpu")
    assert again.model.crop_views == "batched" and again.model.view_photos == "confirm"
    assert "a crop's sizes in one batch" in again.inference_note()
    assert "one batch" not in load_model(str(confirm), "cpu").inference_note()
    assert checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--crop-views", "both"]) == 2
    assert "--crop-views: crop_views 'both' must be one of apart, batched" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()
    shared = tmp_path / "shared.pt"
    assert checkpoint_main(["export", str(confirm), str(shared), "--line-heights", "shared"]) == 0
    again = load_model(str(shared), "cpu")
    assert again.model.line_heights == "shared" and again.model.view_photos == "confirm"
    assert "share one box height" in again.inference_note()
    before = load_checkpoint(str(confirm))
    del before["model_kwargs"]["line_heights"]
    torch.save(before, tmp_path / "before.pt")
    assert load_model(str(tmp_path / "before.pt"), "cpu").model.line_heights == "own", \
        "a checkpoint saved before the option: each digit's own box"
    assert checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--line-heights", "tall"]) == 2
    assert "--line-heights: line_heights 'tall' must be one of own, shared" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()
    assert refine_policy_of(again.model).follow == 0.0, "a crop grows only where a checkpoint asks"
    followed = tmp_path / "followed.pt"
    assert checkpoint_main(["export", str(shared), str(followed), "--follow-line", "2"]) == 0
    again = load_model(str(followed), "cpu")
    assert refine_policy_of(again.model).follow == 2.0 and again.model.line_heights == "shared"
    assert "grows 2 digit heights that way and is read again" in again.inference_note()
    assert checkpoint_main(["export", str(followed), str(plain), "--follow-line", "off", "--force"]) == 0
    assert refine_policy_of(load_model(str(plain), "cpu").model).follow == 0.0
    assert checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--follow-line", "40"]) == 2
    assert "refine_follow 40.0 must be 0 (off) to 10 digit heights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        checkpoint_main(["export", str(views), str(tmp_path / "bad.pt"), "--follow-line", "wide"])
    assert "'wide' is not a number of digit heights" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()


def test_export_keeps_where_the_reader_was_picked_only_for_that_reader(tiny_run, tmp_path):
    run = load_model(f"{tiny_run}/best.pt", "cpu")
    assert run.meta["task2_reader_picked_on"]["split"] == "valid"
    own, other = tmp_path / "own.pt", tmp_path / "other.pt"
    own_reader = ",".join(str(run.reader.as_dict()[k]) for k in ("anchor", "member"))
    assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(own), "--task2-reader", own_reader]) == 0
    assert load_model(str(own), "cpu").meta["task2_reader_picked_on"] == run.meta["task2_reader_picked_on"]
    assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(other), "--task2-reader", "0.97,0.2"]) == 0
    assert "task2_reader_picked_on" not in load_model(str(other), "cpu").meta


def test_export_records_a_photo_reader_beside_the_reader_it_keeps_or_is_given(tiny_run, tmp_path, capsys):
    source = f"{tiny_run}/best.pt"
    both, one, fresh = tmp_path / "both.pt", tmp_path / "one.pt", tmp_path / "fresh.pt"
    assert checkpoint_main(["export", source, str(both), "--task2-reader", "0.5,0.5", "--photo-reader", "0.8,0.7"]) == 0
    assert load_model(str(both), "cpu").reader == NumberReader(0.5, 0.5, photos=NumberReader(0.8, 0.7))
    said = capsys.readouterr().out
    assert f"Task 2 reader recorded: {load_model(str(both), 'cpu').reader.describe()}" in said
    assert "In a photo: a number needs one digit scoring >= 0.80" in said, "export says what it recorded"
    assert checkpoint_main(["export", str(both), str(one), "--photo-reader", "same"]) == 0
    assert load_model(str(one), "cpu").reader == NumberReader(0.5, 0.5), "'same': photos read as other images"
    assert checkpoint_main(["export", str(both), str(fresh), "--task2-reader", "0.6,0.6"]) == 0
    assert load_model(str(fresh), "cpu").reader == NumberReader(0.6, 0.6), "a new reader replaces all of it"
    assert checkpoint_main(["export", str(both), str(fresh), "--photo-reader", "0.9,0.8", "--task2-gap", "0.3",
                            "--force"]) == 0
    assert load_model(str(fresh), "cpu").reader == \
        NumberReader(0.5, 0.5, gap=0.3, photos=NumberReader(0.9, 0.8, gap=0.3))
    assert checkpoint_main(["export", str(both), str(tmp_path / "bad.pt"), "--photo-reader", "0.6,0.9"]) == 2
    assert "member 0.9 is above anchor 0.6" in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()


def test_grow_writes_a_wider_model_that_reads_as_its_source(tiny_run, tiny_data, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "wide.pt"
    assert checkpoint_main(["grow", f"{tiny_run}/best.pt", str(out), "--width", "1.5"]) == 0
    assert f"--width 1.5 --weights {out}" in capsys.readouterr().out
    source, wide = load_model(f"{tiny_run}/best.pt", "cpu"), load_model(str(out), "cpu")
    assert wide.meta["model_kwargs"]["widths"] == [36, 48, 96, 192, 288]
    assert wide.meta["commands"][-1].startswith("python -m core.checkpoint grow")
    assert wide.reader == source.reader, "it reads as its source, so its reader still holds"
    count = lambda loaded: sum(p.numel() for p in loaded.model.parameters())  # noqa: E731
    assert count(wide) > 1.5 * count(source)
    images = [Image.open(os.path.join(tiny_data, "valid", name)).convert("RGB")
              for name in sorted(os.listdir(os.path.join(tiny_data, "valid")))[:3]]
    found = detect(source, images)
    assert sum(len(d["scores"]) for d in found) > 0
    for before, after in zip(found, detect(wide, images)):
        as_tuples = [list(zip(d["scores"], d["boxes"], d["digits"])) for d in (before, after)]
        assert_same_detections(*as_tuples, score_tol=1e-4, box_tol=0.05)
    assert checkpoint_main(["grow", str(out), str(tmp_path / "narrow.pt"), "--width", "1"]) == 2
    assert "is already width 1.5: it can grow to a larger width only, not 1" in capsys.readouterr().err
    assert not (tmp_path / "narrow.pt").exists()
    assert checkpoint_main(["grow", f"{tiny_run}/best.pt", str(tmp_path), "--width", "2"]) == 2
    assert f"{tmp_path} is a folder: name the file to write" in capsys.readouterr().err


def test_export_adds_a_gap_to_the_checkpoints_own_reader(tiny_run, tmp_path, capsys):
    first, gapped = tmp_path / "reader.pt", tmp_path / "gap.pt"
    assert checkpoint_main(["export", f"{tiny_run}/best.pt", str(first), "--task2-reader", "0.8,0.6"]) == 0
    assert checkpoint_main(["export", str(first), str(gapped), "--task2-gap", "0.35"]) == 0
    assert load_model(str(gapped), "cpu").reader == NumberReader(0.8, 0.6, gap=0.35)
    assert checkpoint_main(["export", str(gapped), str(tmp_path / "again.pt"), "--task2-reader", "0.8,0.6"]) == 0
    assert load_model(str(tmp_path / "again.pt"), "cpu").reader == NumberReader(0.8, 0.6), "a new reader, whole"
    assert checkpoint_main(["export", str(first), str(tmp_path / "bad.pt"), "--task2-threshold", "0.6",
                            "--task2-gap", "0.3"]) == 2
    assert "one-line reader" in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()


def test_export_reads_its_source_once_for_a_gap(tiny_run, tmp_path, monkeypatch):
    import core.checkpoint as checkpoint

    first = tmp_path / "reader.pt"
    checkpoint.export(f"{tiny_run}/best.pt", str(first), task2_reader=NumberReader(0.8, 0.6).as_dict())
    loads = []
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda path: loads.append(path) or load_checkpoint(path))
    checkpoint.export(str(first), str(tmp_path / "gap.pt"), task2_gap=0.3)
    assert loads == [str(first)], "the reader the gap joins comes from the payload already read"
    assert load_model(str(tmp_path / "gap.pt"), "cpu").reader == NumberReader(0.8, 0.6, gap=0.3)
    checkpoint.export(str(first), str(tmp_path / "both.pt"), task2_reader=NumberReader(0.9, 0.5).as_dict(),
                      task2_gap=0.4)
    assert load_model(str(tmp_path / "both.pt"), "cpu").reader == NumberReader(0.9, 0.5, gap=0.4)
