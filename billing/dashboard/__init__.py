"""Reads for the spend dashboard, one module per question answered.

- `access`: who may see what; `CallFilters` and the querysets they narrow.
- `aggregates`: totals, spend over time, per-model, per-requested-name and per-user breakdowns.
- `votes`: playground compare-mode votes as win rates per model.
- `budgets`: this month's use of the budgets that apply (data only).
- `names`: names for ids, and the names the filter form offers.
- `recent`: the newest calls, keyset-paginated.
- `export`: the CSV columns, rows and text.
- `document`: everything the page reads once per request, and the JSON document it embeds
  (the one `/dashboard/data.json` answers).
- `presentation`: how figures are drawn: budget bars, tile counts.

Totals and charts read only `CallRollup` rows (day rows for whole-day ranges, hour rows otherwise),
so their cost depends on the range and the number of (key, model, status) combinations, not on the
number of calls. Raw `Call` rows are read only for the recent calls (keyset-paginated on the
`(created_at, id)` index) and the CSV export (streamed with a server-side cursor). Money stays
`Decimal`: rollups sum integer picodollars, converted once, in `aggregates`.
"""
