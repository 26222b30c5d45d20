"""The from-scratch Vision Transformers against torchvision: keys, initialisation, logits, published parameter counts,
position-embedding resizing, stochastic depth and the registry's ViT names."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import interpolate_embeddings

from resnet_cli.errors import ConfigError
from resnet_cli.models import (
    VisionTransformer,
    build_model,
    canonical_arch,
    check_image_size,
    depth_of,
    display_name,
    family_of,
    list_models,
    resize_pos_embedding,
    run_name,
)
from resnet_cli.models.registry import VIT_SIZES

# torchvision's figures at 1000 classes and 224 px (Ti and S: VisionTransformer with DeiT's sizes; B: vit_b_16).
PUBLISHED_PARAMS = {"vit_ti_16": 5_717_416, "vit_s_16": 22_050_664, "vit_b_16": 86_567_656}


def torchvision_vit(arch: str, image_size: int, num_classes: int = 1000) -> torchvision.models.VisionTransformer:
    size = VIT_SIZES[arch.split("_")[1]]
    return torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=int(arch.split("_")[2]),
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        hidden_dim=size.hidden_dim,
        mlp_dim=size.mlp_dim,
        num_classes=num_classes,
    )


@pytest.mark.parametrize(("arch", "count"), PUBLISHED_PARAMS.items())
def test_parameter_count_matches_published(arch, count):
    with torch.device("meta"):
        model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("arch", ["vit_b_32", "vit_l_16", "vit_l_32"])
def test_big_models_have_torchvisions_keys_and_shapes(arch):
    with torch.device("meta"):
        ours = build_model(arch)
        theirs = getattr(torchvision.models, arch)()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("arch", [name for name in list_models() if name.startswith("vit_")])
def test_every_named_configuration_has_torchvisions_keys_and_shapes(arch):
    # At 32 px, a multiple of every patch; on the meta device, so even ViT-L/2 costs nothing.
    with torch.device("meta"):
        ours = build_model(arch, num_classes=10, image_size=32)
        theirs = torchvision_vit(arch, 32, num_classes=10)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]


@pytest.mark.parametrize(
    ("arch", "image_size"),
    [("vit_b_16", 224), ("vit_ti_4", 32), ("vit_s_8", 16)],
)
def test_state_dicts_interchange_and_logits_agree_with_torchvision(arch, image_size):
    torch.manual_seed(0)
    theirs = torchvision_vit(arch, image_size, num_classes=7)
    nn.init.normal_(theirs.heads.head.weight, std=0.02)  # the zero-initialised head would make every logit 0
    ours = build_model(arch, num_classes=7, image_size=image_size)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1 if image_size > 64 else 2, 3, image_size, image_size)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), atol=1e-5, rtol=0)

    fresh = build_model(arch, num_classes=7, image_size=image_size)
    nn.init.normal_(fresh.heads.head.weight, std=0.02)
    back = torchvision_vit(arch, image_size, num_classes=7)
    back.load_state_dict(fresh.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), fresh.eval()(x), atol=1e-5, rtol=0)
        if image_size <= 64:  # training mode: nn.MultiheadAttention's unfused path (dropout 0, so deterministic)
            torch.testing.assert_close(back.train()(x), fresh.train()(x), atol=1e-5, rtol=0)


def test_initialisation_is_torchvisions_draw_for_draw():
    torch.manual_seed(3)
    ours = build_model("vit_ti_4", num_classes=10, image_size=32)
    torch.manual_seed(3)
    theirs = torchvision_vit("vit_ti_4", 32, num_classes=10)
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(mine[k], reference[k]) for k in reference)
    assert float(mine["heads.head.weight"].abs().sum()) == 0 and float(mine["class_token"].abs().sum()) == 0
    assert float(mine["conv_proj.weight"].std()) == pytest.approx((1 / (3 * 4 * 4)) ** 0.5, rel=0.2)


def test_greyscale_changes_only_the_patch_projection():
    ours = build_model("vit-ti/4", num_classes=10, in_channels=1, image_size=32)
    tv = torchvision_vit("vit_ti_4", 32, num_classes=10)
    tv.conv_proj = nn.Conv2d(1, 192, kernel_size=4, stride=4)
    nn.init.normal_(ours.heads.head.weight, std=0.02)
    tv.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), tv.eval()(x), atol=1e-5, rtol=0)
    assert ours.forward_features(x).shape == (3, 192)


def test_forward_backward_reaches_every_parameter():
    model = build_model("vit-ti/4", num_classes=5, image_size=16)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # a zero head passes no gradient back
    model(torch.randn(2, 3, 16, 16)).logsumexp(1).sum().backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.parameters()
    )


def test_an_image_of_another_size_is_refused_by_name():
    model = build_model("vit-ti/4", num_classes=5, image_size=32)
    with pytest.raises(ValueError, match=r"takes 32x32 px images, got \(64, 64\)"):
        model(torch.randn(1, 3, 64, 64))


def test_resize_pos_embedding_moves_weights_to_another_image_size():
    torch.manual_seed(0)
    small = build_model("vit-ti/4", num_classes=10, image_size=32)
    state = small.state_dict()
    before = state["encoder.pos_embedding"].clone()
    resized = resize_pos_embedding(state, image_size=64, patch_size=4)
    assert torch.equal(state["encoder.pos_embedding"], before)  # the input is not modified
    assert resized["encoder.pos_embedding"].shape == (1, 16 * 16 + 1, 192)
    big = build_model("vit-ti/4", num_classes=10, image_size=64)
    big.load_state_dict(resized, strict=True)
    reference = interpolate_embeddings(64, 4, {k: v.clone() for k, v in state.items()})
    assert torch.equal(resized["encoder.pos_embedding"], reference["encoder.pos_embedding"])
    assert torch.equal(resized["encoder.pos_embedding"][:, 0], before[:, 0])  # the class token's is kept
    assert all(torch.equal(resized[k], state[k]) for k in state if k != "encoder.pos_embedding")


def test_drop_path_drops_branches_in_training_only_and_keeps_the_keys():
    torch.manual_seed(0)
    plain = build_model("vit-ti/4", num_classes=5, image_size=16)
    model = build_model("vit-ti/4", num_classes=5, image_size=16, drop_path=0.5)
    assert list(model.state_dict()) == list(plain.state_dict())
    rates = [getattr(b.drop_path, "p", 0.0) for b in model.encoder.layers]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    assert isinstance(model.encoder.layers[0].drop_path, nn.Identity)
    assert isinstance(model.encoder.layers[-1].drop_path, torchvision.ops.StochasticDepth)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model.forward_features(x), model.forward_features(x))
        model.eval()
        assert torch.equal(model.forward_features(x), model.forward_features(x))
        plain.load_state_dict(model.state_dict(), strict=True)
        torch.testing.assert_close(plain.eval().forward_features(x), model.forward_features(x), atol=0, rtol=0)


def test_vit_class_refuses_a_patch_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match="image_size 30 must be a positive multiple of patch_size 16"):
        VisionTransformer(30, 16, 1, 1, 8, 8)
    with pytest.raises(ValueError, match="hidden_dim 10 must be divisible by num_heads 3"):
        VisionTransformer(32, 16, 1, 3, 10, 8)


@pytest.mark.parametrize("name", ["vit-s/16", "vit_s_16", "ViT-S/16", "vit-s16", " VIT_S_16 ", "vit-small/16"])
def test_vit_spellings(name):
    assert canonical_arch(name) == "vit_s_16"


def test_names_for_people_and_folders():
    assert [display_name(a) for a in ("resnet34", "vit_s_16", "vit-ti/4", "vit_l_32")] == [
        "ResNet-34", "ViT-S/16", "ViT-Ti/4", "ViT-L/32",
    ]  # fmt: skip
    assert [run_name(a) for a in ("34", "vit_s_16", "vit-ti/4")] == ["r34", "vit-s16", "vit-ti4"]
    assert family_of("vit-b/16") == "vit" and family_of(50) == "resnet"
    assert depth_of("resnet-101") == 101
    with pytest.raises(ConfigError, match="ViT-S/16 is a Vision Transformer"):
        depth_of("vit-s/16")


def test_registry_lists_resnets_then_every_vit():
    names = list_models()
    assert names[:5] == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert names[5:] == [f"vit_{s}_{p}" for s in ("ti", "s", "b", "l") for p in (2, 4, 8, 16, 32)]
    assert all(canonical_arch(n) == n for n in names)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"arch": "vit-s/7"}, r"unknown architecture 'vit-s/7': choose 18, 34, 50, 101, 152 or vit-\{ti,s,b,l\}"),
        ({"arch": "vit-xl/16"}, "unknown architecture"),
        ({"arch": "vit-s/16", "small_input": True}, "small-input stem is a ResNet option; ViTs take a smaller patch"),
        ({"arch": "vit-s/16", "image_size": 100}, "100 px does not fit ViT-S/16.*patch size 16: use 96 or 112 px"),
        ({"arch": "vit-s/16", "image_size": 28}, "use 16 or 32 px, or a smaller patch such as vit-s/4"),
        ({"arch": "vit-s/16", "drop_path": 1.0}, r"drop_path must be at least 0 and below 1 \(e.g. 0.1\), got 1.0"),
        ({"arch": 18, "drop_path": -0.1}, "drop_path must be at least 0 and below 1"),
        ({"arch": "vit-s/16", "in_channels": 4}, r"1 \(greyscale\) or 3"),
    ],
)
def test_bad_vit_arguments(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model(**kwargs)


def test_image_size_check_for_vits_ignores_the_resnet_stem():
    check_image_size(32, True, "vit-s/4")  # small_input is a ResNet notion
    check_image_size(224, False, "vit_b_16")
    with pytest.raises(ConfigError, match="0 px does not fit ViT-B/16"):
        check_image_size(0, False, "vit_b_16")
