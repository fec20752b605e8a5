"""The model matches the seed's table: every row's output shape and parameter count, and the
receptive field and jump of each row, computed by hand below and by fastcifar from the modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastcifar.engine.model import ResNet9, parameter_count
from fastcifar.errors import ConfigError
from fastcifar.records.config import TrainConfig
from fastcifar.summary import format_table, layer_table, main

# (layer, output shape, parameters, receptive field, jump): conv weights are 3*3*in*out, BN has
# 2 per channel. A 3x3 conv widens the field by 2 jumps, a 2x2 max-pool by 1 jump and doubles
# the jump; the residual sum keeps its branch's field; MaxPool(4) adds 3 jumps (of 8): 88.
SEED_TABLE = [
    ("PrepLayer", (64, 32, 32), 3 * 3 * 3 * 64 + 2 * 64, 3, 1),  # 1 + 2
    ("Layer1: X", (128, 16, 16), 3 * 3 * 64 * 128 + 2 * 128, 6, 2),  # 3 + 2, pool + 1
    ("Layer1: R1", (128, 16, 16), 2 * (3 * 3 * 128 * 128 + 2 * 128), 14, 2),  # 6 + 4 + 4
    ("Layer1: X + R1", (128, 16, 16), 0, 14, 2),
    ("Layer2", (256, 8, 8), 3 * 3 * 128 * 256 + 2 * 256, 20, 4),  # 14 + 4, pool + 2
    ("Layer3: X", (512, 4, 4), 3 * 3 * 256 * 512 + 2 * 512, 32, 8),  # 20 + 8, pool + 4
    ("Layer3: R2", (512, 4, 4), 2 * (3 * 3 * 512 * 512 + 2 * 512), 64, 8),  # 32 + 16 + 16
    ("Layer3: X + R2", (512, 4, 4), 0, 64, 8),
    ("MaxPool(4)", (512, 1, 1), 0, 88, 32),  # 64 + 3 * 8
    ("FC", (10,), 512 * 10 + 10, 88, 32),
]


def test_every_layer_matches_the_seed_table():
    assert layer_table(ResNet9()) == SEED_TABLE


def test_receptive_fields_of_a_model_of_ones_own():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2),  # 5
        nn.ReLU(),
        nn.MaxPool2d(2),  # 5 + 1 = 6, jump 2
        nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 6 + 2 * 2 = 10, jump 4, 8 x 8
        nn.AdaptiveAvgPool2d(1),  # the whole 8 x 8 map: 10 + 7 * 4 = 38
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    rows = {label: (shape, field, jump) for label, shape, _, field, jump in layer_table(net)}
    assert rows["0"] == ((8, 32, 32), 5, 1)
    assert rows["2"] == ((8, 16, 16), 6, 2)
    assert rows["3"] == ((16, 8, 8), 10, 4)
    assert rows["4"] == ((16, 1, 1), 38, 32)
    assert rows["6"] == ((4,), 38, 32)
    softmax = next(
        line for line in format_table(layer_table(net), 0).splitlines() if "Softmax" in line
    )
    assert softmax.split()[:2] == ["Softmax", "4"]  # as many outputs as the model's classes


def test_a_model_fx_cannot_trace_is_one_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    with pytest.raises(ConfigError, match=r"torch\.fx can trace"):
        layer_table(Branchy())


def test_total_parameters_with_fc_bias():
    assert parameter_count(ResNet9()) == 6_573_130


@pytest.mark.parametrize("width", [1, 8, 64])
def test_a_width_scales_every_layer_and_keeps_the_fields(width):
    """Each row's channels are width/64 of the seed's, and each weight's count (width/64)^2;
    fields and jumps do not move."""

    def parameters(channels_in: int, channels_out: int) -> int:  # conv 3x3 + BN
        return 3 * 3 * channels_in * channels_out + 2 * channels_out

    w = width
    expected = [
        (label, (shape[0] * w // 64, *shape[1:]), field, jump)
        for label, shape, _, field, jump in SEED_TABLE[:-1]
    ] + [("FC", (10,), 88, 32)]
    rows = layer_table(ResNet9(width=w))
    assert [(label, shape, field, jump) for label, shape, _, field, jump in rows] == expected
    assert [row[2] for row in rows] == [
        parameters(3, w),
        parameters(w, 2 * w),
        2 * parameters(2 * w, 2 * w),
        0,
        parameters(2 * w, 4 * w),
        parameters(4 * w, 8 * w),
        2 * parameters(8 * w, 8 * w),
        0,
        0,
        8 * w * 10 + 10,
    ]
    assert ResNet9(width=w)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_a_run_recorded_before_the_width_setting_reads_back_at_64():
    from fastcifar.records.config_record import ConfigRecord, RunKind

    recorded = TrainConfig().to_dict()
    del recorded["width"]  # fastcifar 0.2's config.json
    assert ConfigRecord(RunKind.RUN, recorded).train_config.width == 64
    with pytest.raises(ConfigError, match="width must be at most 512, got 1,024"):
        TrainConfig(width=1024)


def test_the_summary_command_describes_a_width_and_refuses_what_cannot_be_built(capsys):
    main(["--width", "8"])
    printed = capsys.readouterr().out
    assert "Total                                  103,954" in printed  # 1602 w^2 + 177 w + 10
    for argv, error in [
        (["--width", "0"], "argument --width: must be a positive integer, got 0"),
        (["--width", "513"], "argument --width: must be at most 512, got 513"),
        (["run", "--width", "8"], "a run folder's table is its own model's"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2 and error in capsys.readouterr().err


def test_resnet9_defaults_to_the_recipes_logit_scale():
    """fit(model=ResNet9()) must train the recipe, not a run with 8x larger logits."""
    assert ResNet9().logit_scale == TrainConfig().logit_scale == 0.125


def test_weights_that_do_not_fit_are_named_key_by_key_in_one_line():
    from fastcifar.engine.model import load_weights

    model = ResNet9()
    state = dict(ResNet9(num_classes=20).state_dict())
    state["prep.0.weight"] = torch.zeros(3, 3)
    del state["layer2.2.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    line = load_weights(model, state)
    assert "\n" not in line and "Error(s)" not in line
    assert "missing layer2.2.running_mean" in line and "unexpected extra.weight" in line
    assert "prep.0.weight (3, 3) for (64, 3, 3, 3)" in line and "fc.weight (20, 512)" in line
    assert load_weights(model, ResNet9().state_dict()) is None


def test_forward_returns_scaled_logits_and_predict_proba_sums_to_one():
    torch.manual_seed(0)
    plain, scaled = ResNet9(logit_scale=1.0).eval(), ResNet9(logit_scale=0.125).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), plain(x) * 0.125)
    probabilities = scaled.predict_proba(x)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(4))
    assert (probabilities >= 0).all()


def test_residual_blocks_add_their_input():
    model = ResNet9().eval()
    for block in (model.layer1[1], model.layer3[1]):
        for parameter in block.block.parameters():
            torch.nn.init.zeros_(parameter)  # the block's output is then ReLU(BN(0)) = 0
        x = torch.randn(2, block.block[0][0].in_channels, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(block(x), x)


def test_summary_command_prints_the_table(capsys):
    main([])
    printed = capsys.readouterr().out
    assert "Layer3: R2" in printed and "4,720,640" in printed and "6,573,130" in printed
    assert format_table(SEED_TABLE, 6_573_130).splitlines()[0].split() == [
        "Layer",
        "Output",
        "shape",
        "Params",
        "Field",
        "Jump",
    ]
    row = next(line for line in printed.splitlines() if line.startswith("MaxPool(4)"))
    assert row.split()[-2:] == ["88", "32"]
    lines = printed.splitlines()
    scale = next(i for i, line in enumerate(lines) if line.startswith("Logits x 0.125"))
    assert lines[scale + 1].startswith("Softmax")  # the softmax takes the scaled logits


def test_functional_convolutions_and_pooling_count_like_their_layers():
    import torch.nn.functional as F  # noqa: N812

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8, 3, 5, 5))

        def forward(self, x):
            x = F.max_pool2d(F.relu(F.conv2d(x, self.weight, padding=2)), 2)
            return F.adaptive_avg_pool2d(x, 1)

    layers = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                           nn.AdaptiveAvgPool2d(1))  # fmt: skip
    (ours,) = layer_table(nn.Sequential(Functional()))
    assert ours[3:] == layer_table(layers)[-1][3:] == (36, 32)  # 5, 6 (jump 2), 6 + 15 * 2


def test_an_op_that_resizes_by_unknown_rules_is_refused_not_guessed():
    class Upsample(nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2)

    with pytest.raises(ConfigError, match="cannot follow interpolate"):
        layer_table(nn.Sequential(nn.Conv2d(3, 3, 3), Upsample()))


class Counted(nn.Module):
    """Records the arguments its constructor got."""

    def __init__(self, *given: object, **named: object) -> None:
        super().__init__()
        self.given, self.named = given, named
        self.fc = nn.Linear(3, 2)


class ByName(Counted):
    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__(width=width, num_classes=num_classes)


class OnePositional(Counted):
    def __init__(self, classes: int, width: int = 16) -> None:
        super().__init__(classes, width)


class NoInit(nn.Module):
    """Inherits nn.Module's (*args, **kwargs), which takes no argument."""


