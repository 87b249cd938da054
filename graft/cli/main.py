"""The `graft` command: run nodes, and talk to a running cluster (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import typer

from graft import __version__
from graft.cli import local
from graft.client import UNREACHABLE, Client, ClientError
from graft.config import Config, ConfigError, load_config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Graft: replicate any stateful program with Raft, without changing it.",
)
members_app = typer.Typer(no_args_is_help=True, help="List and change the cluster's members.")
leader_app = typer.Typer(no_args_is_help=True, help="Move leadership.")
app.add_typer(members_app, name="members")
app.add_typer(leader_app, name="leader")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="graft.yaml to use (default: the built-in one)."),
]
FsmOpt = Annotated[str | None, typer.Option("--fsm", help="FSM command; replaces fsm.command.")]
ClusterOpt = Annotated[
    str | None,
    typer.Option("--cluster", help="HOST:PORT of any node's api port (default: from graft.yaml)."),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for an answer.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"graft {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Graft: replicate any stateful program with Raft, without changing it."""


NOT_RUNNING_HINT = (
    "is the cluster running? Start it with 'graft up' (or 'graft start ID' on each machine), "
    "or point at a node with --cluster HOST:PORT or --config FILE"
)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"graft: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _config(
    path: Path | None,
    *,
    fsm_command: str | None = None,
    data_dir: str | None = None,
    log_level: str | None = None,
) -> Config:
    try:
        return load_config(path, fsm_command=fsm_command, data_dir=data_dir, log_level=log_level)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot read the configuration: {exc}") from None


# -- running nodes ----------------------------------------------------------------------------


@app.command()
def start(
    node_id: Annotated[str, typer.Argument(metavar="ID", help="This node's id in graft.yaml.")],
    config: ConfigOpt = None,
    fsm: FsmOpt = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Data directory; replaces data_dir.")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = None,
) -> None:
    """Run one node in the foreground until SIGTERM or SIGINT."""
    cfg = _config(config, fsm_command=fsm, data_dir=data_dir, log_level=log_level)
    try:
        cfg.peer(node_id)
    except ConfigError as exc:
        raise fail(str(exc)) from None

    code = local.run_node(cfg, node_id)
    raise typer.Exit(code)


@app.command()
def up(config: ConfigOpt = None, fsm: FsmOpt = None) -> None:
    """Run every peer of graft.yaml on this machine; Ctrl-C stops them all."""
    cfg = _config(config, fsm_command=fsm)
    raise typer.Exit(local.run_all(cfg, config, fsm))


@app.command()
def stop(
    node_id: Annotated[str, typer.Argument(metavar="ID")],
    config: ConfigOpt = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir")] = None,
) -> None:
    """Stop a node running on this machine (SIGTERM to the process holding its data dir)."""
    cfg = _config(config, data_dir=data_dir)
    try:
        cfg.peer(node_id)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    message, code = local.stop_node(cfg.data_dir_for(node_id))
    typer.echo(message, err=code != 0)
    raise typer.Exit(code)


# -- talking to a cluster -----------------------------------------------------------------------


def _client(cluster: str | None, config: Path | None, timeout: float) -> Client:
    if cluster:
        host, _, port = cluster.rpartition(":")
        if not host or not port.isdigit():
            raise fail(f"--cluster must be HOST:PORT, got {cluster!r}")
        return Client([(host, int(port))], timeout=timeout)

    cfg = _config(config)
    return Client([(p.host, p.api_port) for p in cfg.peers.values()], timeout=timeout)


def _ask(call: Callable[[], object], *, changes_state: bool = False) -> str:
    """Run one client call; an ERR reply or an unreachable cluster exits 1 with the reason.

    For a call that changes state the message also says whether it may have taken effect.
    """
    try:
        result = call()
    except ClientError as exc:
        outcome = f" (outcome: {exc.outcome.value})" if changes_state else ""
        hint = f"; {NOT_RUNNING_HINT}" if exc.code == UNREACHABLE else ""
        raise fail(f"{exc}{outcome}{hint}", 1) from None
    except OSError as exc:
        raise fail(f"cannot reach the cluster: {exc}", 1) from None
    return result if isinstance(result, str) else orjson.dumps(result).decode()


