"""The model matches the seed's table: every row's output shape and parameter count."""

from __future__ import annotations

import torch

from fastcifar.model import ResNet9, parameter_count
from fastcifar.summary import format_table, layer_table, main

# (layer, output shape, parameters): conv weights are 3*3*in*out, BN has 2 per channel.
SEED_TABLE = [
    ("PrepLayer", (64, 32, 32), 3 * 3 * 3 * 64 + 2 * 64),
    ("Layer1: X", (128, 16, 16), 3 * 3 * 64 * 128 + 2 * 128),
    ("Layer1: R1", (128, 16, 16), 2 * (3 * 3 * 128 * 128 + 2 * 128)),
    ("Layer1: X + R1", (128, 16, 16), 0),
    ("Layer2", (256, 8, 8), 3 * 3 * 128 * 256 + 2 * 256),
    ("Layer3: X", (512, 4, 4), 3 * 3 * 256 * 512 + 2 * 512),
    ("Layer3: R2", (512, 4, 4), 2 * (3 * 3 * 512 * 512 + 2 * 512)),
    ("Layer3: X + R2", (512, 4, 4), 0),
    ("MaxPool(4)", (512, 1, 1), 0),
    ("FC", (10,), 512 * 10 + 10),
]


def test_every_layer_matches_the_seed_table():
    assert layer_table(ResNet9()) == SEED_TABLE


def test_total_parameters_with_fc_bias():
    assert parameter_count(ResNet9()) == 6_573_130


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
    assert format_table(SEED_TABLE, 6_573_130).splitlines()[0].startswith("Layer")
