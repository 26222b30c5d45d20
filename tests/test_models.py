"""The from-scratch ResNets against torchvision: keys, shapes, logits and published parameter counts."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from resnet_cli.errors import ConfigError
from resnet_cli.models import (
    BasicBlock,
    Bottleneck,
    ResidualBlock34,
    ResidualLearningBlock,
    build_model,
    canonical_arch,
    list_models,
)

# torchvision's published figures at 1000 classes (torchvision.models documentation).
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def test_registry_lists_every_depth_first():
    assert list_models()[: len(PUBLISHED_PARAMS)] == list(PUBLISHED_PARAMS)


@pytest.mark.parametrize("arch", list(PUBLISHED_PARAMS))
def test_parameter_count_matches_published(arch):
    with torch.device("meta"):
        model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[arch]


@pytest.mark.parametrize("arch", list(PUBLISHED_PARAMS))
def test_state_dicts_interchange_with_torchvision(arch):
    torch.manual_seed(0)
    ours = build_model(arch, num_classes=7)
    theirs = getattr(torchvision.models, arch)(num_classes=7)
    # Both directions, strict: identical keys and shapes.
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)

    fresh = build_model(arch, num_classes=7)
    theirs2 = getattr(torchvision.models, arch)(num_classes=7)
    theirs2.load_state_dict(fresh.state_dict(), strict=True)
    fresh.eval()
    theirs2.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), theirs2(x), atol=1e-5, rtol=0)


def test_small_input_stem_keeps_torchvision_keys():
    ours = build_model(18, num_classes=10, in_channels=1, small_input=True)
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    tv.maxpool = nn.Identity()
    tv.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    tv.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("arch", "in_channels", "small_input", "size"),
    [(18, 3, False, 32), (34, 1, False, 48), (50, 1, True, 8), (101, 3, True, 16), (152, 3, True, 8)],
)
def test_forward_backward_small_sizes(arch, in_channels, small_input, size):
    model = build_model(arch, num_classes=5, in_channels=in_channels, small_input=small_input)
    x = torch.randn(2, in_channels, size, size)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.conv1.weight.grad.abs().sum() > 0


def test_blocks_and_aliases():
    assert ResidualBlock34 is BasicBlock and ResidualLearningBlock is Bottleneck
    assert BasicBlock.expansion == 1 and Bottleneck.expansion == 4
    model = build_model(50)
    block = model.layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1)  # ResNet v1.5
    assert isinstance(block.downsample[0], nn.Conv2d) and block.downsample[0].stride == (2, 2)
    assert model.layer1[1].downsample is None


def test_aliases_are_documented_as_the_original_names():
    assert "ResidualBlock34" in BasicBlock.__doc__ and "original project" in BasicBlock.__doc__
    assert "ResidualLearningBlock" in Bottleneck.__doc__ and "original project" in Bottleneck.__doc__


def test_no_leftovers_beside_torchvisions_grammar():
    import resnet_cli.models.resnet as module

    # Builders construct ResNet directly (no pass-through helper), and blocks hold only modules they use.
    assert not hasattr(module, "_resnet")
    model = build_model(50)
    assert not any(hasattr(m, "stride") for m in model.modules() if isinstance(m, BasicBlock | Bottleneck))
    with pytest.raises(TypeError):
        module.resnet18(10)  # builders are keyword-only, as torchvision's


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_norm_layer_is_injected_everywhere_as_in_torchvision(arch):
    from resnet_cli.models import resnet as module

    def group_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(32, channels)

    torch.manual_seed(0)
    ours = getattr(module, arch)(num_classes=5, norm_layer=group_norm, zero_init_residual=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())  # stem, blocks and shortcuts
    last = "bn3" if arch == "resnet50" else "bn2"
    assert float(getattr(ours.layer1[0], last).weight.detach().abs().sum()) == 0  # zero-init reaches GroupNorm too
    theirs = getattr(torchvision.models, arch)(num_classes=5, norm_layer=group_norm)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), atol=1e-5, rtol=0)


def test_zero_init_residual():
    model = build_model(34, zero_init_residual=True)
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in model.modules() if isinstance(b, BasicBlock))
    model = build_model(50, zero_init_residual=True)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in model.modules() if isinstance(b, Bottleneck))
    assert float(build_model(34).layer1[0].bn2.weight.detach().sum()) > 0


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_drop_path_drops_residual_branches_in_training_only_and_keeps_the_keys(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5, drop_path=0.5)
    assert list(model.state_dict()) == list(getattr(torchvision.models, arch)(num_classes=5).state_dict())
    blocks = [b for b in model.modules() if isinstance(b, BasicBlock | Bottleneck)]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert isinstance(blocks[0].drop_path, nn.Identity) and rates[-1] == pytest.approx(0.5)
    assert rates == sorted(rates) and rates[1] == pytest.approx(0.5 / (len(blocks) - 1))
    assert isinstance(blocks[-1].drop_path, torchvision.ops.StochasticDepth) and blocks[-1].drop_path.mode == "row"
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))  # BatchNorm alone would give the same batch the same logits
        model.eval()
        assert torch.equal(model(x), model(x))
    assert all(isinstance(b.drop_path, nn.Identity) for b in build_model(arch).modules() if hasattr(b, "drop_path"))


@pytest.mark.parametrize("name", [34, "34", "resnet34", "ResNet-34", " RESNET34 "])
def test_arch_spellings(name):
    assert canonical_arch(name) == "resnet34"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"arch": 35}, "18, 34, 50, 101, 152"),
        ({"arch": "vit"}, "unknown architecture"),
        ({"arch": 34, "num_classes": -3}, "at least 1"),
        ({"arch": 34, "in_channels": 2}, "1 (greyscale) or 3"),
        ({"arch": 34, "drop_path": 1.5}, "drop_path must be at least 0 and below 1 (e.g. 0.1), got 1.5"),
    ],
)
def test_bad_build_arguments(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build_model(**kwargs)
