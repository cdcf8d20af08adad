"""Dollars as people read them: billing/money.py `usd_text`, the page's `|usd` filter and the charts'
`usdText` (static/js/money.js, used by every page) write every amount alike."""

import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from django.template import Context, Template

from billing.money import usd_figure, usd_json, usd_text

STATIC = Path(__file__).resolve().parents[1] / "static"
DASHBOARD_JS = STATIC / "billing" / "dashboard.js"
MONEY_JS = STATIC / "js" / "money.js"

SHOWN = [
    ("0", "$0.00"),
    ("0.000348", "$0.000348"),  # small amounts stay apart
    ("0.01", "$0.01"),
    ("12.5", "$12.50"),  # cents, never $12.5 or $13
    ("1234.5678", "$1,234.56"),  # cut, not rounded
    ("25", "$25.00"),
    ("4.999", "$4.99"),  # just under a $5 limit never reads as $5.00
    ("0.12399", "$0.123"),
    ("0.000000000001", "$0.000000000001"),  # one picodollar
    ("12.500000000000", "$12.50"),  # as the documents carry it
    ("-3.5", "-$3.50"),
]


@pytest.mark.parametrize("amount, shown", SHOWN)
def test_usd_text(amount, shown):
    assert usd_text(Decimal(amount)) == shown
    assert usd_figure(Decimal(amount)) == shown.replace("$", "")


@pytest.mark.parametrize("amount, shown", SHOWN)
def test_the_template_filter_writes_the_same(amount, shown):
    assert Template("{% load money %}{{ amount|usd }}").render(Context({"amount": Decimal(amount)})) == shown


def test_the_documents_carry_exact_amounts():
    assert usd_json(Decimal("123.756789012346")) == "123.756789012346"
    assert usd_json(Decimal("12.500000000000")) == "12.50" and usd_json(Decimal(0)) == "0.00"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_charts_write_the_same():
    """`usdText`, taken out of money.js as it is and run by node on the document's strings and on
    axis-tick numbers (0.1 + 0.2 and 1e-7 included)."""
    source = MONEY_JS.read_text()
    function = re.search(r"^function usdText\(value\) \{$.*?^\}$", source, re.S | re.M)[0]
    ticks = [0.1 + 0.2, 1e-7, 1500, 0]
    script = f"{function}\nconsole.log(JSON.stringify([{json.dumps([a for a, _ in SHOWN])}.map(usdText), "
    script += f"{json.dumps(ticks)}.map(usdText)]));"
    strings, numbers = json.loads(subprocess.run(["node", "-e", script], capture_output=True, check=True).stdout)
    assert strings == [shown for _, shown in SHOWN]
    assert numbers == ["$0.30", "$0.0000001", "$1,500.00", "$0.00"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_axis_ticks_take_their_decimals_from_the_step():
    """`usdTick` (dashboard.js), run by node on the tick lists Chart.js makes: no two ticks read alike,
    however small or uneven the step (a few calls of a cheap model spend thousandths of a cent)."""
    source = DASHBOARD_JS.read_text()
    function = re.search(r"^  function usdTick\(value, index, ticks\) \{$.*?^  \}$", source, re.S | re.M)[0]
    axes = {
        "tiny": [0, 0.000005, 0.00001, 0.000015, 0.00002],
        "thousandths": [0, 0.0002, 0.0004, 0.0006000000000000001],
        "quarters": [0, 0.25, 0.5, 0.75, 1, 1.25],
        "near a dollar": [1, 1.0005, 1.001, 1.0015],
        "whole": [0, 2000, 4000, 6000],
        "one tick": [0.00035],
    }
    script = f"{MONEY_JS.read_text()}\n{function}\nconst axes = {json.dumps(axes)};\n"
    script += "const out = {}; for (const [k, v] of Object.entries(axes)) {"
    script += " const ticks = v.map((value) => ({ value })); out[k] = v.map((x, i) => usdTick(x, i, ticks)); }"
    script += "console.log(JSON.stringify(out));"
    shown = json.loads(subprocess.run(["node", "-e", script], capture_output=True, check=True).stdout)
    assert shown == {
        "tiny": ["$0", "$0.000005", "$0.000010", "$0.000015", "$0.000020"],
        "thousandths": ["$0", "$0.0002", "$0.0004", "$0.0006"],
        "quarters": ["$0", "$0.25", "$0.50", "$0.75", "$1.00", "$1.25"],
        "near a dollar": ["$1.0000", "$1.0005", "$1.0010", "$1.0015"],
        "whole": ["$0", "$2,000", "$4,000", "$6,000"],
        "one tick": ["$0.00035"],
    }
