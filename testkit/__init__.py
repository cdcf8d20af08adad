"""Test support shared by the test suite (``tests/``) and the benchmarks (``bench/``).

- ``testkit.fake_upstream``: the fake upstream with fault injection (a test double): OpenAI-compatible,
  and Anthropic's Messages API at ``/messages`` (its wire format in ``testkit.fake_anthropic``).
- ``testkit.live``: run an ASGI app on a real socket (``serve_asgi``, ``LiveServer``), ``free_port``,
  ``redis_delete_prefix``.

Never imported by the product: nothing under ``routerweb/``, ``routing/`` or ``billing/`` may import
this package or ``tests`` (``tests/test_architecture.py`` checks it). The product's offline demo
model is ``routing/demo_provider.py``.
"""