@app.command()
def apply(
    payload: Annotated[str, typer.Argument(help="The command; the FSM gets it plus a newline.")],
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 15.0,
) -> None:
    """Replicate a command and print the FSM's answer."""
    client = _client(cluster, config, timeout)
    typer.echo(_ask(lambda: client.apply(payload), changes_state=True))


@app.command()
def query(
    payload: Annotated[str, typer.Argument(help="A read-only query.")],
    stale: Annotated[
        bool, typer.Option("--stale", help="Answer from any node's state, possibly stale.")
    ] = False,
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 15.0,
) -> None:
    """A linearizable read (or, with --stale, a local one)."""
    client = _client(cluster, config, timeout)
    typer.echo(_ask(lambda: client.local(payload) if stale else client.query(payload)))


@app.command()
def snapshot(
    cluster: ClusterOpt = None, config: ConfigOpt = None, timeout: TimeoutOpt = 60.0
) -> None:
    """Take a snapshot now on the node asked, and compact its log."""
    client = _client(cluster, config, timeout)
    typer.echo(_ask(lambda: str(client.snapshot())))


@app.command()
def status(
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per member.")] = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """A table of every member: role, term, commit, applied and lag."""
    client = _client(cluster, config, timeout)
    rows = local.cluster_status(client, timeout)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
    else:
        typer.echo(local.status_table(rows))
    if all(row.get("role") == "unreachable" for row in rows):
        # A script that asks `graft status` must be able to tell "nobody answered".
        raise fail(f"no member answered; {NOT_RUNNING_HINT}", 1)


@members_app.command("list")
def members_list(cluster: ClusterOpt = None, config: ConfigOpt = None) -> None:
    """Voters and learners."""
    client = _client(cluster, config, 5.0)
    typer.echo(_ask(client.members))


@members_app.command("add")
def members_add(
    node_id: Annotated[str, typer.Argument(metavar="ID")],
    host: Annotated[str, typer.Argument()],
    p2p: Annotated[int, typer.Argument(metavar="P2P_PORT")],
    api: Annotated[int, typer.Argument(metavar="API_PORT")],
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Add a node: it catches up as a learner, then becomes a voter."""
    client = _client(cluster, config, timeout)
    typer.echo(_ask(lambda: client.add(node_id, host, p2p, api), changes_state=True))


@members_app.command("remove")
def members_remove(
    node_id: Annotated[str, typer.Argument(metavar="ID")],
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Remove a member."""
    client = _client(cluster, config, timeout)
    typer.echo(_ask(lambda: client.remove(node_id), changes_state=True))


@leader_app.command("transfer")
def leader_transfer(
    node_id: Annotated[str, typer.Argument(metavar="ID")],
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Hand leadership to another voter."""
    client = _client(cluster, config, timeout)
    typer.echo(_ask(lambda: client.transfer(node_id), changes_state=True))


@app.command()
def bench(
    cluster: ClusterOpt = None,
    config: ConfigOpt = None,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent connections.")] = 16,
    seconds: Annotated[float, typer.Option("--seconds", help="How long to load.")] = 10.0,
    payload: Annotated[str, typer.Option("--payload", help="The APPLY payload.")] = "SET k v",
) -> None:
    """Load a running cluster with APPLY and print throughput and latency."""
    client = _client(cluster, config, 5.0)
    result = local.load(client, clients=clients, seconds=seconds, payload=payload)
    typer.echo(result)


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh, fish or powershell.")],
) -> None:
    """Print a shell completion script: `eval "$(graft completion bash)"`."""
    from typer._completion_shared import get_completion_script

    try:
        script = get_completion_script(
            prog_name="graft", complete_var="_GRAFT_COMPLETE", shell=shell
        )
    except (KeyError, ValueError, RuntimeError):
        raise fail(f"unknown shell {shell!r}; use bash, zsh, fish or powershell") from None
    typer.echo(script)


def main() -> None:
    app(prog_name="graft")


if __name__ == "__main__":
    main()
