"""Command line: ``python -m rafka_shards serve`` starts a working single-node broker with no configuration.

Runs in the supervisor process (``rafka_shards.supervisor.supervisor``), which spawns the controller process and the
shards. This module is the composition root: it alone names the children's entry points
(``controller_node.process.run_controller``, ``shard.process.run_shard``) and gives them to the supervisor, so the
process packages do not import each other. Flags are generated from ``BrokerConfig``'s fields (their docs and bounds),
so ``--help`` lists every setting; each one can also come from ``RAFKA_<NAME>`` in the environment or a JSON
``--config`` file.
Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a fatal error while serving, 2 on bad usage or a
configuration or start-up error (port in use, unusable data directory, a shard that cannot start).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from rafka_shards import __version__, event_loop
from rafka_shards.config import BrokerConfig, ConfigError, load_config, settings
from rafka_shards.security.client_security import inter_broker_security

log = logging.getLogger("rafka_shards")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rafka_shards", description="A Kafka-compatible broker.")
    parser.add_argument("--version", action="version", version=f"rafka_shards {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run a broker",
        description="Run a broker. Every flag can also be set as RAFKA_<NAME> in the environment "
        "or in a JSON file given with --config; flags win over the environment, which wins over the file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--config", type=Path, default=None, help="JSON file of settings")
    for f in settings():
        bounds = ""
        if f.metadata.get("min") is not None:
            bounds = f" [{f.metadata['min']}..{f.metadata['max']}]"
        default = f.default.value if hasattr(f.default, "value") else f.default
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata['doc']}{bounds} (default: {default})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {f.name: getattr(args, f.name) for f in settings()}
    try:
        config = load_config(flags, config_file=args.config)
        inter_broker_security(config)  # reads the TLS files of the brokers' own connections: a bad one stops here
    except ConfigError as e:
        print(f"rafka_shards: configuration error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return serve(config)


def serve(config: BrokerConfig) -> int:
    return event_loop.run(_serve(config))


async def _serve(config: BrokerConfig) -> int:
    from rafka_shards.controller_node.process import run_controller
    from rafka_shards.shard.process import run_shard
    from rafka_shards.supervisor.supervisor import ChildTargets, StartupError, Supervisor

    admin = config.admin_endpoint or "off"
    event_loop.name_process(
        f"node {config.node_id} supervisor (Kafka {config.listen_endpoint}, admin {admin}, data {config.data_dir})"
    )
    supervisor = Supervisor(config, ChildTargets(controller=run_controller, shard=run_shard))
    loop = asyncio.get_running_loop()
    event_loop.stop_on_sigterm(loop, supervisor.request_stop)
    loop.add_signal_handler(signal.SIGINT, supervisor.request_stop)
    try:
        await supervisor.start()
        await supervisor.start_shards()
        event_loop.settle_heap()
    except StartupError as e:
        if e.exit_code:
            log.error("%s", e)
        await supervisor.stop()
        return e.exit_code
    fatal = await supervisor.wait_stopped()
    log.info("shutting down")
    clean = await supervisor.stop()
    return 1 if fatal is not None or not clean else 0
