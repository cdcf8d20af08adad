"""The production command line is defined in routerweb/serve.py; the Makefile's `run` target spells it out in shell."""

import gc

from routerweb.collector import SERVING_THRESHOLD, collector_set_for_serving
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


def test_start_up_sets_the_collector_for_serving(gateway):
    """The live server's lifespan (in this process) froze what start-up left and raised the first
    generation's threshold."""
    assert gc.get_threshold()[0] == SERVING_THRESHOLD
    assert gc.get_freeze_count() > 0


def test_the_collector_set_for_serving_still_frees_reference_cycles():
    """With the serving threshold the collector still runs on its own: however many reference cycles are
    made, those not freed yet stay bounded, without anyone calling gc.collect(). At most a threshold's
    worth waits for the next collection (each cycle is at least one tracked object), plus the few that a
    collection met while they were still alive, which wait in the next generation for its turn."""
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    collector_set_for_serving()
    try:
        _Cycle.freed = 0
        made = 20 * SERVING_THRESHOLD
        for _ in range(made):  # each leaves a cycle: a node that refers to itself
            _Cycle()
        assert made - _Cycle.freed < 2 * SERVING_THRESHOLD  # with the collector off: all 200,000
    finally:  # as found, so that the start-up test sees only what the live server's start-up did
        gc.set_threshold(*threshold)
        if not frozen:
            gc.unfreeze()


class _Cycle:
    freed = 0

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        type(self).freed += 1
