import shlex
from pathlib import Path

import pytest

from xpcnn.cli.arguments import build_parser, continue_command, parse


def test_the_continue_command_gives_again_every_flag_the_checkpoint_does_not_keep():
    args = parse(build_parser(), ["train", "--backend", "torch", "--device", "cuda:1", "--workers", "2",
                                  "--no-cuda-graphs", "--detect-anomaly", "--checkpoint-every", "7", "--lr", "0.1"])
    command = continue_command(args, Path("runs/a b"))
    assert shlex.split(command) == ["xpcnn", "train", "--out", "runs/a b", "--resume", "--backend", "torch",
                                    "--device", "cuda:1", "--checkpoint-every", "7", "--detect-anomaly"]
    # not --lr, --workers or --no-cuda-graphs: the checkpoint keeps them
    resumed = parse(build_parser(), shlex.split(command)[1:])
    assert continue_command(resumed, Path("runs/a b")) == command


def test_the_continue_command_of_a_run_with_the_defaults_is_short():
    assert continue_command(parse(build_parser(), ["train"]), Path("r")) == "xpcnn train --out r --resume"


def test_a_path_to_write_is_never_a_dash(capsys):
    """'-' would make a file or folder of that name where standard output was meant."""
    for argv in (["train", "--out", "-"], ["export", "run", "-"]):
        with pytest.raises(SystemExit) as refused:
            parse(build_parser(), argv)
        assert refused.value.code == 2
        assert "'-' (standard output) is not one" in capsys.readouterr().err
    assert parse(build_parser(), ["export", "run", "./-"]).output == Path("-")  # a file named so, asked for plainly


@pytest.mark.parametrize("command", ["train", "parity"])
def test_width_takes_what_the_presets_take(command, capsys):
    """The range was written twice here and once in presets.build."""
    from xpcnn import presets

    low, high = presets.WIDTHS
    for width in (low, high):
        assert parse(build_parser(), [command, "--width", repr(width)]).width == width
    for width in (low / 2, high * 2):
        with pytest.raises(SystemExit):
            parse(build_parser(), [command, "--width", repr(width)])
        assert "argument --width: must be in [1/64, 16]" in capsys.readouterr().err


@pytest.mark.parametrize("text, positions", [("3,7", [3, 7]), ("-1", [-1]), (" 3 , 3.body.2", [3, "3.body.2"]),
                                             ("٣", ["٣"])])  # an Arabic-Indic three is a name, no index
def test_positions_are_indices_or_names_of_layers_inside_blocks(text, positions):
    assert parse(build_parser(), ["explain", "run", "one.png", "--at", text]).at == positions
