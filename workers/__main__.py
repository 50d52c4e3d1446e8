"""`python -m workers` / `lss-workers`: run N worker processes under a supervisor."""

from __future__ import annotations

import argparse
import sys

from protocol import config
from protocol.lifetime import die_with_parent
from protocol.logs import setup_logging
from workers.settings import add_worker_flags, settings_from
from workers.supervisor import Supervisor


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="lss-workers", description="Run LSS worker processes.")
    config.add_flags(parser, ["workers"])
    add_worker_flags(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    settings = settings_from(args)
    setup_logging(settings.state_dir, "supervisor", settings.log_level)
    supervisor = Supervisor(settings, args.workers)
    supervisor.install_signal_handlers()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
