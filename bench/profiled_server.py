"""routerweb under cProfile, with the production uvicorn options, profiling only between two signals.

`python -m bench.profiled_server --port N --output FILE`: SIGUSR1 starts profiling the event-loop
thread (where the per-request work runs), SIGUSR2 stops it and writes the pstats dump to FILE, so that
start-up and warm-up stay out of the profile. Used by `python -m bench.profile_gateway --profiler
cprofile`; needs the same environment as `uvicorn routerweb.asgi:application`.
"""

from __future__ import annotations

import argparse
import cProfile
import signal
from pathlib import Path

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True, help="where SIGUSR2 writes the pstats dump")
    args = parser.parse_args(argv)
    profiler = cProfile.Profile()

    def start(*_: object) -> None:
        profiler.enable()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(args.output)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    uvicorn.run(
        "routerweb.asgi:application",
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        workers=1,
    )


if __name__ == "__main__":
    main()
