"""routerweb with call recording switched off, for the cost-tracking benchmark's reference run only.

`python -m bench.server_without_rows <uvicorn arguments>`: the production server, except that the
call recorder drops every row (nothing is spooled or inserted). Never used outside bench/.
"""

import sys

import uvicorn.main


def main() -> None:
    import django

    django.setup()
    from billing.recorder import CallRecorder

    CallRecorder.record = lambda self, row: None
    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main.main()


if __name__ == "__main__":
    main()
