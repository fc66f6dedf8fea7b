"""Every `elastichash` subcommand answers --help, and the role commands take the options
their docs name (issue 12 item 11: they refused every option, even --help)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from elastichash.cli import ROLES, build_parser, main

Command = tuple[str, ...]


def _commands(parser: argparse.ArgumentParser, prefix: Command = ()) -> list[Command]:
    out: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((*prefix, name))
                out.extend(_commands(sub, (*prefix, name)))
    return out


COMMANDS = _commands(build_parser())


def _help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0, out.getvalue()
    return out.getvalue()


def test_the_command_tree_includes_every_role() -> None:
    assert set(ROLES) <= {c[0] for c in COMMANDS}
    assert len(COMMANDS) > len(ROLES)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_answers_help(command: tuple[str, ...]) -> None:
    text = _help(*command)
    assert text.startswith(f"usage: elastichash {' '.join(command)}")


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_help_names_its_port_its_settings_data_dir_and_exit_statuses(role: str) -> None:
    text = " ".join(_help(role).split())  # unwrapped
    assert "--port PORT" in text
    assert "--host HOST" in text
    assert "ELASTICHASH_DATA" in text
    assert "Exit status: 0" in text
    assert "3 a setting refused" in text


def test_workers_have_check_and_the_search_service_data() -> None:
    assert "--check" in _help("encoder-worker")
    assert "--check" in _help("indexer-worker")
    assert "--data DATA" in _help("search-service")


def test_a_role_refuses_an_unknown_option_with_usage_and_status_2() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(["gateway", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in err.getvalue()


def test_check_exits_1_when_no_worker_answers(unused_tcp_port: int) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["encoder-worker", "--check", "--port", str(unused_tcp_port)]) == 1
    assert "unhealthy" in out.getvalue()


def _parser_for(command: Command) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] not in ROLES], ids=" ".join)
def test_every_option_and_argument_of_a_user_command_says_what_it_is(command: Command) -> None:
    bare = [a.option_strings[-1] if a.option_strings else a.dest
            for a in _parser_for(command)._actions
            if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert bare == [], f"{' '.join(command)}: no help for {bare}"


def test_the_model_options_name_every_built_in_model() -> None:
    from elastichash.model.registry import BUILTINS

    for command in (("serve",), ("index",), ("search",), ("model", "build-default")):
        text = " ".join(_help(*command).split()).replace("- ", "-")  # unwrapped
        for name in BUILTINS:
            assert name in text, (command, name)


@pytest.mark.parametrize("command", [("serve",), *((r,) for r in sorted(ROLES))], ids=" ".join)
@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(
        command: Command, port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--port", port])
    assert exit_info.value.code == 2
    assert "a port is a number from 0 to 65535" in capsys.readouterr().err


def test_a_port_setting_out_of_range_is_refused_as_a_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pydantic

    from gateway.config import GatewaySettings

    monkeypatch.setenv("EH_GATEWAY_PORT", "99999")
    with pytest.raises(pydantic.ValidationError, match="port"):
        GatewaySettings()


def test_only_commands_that_search_offer_a_strategy() -> None:
    # `index --strategy` was accepted and did nothing.
    assert "--strategy" not in _help("index")
    for command in ("search", "serve"):
        assert "--strategy" in _help(command)
