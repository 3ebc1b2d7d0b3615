import shlex
from pathlib import Path

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