class DepthFirst(Counted):
    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__(depth, num_classes)


class TwoNeeded(Counted):
    def __init__(self, depth: int, dropout: float) -> None:
        super().__init__(depth, dropout)


def test_a_model_class_gets_the_class_count_by_name_else_as_its_one_argument():
    from fastcifar.engine.model import model_factory

    assert model_factory(ByName, 4, 1.0)().named == {"width": 16, "num_classes": 4}
    assert model_factory(OnePositional, 4, 1.0)().given == (4, 16)
    assert isinstance(model_factory(NoInit, 4, 1.0)(), NoInit)
    assert model_factory(lambda: ByName(8), 4, 1.0)().named == {"width": 8, "num_classes": 10}

    def wrapped(*given, **named):  # a decorator without functools.wraps: the count through *args
        return OnePositional(*given, **named)

    assert model_factory(wrapped, 4, 1.0)().given == (4, 16)


@pytest.mark.parametrize("model, needs", [(DepthFirst, "depth"), (TwoNeeded, "dropout"), (3, None)])
def test_a_model_fit_cannot_build_is_one_line_before_a_run(model, needs):
    """DepthFirst(4) would have built a network of depth 4 with 10 classes, in silence."""
    from fastcifar.engine.model import check_model

    with pytest.raises(ConfigError) as refused:
        check_model(model)
    message = str(refused.value)
    if needs is None:
        assert message.startswith("model must be an nn.Module, or a class or function returning")
        assert message.endswith("got int")
    else:
        assert message.startswith(f"model {model.__name__} needs {needs}, which fastcifar")
        assert message.endswith(f"e.g. model=lambda: {model.__name__}(...)")
