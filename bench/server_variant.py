"""routerweb with its metrics or its call log line switched off, for the metrics benchmark's reference runs only.

`python -m bench.server_variant [--no-metrics] [--no-call-log] <uvicorn arguments>`: the production server,
except that `--no-metrics` makes each call's metrics a no-op and `--no-call-log` silences logger
routerweb.calls. Never used outside bench/.
"""

import logging
import sys

import uvicorn.main


def main() -> None:
    import django

    django.setup()
    args = sys.argv[1:]
    if "--no-metrics" in args:
        from routing.metrics import GatewayMetrics

        GatewayMetrics.call_observed = lambda self, outcome: None
    if "--no-call-log" in args:
        logging.getLogger("routerweb.calls").setLevel(logging.WARNING)
    uvicorn_args = [arg for arg in args if arg not in ("--no-metrics", "--no-call-log")]
    sys.argv = ["uvicorn", *uvicorn_args]
    uvicorn.main.main()


if __name__ == "__main__":
    main()
