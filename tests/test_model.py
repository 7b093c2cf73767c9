import pytest
import torch

from conftest import assert_same_detections
from core import model as model_mod
from core.model import ARCHITECTURES, ModelError, build_model, rebuild_model, resolve_model_kwargs


def _targets():
    return [{"boxes": torch.tensor([[10.0, 8.0, 30.0, 50.0], [34.0, 8.0, 52.0, 50.0]]),
             "labels": torch.tensor([2, 8])}]


@pytest.mark.parametrize("arch, overrides", [
    ("fasterrcnn_resnet50_fpn_v2", {"min_size": 128, "max_size": 256}),
    ("digitnet_fpn", {}),
])
def test_builds_trains_and_detects(arch, overrides):
    torch.manual_seed(0)
    model, kwargs, note = build_model(arch, overrides, weights="none")
    assert kwargs["num_classes"] == 11 and kwargs["arch"] == arch
    assert "scratch" in note
    model.train()
    losses = model([torch.rand(3, 60, 80)], _targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    model.eval()
    with torch.inference_mode():
        [out] = model([torch.rand(3, 60, 80)])
    assert out["boxes"].shape[1] == 4 and out["labels"].dtype == torch.int64
    assert model.roi_heads.box_predictor.cls_score.out_features == 11


def test_reference_defaults_are_torchvisions():
    kwargs = resolve_model_kwargs("fasterrcnn_resnet50_fpn_v2")
    assert (kwargs["min_size"], kwargs["max_size"], kwargs["rpn_post_nms_top_n_test"]) == (800, 1333, 1000)
    assert len(kwargs["anchor_sizes"]) == 5, "one anchor-size tuple per FPN level"


def test_compact_model_suits_small_digits():
    kwargs = resolve_model_kwargs("digitnet_fpn")
    model = rebuild_model(kwargs)
    levels = len(model.backbone(torch.rand(1, 3, 128, 256)))
    assert levels == len(kwargs["anchor_sizes"])
    assert max(kwargs["min_size"]) <= 160, "no upscaling of 40 px images to 800 px"
    assert min(min(s) for s in kwargs["anchor_sizes"]) <= 16
    assert all(r >= 1.0 for r in kwargs["aspect_ratios"]), "anchors are upright like digits"
    params = sum(p.numel() for p in model.parameters())
    assert params < 5_000_000


def test_min_size_override_moves_the_evaluation_size():
    assert resolve_model_kwargs("digitnet_fpn", {"min_size": 64})["test_min_size"] == 64
    model = rebuild_model(resolve_model_kwargs("digitnet_fpn", {"min_size": [64, 80, 96]}))
    assert model.transform.min_size[-1] == 80


def test_unknown_architecture_or_option_fails():
    with pytest.raises(ModelError, match="unknown architecture 'yolo'"):
        build_model("yolo")
    with pytest.raises(ModelError, match="has no option 'colour'"):
        build_model("digitnet_fpn", {"colour": 1})


def test_auto_weights_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    _, _, note = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights="auto")
    assert "no COCO weights in the torch hub cache" in note and "from scratch" in note


