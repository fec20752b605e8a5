"""benchmarks.reestimate_saved_run on a small folder run: the model as saved and re-estimated,
each scored, the run folder left as it was."""

from __future__ import annotations

import re

from benchmarks import reestimate_saved_run
from fastcifar.train import main as train_main
from tests.test_image_folder import SETTINGS, write_folder


def test_a_saved_run_is_scored_as_saved_and_re_estimated(tmp_path, capsys):
    root = write_folder(tmp_path / "images")
    out = tmp_path / "run"
    train_main(["--dataset", "folder", "--data-dir", str(root), *SETTINGS, "--out", str(out)])
    before = (out / "model.pt").read_bytes()
    capsys.readouterr()
    reestimate_saved_run.main([str(out), "2"])
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"as saved: \d+\.\d\d%, flip \+ translate TTA \d+\.\d\d% \(\d+ s\)", lines[0]
    )
    assert lines[1].startswith("BatchNorm statistics re-estimated over 2 batches: ")
    assert (out / "model.pt").read_bytes() == before
