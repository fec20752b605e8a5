"""python -m fastcifar.export and fastcifar.export: a trained run's network, normalisation
inside, as ONNX (checked in onnxruntime) or TorchScript, agreeing with PyTorch on the run's test
images; a model that cannot be exported, a missing extra or a bad format is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcifar
from fastcifar.errors import ConfigError, MissingBackendError
from fastcifar.export import main as export_main
from fastcifar.runs import export as exporting
from tests.cifar_files import synthetic_cifar
from tests.runs import TWO_EPOCHS, finished_run

DATA = synthetic_cifar(64, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return finished_run(tmp_path_factory, "export", [*TWO_EPOCHS, "--ema", "0.5"], DATA)


def test_onnx_agrees_with_pytorch_in_onnxruntime(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "net.onnx"
    check = fastcifar.export(trained, format="onnx", out=out, data=DATA)
    assert check.images == 32 and check.top1_agreement >= 0.999
    assert check.max_probability_difference < 1e-3 and check.runtime.startswith("onnxruntime")
    recorded = json.loads((tmp_path / "net.onnx.check.json").read_text())
    assert recorded["top1_agreement"] == check.top1_agreement
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is dynamic; probabilities sum to 1
        pixels = DATA.test.images[:batch]
        probabilities = session.run(None, {"pixels": pixels})[0]
        assert probabilities.shape == (batch, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The EMA run's model.pt holds the average: the exported file is those weights.
    saved = fastcifar.load_run(trained)
    expected = saved.predict_proba(DATA.test.images[:5]).numpy()
    np.testing.assert_allclose(session.run(None, {"pixels": DATA.test.images[:5]})[0], expected,
                               atol=1e-4)  # fmt: skip


def test_torchscript_is_checked_by_loading_it_back(trained, tmp_path):
    check = fastcifar.export(trained, format="torchscript", out=tmp_path / "net.pt", data=DATA)
    assert check.top1_agreement == 1.0 and check.max_probability_difference < 1e-5
    loaded = torch.jit.load(str(tmp_path / "net.pt"))
    assert loaded(torch.from_numpy(DATA.test.images[:3])).shape == (3, 10)


def test_out_replaces_an_earlier_export_and_nothing_else(trained, tmp_path, capsys, monkeypatch):
    earlier = tmp_path / "net.pt"
    fastcifar.export(trained, format="torchscript", out=earlier, data=DATA)
    fastcifar.export(trained, format="torchscript", out=earlier, data=DATA)  # its check beside it

    def files():
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}

    before = files()

    def stopped(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:  # stopped while it is checked: nothing changes
        patched.setattr(exporting, "_compare", stopped)
        with pytest.raises(KeyboardInterrupt):
            fastcifar.export(trained, format="torchscript", out=earlier, data=DATA)
    assert files() == before  # not even rewritten alike
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    for out, message in [(mine, "exists and is no export of fastcifar (no notes.txt.check.json"),
                         (tmp_path, "is a folder: --out names the file to write"),
                         (mine / "net.pt", f"--out {mine / 'net.pt'}: {mine} is a file, not a")
                         ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            export_main([str(trained), "--format", "torchscript", "--out", str(out)])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and error.count("\n") == 1
    assert mine.read_text() == "mine"
    if Path("/proc").is_dir():  # a folder no file can be made in: the error names out, not ours
        for out in ("/proc/net.pt", "/proc/fastcifar/net.pt"):  # no file, no folder
            with pytest.raises(ConfigError, match=rf"^out {out}: cannot write it \("):
                fastcifar.export(trained, format="torchscript", out=out, data=DATA)


def test_a_missing_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingBackendError, match=r"pip install -e '\.\[export\]'"):
        exporting.import_onnx()


def test_a_bad_format_and_a_folder_that_is_no_run_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_main([str(tmp_path), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


class SmallNet(torch.nn.Module):
    """A model of one's own that exports: conv, pool, linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(images).relu().mean(dim=(2, 3)))


class BranchyNet(SmallNet):
    """One that does not: its path depends on the values of its input."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().forward(images)
        if logits.sum() > 0:
            return logits
        return -logits


def test_a_model_of_ones_own_exports_or_is_refused_in_one_line(tmp_path):
    pytest.importorskip("onnxruntime")
    settings = dict(data=DATA, epochs=1, batch_size=16, train_subset=48, lr_max=0.05,
                    plots=False, device="cpu")  # fmt: skip
    fastcifar.fit(model=SmallNet, out=str(tmp_path / "small"), **settings)
    check = fastcifar.export(tmp_path / "small", format="onnx", model=SmallNet, data=DATA,
                             out=tmp_path / "small.onnx")  # fmt: skip
    assert check.top1_agreement >= 0.999 and check.max_probability_difference < 1e-4
    fastcifar.fit(model=BranchyNet, out=str(tmp_path / "branchy"), **settings)
    with pytest.raises(fastcifar.errors.UserError, match="this model cannot be exported to ONNX"):
        fastcifar.export(tmp_path / "branchy", format="onnx", model=BranchyNet, data=DATA,
                         out=tmp_path / "branchy.onnx")  # fmt: skip
    assert not (tmp_path / "branchy.onnx").exists()
