/* The spend dashboard: filters that apply themselves (the page reloads with the new query), and charts
   drawn from the JSON document of the current filters that the page embeds (the one
   /dashboard/data.json?<same query> answers). No numbers are computed here: the document's exact
   decimal strings are only turned into chart coordinates. */
(function () {
  "use strict";

  document.documentElement.classList.add("js");
  const form = document.getElementById("filters");
  const dataNode = document.getElementById("dashboard-data");

  // ------------------------------------------------------------------ filters
  if (form) {
    const range = form.elements.range;
    const syncCustom = () => form.classList.toggle("is-custom", range.value === "custom");
    syncCustom();
    form.addEventListener("change", (event) => {
      const field = event.target;
      if (field === range) {
        syncCustom();
        if (range.value === "custom") return; // wait for both dates and Apply
      } else if (field.type === "date") {
        return;
      } else if (field.list && field.value && !offered(field)) {
        form.classList.add("is-custom"); // a name not in the list: Apply sends it, the server answers
        return;
      }
      if (field.name === "user" && form.elements.key) form.elements.key.value = ""; // keys are per user
      apply();
    });
    // Picking an entry of a searchable field's list applies it at once, as a select would.
    form.addEventListener("input", (event) => {
      const field = event.target;
      if (field.list && (!event.inputType || event.inputType === "insertReplacementText") && offered(field)) {
        field.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      apply();
    });
  }

  // Whether a searchable field's value is one its <datalist> offers.
  function offered(field) {
    return [...field.list.options].some((option) => option.value === field.value);
  }

  function apply() {
    const params = new URLSearchParams();
    const custom = form.elements.range.value === "custom";
    for (const [name, value] of new FormData(form)) {
      if (!value || ((name === "start" || name === "end") && !custom)) continue;
      if (name === "range" && value === form.dataset.defaultRange) continue;
      if (name === "tz" && value === form.dataset.defaultTz) continue;
      params.append(name, value);
    }
    const query = params.toString();
    window.location.assign(form.action + (query ? "?" + query : ""));
  }

  // ------------------------------------------------------------------ what would it have cost?
  // The page's filters (without the page cursor) plus the chosen model, sent to whatif.json; the
  // answer's exact decimal strings are only written out.
  const whatif = document.getElementById("whatif");
  if (whatif) {
    const whatifForm = document.getElementById("whatif-form");
    const cellText = (text, className) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (className) cell.className = className;
      return cell;
    };
    const whole = (n) => Number(n).toLocaleString("en-US");
    const signed = (amount) => (Number(amount) > 0 ? "+" : "") + usdText(amount);
    const tokens = (line) => [line.prompt_tokens, line.cached_tokens, line.completion_tokens].map(whole).join(" / ");
    const showWhatIf = (answer) => {
      document.getElementById("whatif-chosen-head").textContent = "On " + answer.model;
      document.getElementById("whatif-rows").replaceChildren(...answer.by_model.map((line) => {
        const row = document.createElement("tr");
        const name = cellText(line.model);
        if (line.estimated_calls) name.title = `${whole(line.estimated_calls)} calls with estimated tokens`;
        const calls = cellText(whole(line.calls), "num mono");
        if (line.unpriced_calls) {
          const unpriced = document.createElement("span");
          unpriced.className = "muted";
          unpriced.textContent = ` + ${whole(line.unpriced_calls)} unpriced`;
          calls.append(unpriced);
        }
        row.append(name, calls, cellText(tokens(line), "num mono"),
          cellText(usdText(line.cost_now_usd), "num mono"), cellText(usdText(line.cost_chosen_usd), "num mono"),
          cellText(signed(line.difference_usd), "num mono"));
        return row;
      }));
      const total = answer.total;
      const head = document.createElement("th");
      head.scope = "row";
      head.textContent = "Total";
      document.getElementById("whatif-total").replaceChildren(head, cellText(whole(total.calls), "num mono"),
        cellText(""), cellText(usdText(total.cost_now_usd), "num mono"),
        cellText(usdText(total.cost_chosen_usd), "num mono"), cellText(signed(total.difference_usd), "num mono"));
      const notes = [];
      if (!answer.by_model.length) notes.push("No priced calls in this range.");
      const p = answer.price;
      const cached = p.cached_input_per_mtok === null ? "as input" : usdText(p.cached_input_per_mtok);
      notes.push(`${answer.model} at ${usdText(p.input_per_mtok)} input, ${cached} cached input, ` +
        `${usdText(p.output_per_mtok)} output per 1M tokens (price in force now). Cache hits are left out.`);
      if (answer.estimated_calls) {
        notes.push(`${whole(answer.estimated_calls)} of these calls had no usage from the provider: their tokens are estimates.`);
      }
      if (answer.unpriced_calls) {
        notes.push(`${whole(answer.unpriced_calls)} calls had no price and are left out of both columns.`);
      }
      const note = document.getElementById("whatif-note");
      note.textContent = notes.join(" ");
      note.hidden = false;
      document.getElementById("whatif-result").hidden = false;
    };
    whatifForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const params = new URLSearchParams(window.location.search);
      params.delete("before");
      params.set("whatif", whatifForm.elements.whatif.value);
      const error = document.getElementById("whatif-error");
      error.hidden = true;
      try {
        const response = await fetch(`${whatif.dataset.url}?${params}`, { headers: { Accept: "application/json" } });
        const answer = await response.json();
        if (!response.ok) throw new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
        showWhatIf(answer);
      } catch (problem) {
        error.textContent = String(problem.message || problem);
        error.hidden = false;
        document.getElementById("whatif-result").hidden = true;
        document.getElementById("whatif-note").hidden = true;
      }
    });
  }

  if (!dataNode || typeof Chart === "undefined") return;

  // ------------------------------------------------------------------ look
  // The page's colours (dashboard.css --d-*, from app.css's variables): the charts follow the light or
  // dark scheme the page is drawn in.
  const css = getComputedStyle(document.querySelector(".dash") || document.documentElement);
  const token = (name, fallback) => (css.getPropertyValue(name) || fallback).trim();
  const ink = token("--d-fg", "#1d1d1f");
  const muted = token("--d-muted", "#6b6b70");
  const line = token("--d-border", "#e3e3e0");
  const card = token("--d-card", "#ffffff");
  const accent = token("--d-accent", "#3554d1");
  const accentSoft = /^#[0-9a-f]{6}$/i.test(accent) ? accent + "73" : accent; // 45% opaque
  const ok = token("--d-ok", "#1f8a4c");
  const warn = token("--d-warn", "#d08a1e");
  const bad = token("--d-bad", "#c0392b");
  const narrow = window.matchMedia("(max-width: 760px)").matches;
  const PALETTE = ["#3554d1", "#1f8a4c", "#d08a1e", "#c0392b", "#7b4fd6", "#0e8a9b", "#d35f9b", "#6b7a8c",
    "#8ab340", "#e07b39", "#2f9fd8", "#a0522d"];

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = muted;
  Chart.defaults.borderColor = line;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 10;
  Chart.defaults.plugins.legend.labels.boxHeight = 10;
  Chart.defaults.plugins.tooltip.backgroundColor = ink;
  Chart.defaults.plugins.tooltip.titleColor = card;
  Chart.defaults.plugins.tooltip.bodyColor = card;

  const colors = new Map();
  const colorFor = (name) => {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  };

  // A money axis tick: as many decimals as the step between ticks needs, so that no two ticks read
  // alike ($0.0002, $0.0004 … for a tiny spend; $0.25, $0.50; $1, $2; $20,000). usdText alone would
  // cut $1.0005 and $1.001 to the same "$1.00".
  function usdTick(value, index, ticks) {
    if (value === 0) return "$0";
    const step = ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) : Math.abs(value);
    const decimals = (Number(step.toPrecision(6)).toFixed(12).replace(/0+$/, "").split(".")[1] || "").length;
    const places = decimals === 0 ? 0 : Math.max(2, Math.min(decimals, 12));
    const text = Math.abs(value).toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
    return (value < 0 && /[1-9]/.test(text) ? "-$" : "$") + text;
  }
  // A count for an axis: 9,999 as is, then 12.3K, 4.56M (as the tiles write them).
  function compactCount(n) {
    const units = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
    for (const [size, suffix] of units) {
      if (Math.abs(n) >= Math.max(size, 1e4)) return Number((n / size).toPrecision(3)) + suffix;
    }
    return Number(n).toLocaleString("en-US");
  }
  const count = (n) => Number(n).toLocaleString("en-US");
  const pct = (rate) => (rate * 100).toFixed(rate && rate < 0.001 ? 3 : 1) + "%";

  // A bucket's label in the dashboard's time zone (the document's range.tz), as the server cut the days.
  function bucketLabel(iso, bucket, many, timeZone) {
    const date = new Date(iso);
    if (bucket === "hour") {
      const time = date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", timeZone });
      return many ? date.toLocaleDateString("en-GB", { weekday: "short", timeZone }) + " " + time : time;
    }
    return date.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone });
  }

  function empty(canvas, message) {
    const box = canvas.parentElement;
    let note = box.querySelector(".chart-empty");
    if (!message) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = document.createElement("div");
      note.className = "chart-empty";
      box.appendChild(note);
    }
    note.textContent = message;
  }

  // Draws a chart and gives its figure a "Table" toggle: the same numbers as a <table> (one row per
  // label, one column per data set), for screen readers and for reading exact values. `cell(set,
  // index, raw)` writes a value as the tooltip does, from the document's own strings.
  function draw(id, build, { hasData, emptyMessage, first, cell }) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    const chart = new Chart(canvas, build());
    empty(canvas, hasData ? "" : emptyMessage || "No calls in this range");
    if (hasData) addTable(canvas, chart.data, first, cell);
  }

  function addTable(canvas, chartData, first, cell) {
    const figure = canvas.closest("figure");
    const box = canvas.parentElement;
    const caption = figure.querySelector("figcaption");
    const wrap = document.createElement("div");
    wrap.className = "chart-table";
    wrap.id = canvas.id + "-table";
    wrap.hidden = true;
    const table = document.createElement("table");
    const title = table.createCaption();
    title.textContent = caption.textContent;
    title.className = "visually-hidden";
    const head = table.createTHead().insertRow();
    for (const name of [first, ...chartData.datasets.map((set) => set.label)]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      head.appendChild(th);
    }
    const body = table.createTBody();
    chartData.labels.forEach((label, index) => {
      const row = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = label;
      row.appendChild(th);
      chartData.datasets.forEach((set, setIndex) => {
        const td = row.insertCell();
        td.className = "num";
        td.textContent = cell(setIndex, index, set.data[index]);
      });
    });
    wrap.appendChild(table);
    box.after(wrap);
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "table-toggle";
    toggle.textContent = "Table";
    toggle.setAttribute("aria-controls", wrap.id);
    toggle.setAttribute("aria-pressed", "false");
    toggle.addEventListener("click", () => {
      const showTable = wrap.hidden;
      wrap.hidden = !showTable;
      box.hidden = showTable;
      toggle.setAttribute("aria-pressed", String(showTable));
      toggle.textContent = showTable ? "Chart" : "Table";
    });
    caption.appendChild(toggle);
  }

  const moneyAxis = { beginAtZero: true, ticks: { callback: usdTick }, grid: { color: line } };
  const plainAxis = { grid: { display: false }, ticks: { color: muted } };
  const nameAxis = { grid: { display: false }, ticks: { color: ink, autoSkip: false, font: { size: 11 } } };
  const msAxis = { beginAtZero: true, ticks: { callback: (v) => (v >= 1000 ? v / 1000 + " s" : v + " ms") }, grid: { color: line } };

  // ------------------------------------------------------------------ charts
  function render(data) {
    data.models.forEach((m) => colorFor(m.model));
    const series = data.spend_over_time;
    const many = series.starts.length > 24;

    draw("chart-spend-time", () => ({
      type: "bar",
      data: {
        labels: series.starts.map((s) => bucketLabel(s, series.bucket, many, data.range.tz)),
        datasets: series.series.map((s) => ({
          label: s.model, data: s.spend_usd.map(Number), backgroundColor: colorFor(s.model), borderRadius: 2,
          maxBarThickness: 28,
        })),
      },
      options: {
        scales: { x: { ...plainAxis, stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 12 } }, y: { ...moneyAxis, stacked: true } },
        plugins: {
          legend: { position: narrow ? "bottom" : "right" },
          tooltip: { mode: "index", callbacks: {
            label: (c) => (c.raw ? ` ${c.dataset.label}: ${usdText(series.series[c.datasetIndex].spend_usd[c.dataIndex])}` : null),
          } },
        },
        interaction: { mode: "index", intersect: false },
      },
    }), { hasData: series.series.length > 0, first: data.range.bucket === "hour" ? "Hour" : "Day",
      cell: (set, i) => usdText(series.series[set].spend_usd[i]) });

    const traffic = data.traffic_over_time;
    const trafficNames = ["requests", "tokens in", "tokens out"];
    draw("chart-traffic", () => ({
      type: "bar",
      data: {
        labels: traffic.starts.map((s) => bucketLabel(s, traffic.bucket, many, data.range.tz)),
        datasets: [
          { label: trafficNames[0], data: traffic.calls, backgroundColor: accentSoft, borderRadius: 2, maxBarThickness: 28, yAxisID: "y", order: 2 },
          { type: "line", label: trafficNames[1], data: traffic.prompt_tokens, borderColor: ok, backgroundColor: ok, pointRadius: 0, borderWidth: 2, yAxisID: "y1", order: 1 },
          { type: "line", label: trafficNames[2], data: traffic.completion_tokens, borderColor: warn, backgroundColor: warn, pointRadius: 0, borderWidth: 2, yAxisID: "y1", order: 0 },
        ],
      },
      options: {
        scales: {
          x: { ...plainAxis, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { beginAtZero: true, position: "left", ticks: { precision: 0, callback: compactCount }, grid: { color: line }, title: { display: !narrow, text: "requests" } },
          y1: { beginAtZero: true, position: "right", ticks: { precision: 0, callback: compactCount }, grid: { display: false }, title: { display: !narrow, text: "tokens" } },
        },
        plugins: {
          legend: { position: narrow ? "bottom" : "top", align: "end" },
          tooltip: { mode: "index", callbacks: { label: (c) => ` ${c.dataset.label}: ${count(c.raw)}` } },
        },
        interaction: { mode: "index", intersect: false },
      },
    }), { hasData: traffic.calls.some((n) => n > 0), first: traffic.bucket === "hour" ? "Hour" : "Day",
      cell: (set, i, raw) => count(raw) });

    const keys = data.spend_by_key;
    draw("chart-spend-key", () => ({
      type: "bar",
      data: {
        labels: keys.map((k) => k.key),
        datasets: [{ label: "Spend", data: keys.map((k) => Number(k.spend_usd)), backgroundColor: ok, borderRadius: 3, maxBarThickness: 18 }],
      },
      options: {
        indexAxis: "y",
        scales: { x: moneyAxis, y: nameAxis },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => ` ${usdText(keys[c.dataIndex].spend_usd)} · ${count(keys[c.dataIndex].calls)} calls` } } },
      },
    }), { hasData: keys.length > 0, first: "API key", cell: (set, i) => usdText(keys[i].spend_usd) });

    const models = data.models;
    draw("chart-spend-model", () => ({
      type: "bar",
      data: {
        labels: models.map((m) => m.model),
        datasets: [{ label: "Spend", data: models.map((m) => Number(m.spend_usd)), backgroundColor: models.map((m) => colorFor(m.model)), borderRadius: 3, maxBarThickness: 22 }],
      },
      options: {
        indexAxis: "y",
        scales: { x: moneyAxis, y: nameAxis },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => ` ${usdText(models[c.dataIndex].spend_usd)} · ${count(models[c.dataIndex].calls)} calls` } } },
      },
    }), { hasData: models.length > 0, first: "Model", cell: (set, i) => usdText(models[i].spend_usd) });

    if (data.spend_by_user) {
      const users = data.spend_by_user;
      draw("chart-spend-user", () => ({
        type: "bar",
        data: {
          labels: users.map((u) => u.user),
          datasets: [{ label: "Spend", data: users.map((u) => Number(u.spend_usd)), backgroundColor: accent, borderRadius: 3, maxBarThickness: 18 }],
        },
        options: {
          indexAxis: "y",
          scales: { x: moneyAxis, y: nameAxis },
          plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => ` ${usdText(users[c.dataIndex].spend_usd)} · ${count(users[c.dataIndex].calls)} calls` } } },
        },
      }), { hasData: users.length > 0, first: "User", cell: (set, i) => usdText(users[i].spend_usd) });
    }

    draw("chart-latency", () => ({
      type: "bar",
      data: {
        labels: models.map((m) => m.model),
        datasets: [
          { label: "p50", data: models.map((m) => m.latency_p50_ms), backgroundColor: accent, borderRadius: 2 },
          { label: "p95", data: models.map((m) => m.latency_p95_ms), backgroundColor: accentSoft, borderRadius: 2 },
          { label: "TTFT p50", data: models.map((m) => m.ttft_p50_ms), backgroundColor: ok, borderRadius: 2 },
        ],
      },
      options: {
        indexAxis: "y",
        scales: { x: msAxis, y: nameAxis },
        plugins: { legend: { position: "top", align: "end" }, tooltip: { callbacks: { label: (c) => (c.raw == null ? ` ${c.dataset.label}: —` : ` ${c.dataset.label}: ≤ ${count(c.raw)} ms`) } } },
      },
    }), { hasData: models.length > 0, first: "Model", cell: (set, i, raw) => (raw == null ? "—" : `≤ ${count(raw)} ms`) });

    const requested = data.requested.slice(0, 10);
    draw("chart-rates", () => ({
      type: "bar",
      data: {
        labels: requested.map((r) => r.requested),
        datasets: [
          { label: "errors", data: requested.map((r) => r.error_rate * 100), backgroundColor: bad, borderRadius: 2 },
          { label: "fallbacks", data: requested.map((r) => r.fallback_rate * 100), backgroundColor: warn, borderRadius: 2 },
        ],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, ticks: { callback: (v) => v + "%" }, grid: { color: line } }, y: nameAxis },
        plugins: {
          legend: { position: "top", align: "end" },
          tooltip: { callbacks: { label: (c) => {
            const r = requested[c.dataIndex];
            return c.datasetIndex === 0
              ? ` errors: ${pct(r.error_rate)} (${count(r.error_calls)} of ${count(r.calls)})`
              : ` fallbacks: ${pct(r.fallback_rate)} (${count(r.fallback_calls)} of ${count(r.calls)})`;
          } } },
        },
      },
    }), { hasData: requested.length > 0, first: "Requested", cell: (set, i) => {
      const r = requested[i];
      return set === 0
        ? `${pct(r.error_rate)} (${count(r.error_calls)} of ${count(r.calls)})`
        : `${pct(r.fallback_rate)} (${count(r.fallback_calls)} of ${count(r.calls)})`;
    } });

    const votes = data.votes;
    draw("chart-votes", () => ({
      type: "bar",
      data: {
        labels: votes.map((v) => v.model),
        datasets: [{ label: "win rate", data: votes.map((v) => v.win_rate * 100), backgroundColor: votes.map((v) => colorFor(v.model)), borderRadius: 3, maxBarThickness: 22 }],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, max: 100, ticks: { callback: (v) => v + "%" }, grid: { color: line } }, y: nameAxis },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => {
          const v = votes[c.dataIndex];
          return ` won ${count(v.wins)} of ${count(v.comparisons)} comparisons (${pct(v.win_rate)})`;
        } } } },
      },
    }), { hasData: votes.length > 0, emptyMessage: "No votes in this range", first: "Model",
      cell: (set, i) => `${pct(votes[i].win_rate)} (${count(votes[i].wins)} of ${count(votes[i].comparisons)})` });
  }

  render(JSON.parse(dataNode.textContent));
})();