def test_cached_coco_weights_are_used(tmp_path, monkeypatch):
    """A file at torchvision's cache path is loaded; the 91-class predictor is re-initialised."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    donor, _, _ = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights="none")
    state = donor.state_dict()
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(91, 1024)  # COCO's 91 classes
    url = model_mod.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    model, _, note = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights="auto")
    assert "COCO_V1" in note and "re-initialised" in note
    assert torch.equal(model.backbone.body.conv1.weight, donor.backbone.body.conv1.weight)


def test_weights_file(tmp_path):
    donor, _, _ = build_model("digitnet_fpn", weights="none")
    path = tmp_path / "w.pth"
    torch.save(donor.state_dict(), path)
    model, _, note = build_model("digitnet_fpn", weights=str(path))
    assert note.startswith("loaded weights")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), donor.state_dict().values()))
    with pytest.raises(ModelError, match="weights file .*missing.pth: no such file"):
        build_model("digitnet_fpn", weights=str(tmp_path / "missing.pth"))
    # A dict of tensors none of which is the model's: named with what it holds, not measured as 0% fitting.
    torch.save({"hello": torch.zeros(1), **{f"t{i}": torch.zeros(2) for i in range(4)}}, path)
    with pytest.raises(ModelError, match=r"w.pth is not a checkpoint: no digitnet_fpn weights in it \(a dict of "
                                         r"'hello', 't0', 't1', 't2' and 1 more\)$"):
        build_model("digitnet_fpn", weights=str(path))
    torch.save(torch.zeros(3, 4), path)
    with pytest.raises(ModelError, match=r"no model weights in it \(one tensor of shape \(3, 4\)\)$"):
        build_model("digitnet_fpn", weights=str(path))
    torch.save({**donor.state_dict(), "note": "x"}, path)
    with pytest.raises(ModelError, match="w.pth: expected a state dict of tensors"):
        build_model("digitnet_fpn", weights=str(path))
    torch.save({"arch": "digitnet_fpn", "model": donor.state_dict()}, path)  # one of ours, for the other model
    with pytest.raises(ModelError, match=r"w.pth is a digitnet_fpn checkpoint, not a fasterrcnn_resnet50_fpn_v2 one: "
                                         r"set the architecture to digitnet_fpn \(--arch digitnet_fpn\)$"):
        build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights=str(path))


def test_every_architecture_has_a_summary():
    assert "fasterrcnn_resnet50_fpn_v2" in ARCHITECTURES
    assert all(spec.summary for spec in ARCHITECTURES.values())


def test_absurd_or_mistyped_model_kwargs_are_refused_before_building():
    with pytest.raises(ModelError, match="widths"):
        resolve_model_kwargs("digitnet_fpn", {"widths": [10**6, 32, 64, 128, 192]})
    with pytest.raises(ModelError, match="blocks"):
        resolve_model_kwargs("digitnet_fpn", {"blocks": "many"})
    with pytest.raises(ModelError, match="max_size"):
        resolve_model_kwargs("fasterrcnn_resnet50_fpn_v2", {"max_size": -5})


def test_pretrained_reference_freezes_like_torchvision(tmp_path):
    """With pretrained weights only layer2-4 of the ResNet learn (torchvision's default of 3 trainable
    layers); the choice is recorded in the kwargs, so a rebuild for --resume freezes the same ones."""
    donor, _, _ = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights="none")
    assert all(p.requires_grad for p in donor.parameters()), "from scratch everything learns"
    path = tmp_path / "coco.pth"
    torch.save(donor.state_dict(), path)
    model, kwargs, _ = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights=str(path))
    assert kwargs["trainable_backbone_layers"] == 3

    def frozen(m):
        return {n for n, p in m.named_parameters() if not p.requires_grad}

    names = frozen(model)
    assert names and all(n.startswith(("backbone.body.conv1", "backbone.body.bn1", "backbone.body.layer1"))
                         for n in names)
    assert any(n.startswith("backbone.body.layer1") for n in names)
    assert frozen(rebuild_model(kwargs)) == names
    with pytest.raises(ModelError, match="trainable_backbone_layers=7"):
        build_model("fasterrcnn_resnet50_fpn_v2", {"trainable_backbone_layers": 7}, weights="none")


def test_a_letter_class_model_grows_from_digits_only_weights(tmp_path):
    torch.manual_seed(0)
    donor, _, _ = build_model("digitnet_fpn", weights="none")
    path = tmp_path / "digits.pth"
    torch.save(donor.state_dict(), path)
    model, kwargs, note = build_model("digitnet_fpn", {"num_classes": 12}, weights=str(path))
    assert kwargs["num_classes"] == 12 and "re-initialised" not in note and "grew 1 class(es)" in note
    old, new = donor.roi_heads.box_predictor, model.roi_heads.box_predictor
    assert new.cls_score.out_features == 12 and new.bbox_pred.out_features == 48
    assert torch.equal(new.cls_score.weight[:11], old.cls_score.weight), "background and digits keep what they learnt"
    assert torch.equal(new.bbox_pred.bias[:44], old.bbox_pred.bias)
    rebuilt = rebuild_model(kwargs)
    assert rebuilt.roi_heads.box_predictor.cls_score.out_features == 12, "the checkpoint's kwargs rebuild it"
    with pytest.raises(ModelError, match="num_classes=13"):
        build_model("digitnet_fpn", {"num_classes": 13}, weights="none")


def test_the_closer_look_is_off_by_default_and_its_options_are_checked():
    from core.model import InputSize, closer_look_of

    assert closer_look_of(rebuild_model(resolve_model_kwargs("digitnet_fpn"))) is None
    look = closer_look_of(rebuild_model(resolve_model_kwargs(
        "digitnet_fpn", {"closer_max_short": 640, "closer_max_long": 896, "closer_trigger": 0.85,
                         "closer_min_score": 0.98, "closer_small_px": 10})))
    first = InputSize("auto", 128, 384, 512)
    assert look.input_size(first) == InputSize("auto", 128, 640, 896)
    assert look.worth_it(first, 720, 1280), "a photo pass 1 reduced to 512 px is looked at again at 896 px"
    assert not look.worth_it(first, 208, 226), "an image pass 1 saw at its own size is not"
    found = {"boxes": [[0, 0, 10, 24], [40, 0, 50, 30]], "scores": [0.99, 0.7], "digits": [1, 2]}
    assert look.keeps(found, 0.4), "a sure digit 9.6 px tall at pass 1's size: too small there to judge"
    assert not look.keeps(found, 0.5), "12 px at pass 1's size: pass 1 saw it and did not read it"
    assert not look.keeps({**found, "scores": [0.97, 0.7]}, 0.4), "no sure digit"
    assert look.follow == 0.0 and look.locate == 0.0, "the closer look reads its crops as the first look unless asked"
    for options, why in (({"closer_max_short": 300, "closer_max_long": 896}, "closer_max_short 300"),
                         ({"closer_max_short": 640, "closer_max_long": 3000}, "<= 2000"),
                         ({"closer_max_short": 640, "closer_max_long": 896, "closer_trigger": -0.1,
                           "closer_small_px": 10}, "closer_trigger"),
                         ({"closer_max_short": 640, "closer_max_long": 896}, "closer_small_px 0"),
                         ({"closer_max_short": 640, "closer_max_long": 896, "closer_small_px": 10,
                           "closer_follow": 12}, "closer_follow 12 must be 0 .off. to 10 digit heights"),
                         ({"closer_max_short": 640, "closer_max_long": 896, "closer_small_px": 10,
                           "size_policy": "fixed"},
                          "needs the auto input size")):
        with pytest.raises(ModelError, match=why):
            rebuild_model(resolve_model_kwargs("digitnet_fpn", options))


def test_one_view_by_default_and_the_view_options_are_checked():
    from core.model import InputSize, crop_views_of, line_heights_of, view_photos_of, view_scales_of

    assert view_scales_of(rebuild_model(resolve_model_kwargs("digitnet_fpn"))) == (1.0,)
    assert crop_views_of(rebuild_model(resolve_model_kwargs("digitnet_fpn"))) == "apart"
    assert crop_views_of(rebuild_model(resolve_model_kwargs("fasterrcnn_resnet50_fpn_v2",
                                                            {"crop_views": "batched"}))) == "batched"
    assert view_photos_of(rebuild_model(resolve_model_kwargs("digitnet_fpn"))) == "once"
    assert view_photos_of(rebuild_model(resolve_model_kwargs("digitnet_fpn", {"view_photos": "confirm"}))) == "confirm"
    assert line_heights_of(rebuild_model(resolve_model_kwargs("digitnet_fpn"))) == "own"
    assert line_heights_of(rebuild_model(resolve_model_kwargs("fasterrcnn_resnet50_fpn_v2",
                                                              {"line_heights": "shared"}))) == "shared"
    assert view_scales_of(rebuild_model(resolve_model_kwargs("digitnet_fpn", {"view_scales": [0.8, 1, 1.25]}))) \
        == (0.8, 1.0, 1.25)
    policy = InputSize("auto", 128, 384, 512)
    assert policy.scale(720, 1280, 1.25) == pytest.approx(1.25 * policy.scale(720, 1280))
    assert InputSize("fixed", 1500, 1500, 2000).scale(1000, 1900, 2.0) == pytest.approx(2000 / 1900), \
        "no view past the largest input side"
    assert policy.padded_size(208, 226, 32, 1.25) == (288, 288)
    for options, why in (({"view_scales": [0.8, 1.25]}, "1.0 among them"),
                         ({"view_scales": [1.0, 1.0]}, "distinct"),
                         ({"view_scales": [1.0, 3.0]}, r"0.5\.\.2"),
                         ({"view_fuse_iou": 1.5}, "view_fuse_iou 1.5"),
                         ({"view_photos": "twice"}, "view_photos 'twice' must be one of once, confirm"),
                         ({"crop_views": "together"}, "crop_views 'together' must be one of apart, batched"),
                         ({"line_heights": "tall"}, "line_heights 'tall' must be one of own, shared"),
                         ({"refine_follow": 40}, "refine_follow 40 must be 0 .off. to 10 digit heights")):
        with pytest.raises(ModelError, match=why):
            rebuild_model(resolve_model_kwargs("digitnet_fpn", options))


def _with_trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms: fresh ones (mean 0, var 1) fold into a no-op."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


@pytest.mark.parametrize("arch, overrides", [
    ("fasterrcnn_resnet50_fpn_v2", {"min_size": 128, "max_size": 256}),
    ("digitnet_fpn", {}),
])
def test_a_model_prepared_for_inference_finds_what_it_found_before(arch, overrides):
    torch.manual_seed(0)
    model = _with_trained_statistics(build_model(arch, overrides, weights="none")[0])
    image = torch.rand(3, 96, 120)
    with torch.inference_mode():
        features_before = model.backbone(image[None])
        [before] = model([image])
    prepared = model_mod.prepare_for_inference(model)
    assert not [name for name, m in prepared.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stem = next(m for m in prepared.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        features_after = prepared.backbone(image[None])
        [after] = prepared([image])
    for key, expected in features_before.items():  # random weights make features of any magnitude
        assert (features_after[key] - expected).abs().max() <= 1e-4 * expected.abs().max(), key
    # Same class, score within 1e-4, box within a tenth of a pixel (a wrong fold moves them far).
    assert_same_detections(_as_tuples(before), _as_tuples(after), score_tol=1e-4, box_tol=0.1)


def _as_tuples(detections: dict) -> list[tuple]:
    return list(zip(detections["scores"].tolist(), detections["boxes"].tolist(), detections["labels"].tolist()))


def test_only_batchnorms_known_to_follow_their_convolution_are_folded():
    class SideBySide(torch.nn.Module):  # conv then bn by name, but the bn normalises the input, not the conv's output
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.conv1(x) + self.bn1(x)

    model = _with_trained_statistics(torch.nn.Sequential(SideBySide(), torch.nn.Conv2d(4, 6, 1),
                                                         torch.nn.BatchNorm2d(6)))
    x = torch.rand(1, 4, 8, 8)
    before = model(x)
    prepared = model_mod.prepare_for_inference(model)
    assert isinstance(prepared[0].bn1, torch.nn.BatchNorm2d), "a block not known to chain them keeps its bn"
    assert isinstance(prepared[2], torch.nn.Identity), "a Sequential's conv -> bn is folded"
    assert torch.allclose(prepared(x), before, atol=1e-5)


def test_a_grown_model_finds_what_the_narrower_one_found():
    torch.manual_seed(0)
    narrow = _with_trained_statistics(build_model("digitnet_fpn", {}, weights="none")[0])
    wide = build_model("digitnet_fpn", model_mod.digitnet_width(1.5), weights="none")[0]
    fresh = {k: v.clone() for k, v in wide.state_dict().items()}
    wide.load_state_dict(model_mod.grow_state_dict(narrow.state_dict(), fresh))
    wide.eval()
    new_conv = wide.backbone.body.layer3[0].conv1.weight
    assert new_conv.shape[0] > narrow.backbone.body.layer3[0].conv1.weight.shape[0]
    assert new_conv[64:].abs().sum() > 0, "new channels start live (random), not dead"
    image = torch.rand(3, 96, 120)
    with torch.inference_mode():
        [before], [after] = narrow([image]), wide([image])
    assert len(before["scores"]) > 0
    assert_same_detections(_as_tuples(before), _as_tuples(after), score_tol=1e-4, box_tol=0.1)
    with torch.inference_mode():
        old_features, grown_features = narrow.backbone(image[None]), wide.backbone(image[None])
        wide.backbone.fpn.inner_blocks[0][0].weight[:64, 64:] += 1.0  # old outputs reading new inputs
        broken_features = wide.backbone(image[None])
    for key, expected in old_features.items():  # the FPN's old channels exactly
        assert torch.allclose(grown_features[key][:, :64], expected, atol=1e-5), key
    assert not torch.allclose(broken_features["0"][:, :64], old_features["0"], atol=1e-3), \
        "the check sees a new channel leaking into an old one (at the finest level, which that block feeds)"


def test_growing_refuses_to_shrink_or_to_change_the_architecture():
    narrow = build_model("digitnet_fpn", {}, weights="none")[0].state_dict()
    wide = build_model("digitnet_fpn", model_mod.digitnet_width(1.5), weights="none")[0].state_dict()
    with pytest.raises(ModelError, match="never shrinks"):
        model_mod.grow_state_dict(wide, narrow)
    with pytest.raises(ModelError, match="in one model only"):
        model_mod.grow_state_dict({**narrow, "extra.weight": torch.zeros(2, 2)}, wide)
    with pytest.raises(ModelError, match="between 0.25 and 4"):
        model_mod.digitnet_width(5)
