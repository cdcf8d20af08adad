"""routerweb under cProfile, served with the production uvicorn arguments, profiling only between two signals.

`python -m bench.profiled_server --output FILE <uvicorn arguments>`: SIGUSR1 starts profiling the event-loop
thread (where the per-request work runs), SIGUSR2 stops it and writes the pstats dump to FILE, so that
start-up and warm-up stay out of the profile. Used by `python -m bench.profile_gateway --profiler
cprofile` (through bench.harness.routerweb_command_through); needs the same environment as
`uvicorn routerweb.asgi:application`.
"""

from __future__ import annotations

import argparse
import cProfile
import signal
from pathlib import Path

import uvicorn.main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="where SIGUSR2 writes the pstats dump")
    parser.add_argument("uvicorn_args", nargs=argparse.REMAINDER, help="uvicorn's arguments, the application first")
    args = parser.parse_args(argv)
    profiler = cProfile.Profile()

    def start(*_: object) -> None:
        profiler.enable()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(args.output)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    uvicorn.main.main(args.uvicorn_args, prog_name="uvicorn")


if __name__ == "__main__":
    main()
