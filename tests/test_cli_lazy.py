"""The CLI's optional subcommands: imported only when run, naming the extra otherwise."""

from __future__ import annotations

from typer.testing import CliRunner

from promptsieve import cli


def test_optional_subcommands_are_listed_without_importing_them() -> None:
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for name in cli.LAZY_COMMANDS:
        assert name in result.output


def test_a_missing_extra_is_named_not_a_traceback() -> None:
    cli._add_lazy("needs-extra", "promptsieve_not_installed.module:main", "nothing", "test only")
    result = CliRunner().invoke(cli.app, ["needs-extra", "--flag"])
    assert result.exit_code == 2
    assert "pip install 'promptsieve[nothing]'" in result.output
    assert "Traceback" not in result.output


def test_arguments_reach_the_subcommand() -> None:
    result = CliRunner().invoke(cli.app, ["demo", "--ratio", "2"])
    assert result.exit_code != 0 and "ratio must be in (0, 1]" in result.output


def test_a_demo_setting_no_screening_can_pass_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(cli.app, ["demo", "--tau", "0.95"])
    assert result.exit_code == 2 and "it needs at least 62" in result.output
    assert "Traceback" not in result.output
