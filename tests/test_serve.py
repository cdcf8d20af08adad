"""The production command line is defined in routerweb/serve.py; the Makefile's `run` target spells it out in shell."""

from routerweb.serve import uvicorn_args
from tests.conftest import REPO_ROOT

# The Makefile's defaults for the variables its uvicorn line uses.
MAKE_DEFAULTS = {"$(HOST)": "127.0.0.1", "$(PORT)": "8000", "$(WORKERS)": "1", "$(ROUTERWEB_SHUTDOWN_GRACE_S)": "30"}


def make_run_uvicorn_args() -> list[str]:
    """The arguments of the uvicorn line of `make run`, with the Makefile's default host, port and workers."""
    makefile = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in makefile.splitlines() if line.strip().startswith("$(VENV)/bin/uvicorn "))
    return [MAKE_DEFAULTS.get(word, word) for word in line.split()[1:]]


def test_make_run_serves_with_the_production_command():
    assert make_run_uvicorn_args() == uvicorn_args(host="127.0.0.1", port=8000)
