"""The first-conv measurement (benchmarks/first_conv.py): its padded variants compute the same
function, it reports every variant beside the whole step (on a GPU too: tests/test_cuda.py), and
a device it cannot use is one line."""

from __future__ import annotations

import pytest
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


def test_a_device_it_cannot_use_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--device", "tpu", "--batch-size", "4", "--repeats", "1"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("unknown device 'tpu': fastcifar runs on cpu, cuda or cuda:N")


def test_the_cpu_is_measured_when_asked_and_the_table_says_so(capsys, tmp_path):
    out = tmp_path / "nested" / "first-conv-x.md"  # its folder is made
    main(["--device", "cpu", "--batch-size", "4", "--repeats", "1", "--out", str(out)])
    table = capsys.readouterr().out
    assert table.startswith("CPU ") and "batch 4, channels_last, eager" in table
    assert out.read_text() == table
