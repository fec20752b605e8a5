"""The first-conv measurement (benchmarks/first_conv.py): its padded variants compute the same
function, and it reports every variant beside the whole step."""

from __future__ import annotations

import torch

from benchmarks.first_conv import main, measure, pad_channels, padded_prep
from fastcifar.engine.model import ResNet9


def test_a_padded_first_conv_computes_the_same_function():
    torch.manual_seed(0)
    prep = ResNet9().prep.train()
    images = torch.randn(6, 3, 32, 32)
    for channels in (4, 8):
        wider = padded_prep(prep, channels).train()
        assert wider[0].weight.shape == (64, channels, 3, 3)
        assert torch.equal(wider[0].weight[:, 3:], torch.zeros(64, channels - 3, 3, 3))
        torch.testing.assert_close(wider(pad_channels(images, channels)), prep(images))


def test_the_measurement_times_every_variant_and_the_whole_step(capsys, tmp_path):
    from benchmarks import publish

    rows = measure(batch_size=4, repeats=1)
    assert len(rows) == 5 and all(row.seconds > 0 for row in rows)
    assert rows[1].variant == "first conv, fp32" and rows[-1].variant.startswith("whole step")
    assert "Not measured yet" in publish.first_conv_section(tmp_path)
    main(["--batch-size", "4", "--repeats", "1", "--out", str(tmp_path / "first-conv-x.md")])
    table = capsys.readouterr().out
    assert "| first conv, fp32 |" in table and "batch 4" in table
    assert table.count("\n| ") == 6  # the header and five rows
    shown = publish.first_conv_section(tmp_path)
    assert table in shown and "Not measured yet" not in shown
