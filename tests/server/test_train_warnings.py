"""`seethrough train` warns before training when the data is smaller than --resolution (it would be
upscaled) or when --warmup does not end before --steps."""

from __future__ import annotations

from training_support import write_dataset

from seethrough.cli import main


def test_upscaled_data_and_a_warmup_past_the_end_are_warned_about(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", count=1, side=256)
    code = main(
        ["train", "--tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--rank", "4"]
        + ["--resolution", "512", "--warmup", "10", "--steps", "10"]
        + ["--init-lora", str(tmp_path / "missing.safetensors")]  # ends the run right after the warnings
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "warning: " in err
    assert "images of 256 px (longest side), smaller than --resolution 512: they are upscaled" in err
    assert "--warmup 10 >= --steps 10" in err


def test_matching_data_and_settings_give_no_warning(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", count=1, side=512)
    main(
        ["train", "--tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--rank", "4"]
        + ["--resolution", "512", "--warmup", "1", "--steps", "10"]
        + ["--init-lora", str(tmp_path / "missing.safetensors")]
    )
    assert "warning" not in capsys.readouterr().err
