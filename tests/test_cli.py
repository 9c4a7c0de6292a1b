import subprocess
import sys

from fastbp.cli import main


def test_train_defaults_reach_97_percent(capsys):
    assert main(["train", "--quiet"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 97.0
    assert "samples/s" in out


def test_train_options_and_per_epoch_lines(capsys):
    assert main(["train", "--hidden", "32", "--activation", "tanh", "--epochs", "2", "--batch-size", "8",
                 "--lr", "0.1", "--seed", "3", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "[64, 32, 10]" in out


def test_bad_option_gives_a_clear_error(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "epochs must be ≥ 1" in capsys.readouterr().err


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "fastbp.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
