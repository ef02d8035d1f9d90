"""gptrl.training.cliargs: a dataclass's comments are its --help, its defaults and types the options'."""

import argparse
from dataclasses import dataclass

import pytest

from gptrl.training.cliargs import add_arguments, field_help, from_namespace


@dataclass
class Settings:
    steps: int = 10  # how many steps
    rate: float = 0.5  # the rate: with a colon
    name: str = "x"
    fast: bool = False  # go fast


def test_comments_become_help_and_options_parse_back():
    assert field_help(Settings) == ["how many steps", "the rate: with a colon", "", "go fast"]
    p = argparse.ArgumentParser()
    add_arguments(p, Settings, skip=("name",))
    assert "how many steps (default 10)" in p.format_help() and "--name" not in p.format_help()
    s = from_namespace(Settings, p.parse_args(["--steps", "3", "--fast", "yes"]), name="y")
    assert s == Settings(steps=3, rate=0.5, name="y", fast=True)
    with pytest.raises(SystemExit):
        p.parse_args(["--fast", "maybe"])


@pytest.mark.parametrize("module", ["ppo", "baselines"])
def test_the_training_scripts_help_is_their_args_comments(module, capsys):
    import importlib

    script = importlib.import_module(f"gptrl.training.{module}")
    with pytest.raises(SystemExit):
        script.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for help_text in field_help(script.Args):
        assert help_text and " ".join(help_text.split()) in text
