"""The worker's cyclic garbage collector, set for serving once start-up is over.

CPython's collector runs when the objects it tracks (dicts, lists, coroutines, futures…) allocated since
its last run, less those freed, pass a threshold: 700 by default. A call allocates hundreds of them, which
reference counting frees as soon as the call is done; but whatever is alive while the collector runs (the
calls in flight) moves to an older generation, and the count it starts again from does not go below
zero, so their frees are not taken off. At 700 a busy worker ran the collector about once every 16 calls,
and a full collection, through the ~110,000 objects of Django, the imported modules and the registry,
once every 2,500 to 10,000 calls: 10–26 µs of CPU per call in all, and a 17 ms stall of every call in
flight each time (docs/benchmarks.md). For the API they found nothing to free: a call leaves no
reference cycles (none among ~9,000 failing calls with a fallback and ~4,600 answered ones, with
`gc.DEBUG_SAVEALL`). Pages and registry reloads do leave some (a page view of the dashboard, the
playground or the admin 200–260 objects, Django's page stack; a registry load ~130, ORM instances).

At the end of start-up:
- `gc.freeze()` moves every object alive then (modules, settings, URL patterns, the runtime) to the
  permanent generation, which no collection traverses again; they live as long as the process anyway;
- the first generation's threshold becomes SERVING_THRESHOLD: the collector still runs, and frees
  reference cycles, once that many more tracked objects were allocated than freed, so the garbage
  waiting for it stays bounded (about that many objects: a few dozen page views' worth).
"""

import gc

SERVING_THRESHOLD = 10_000  # the first generation's; the older two keep CPython's defaults


def collector_set_for_serving() -> None:
    """Freeze what start-up left and raise the first generation's threshold (see the module docstring)."""
    gc.collect()  # start-up's own garbage is freed, not frozen
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(SERVING_THRESHOLD, older, oldest)
