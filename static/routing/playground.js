/* routerweb playground: plain JavaScript, no build step.
 *
 * Talks only to routerweb's own session endpoints (same origin, session cookie, CSRF header); no API
 * key is ever involved. Model output and server messages are inserted as text (textContent / text
 * nodes), never as HTML.
 *
 * State: a conversation is a list of turns; each turn has the user's message and one answer per
 * lane. Single mode has one lane; compare mode one lane per column (2 to 4), each lane keeping its
 * own assistant history, like separate conversations that share the user's messages.
 */
"use strict";

(() => {
  const root = document.getElementById("playground");
  if (!root) return;

  const urls = {
    chat: root.dataset.chatUrl,
    call: root.dataset.callUrl,
    votes: root.dataset.votesUrl,
    login: root.dataset.loginUrl,
  };
  const csrfToken = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  const byId = (id) => document.getElementById(id);
  const ui = {
    settings: byId("settings"),
    target: byId("target"),
    targetNote: byId("target-note"),
    singleField: byId("single-field"),
    fallbacksField: byId("fallbacks-field"),
    fallbacks: byId("fallbacks"),
    fallbackAdd: byId("fallback-add"),
    columnsField: byId("columns-field"),
    columns: byId("columns"),
    addColumn: byId("add-column"),
    system: byId("system"),
    temperature: byId("temperature"),
    maxTokens: byId("max-tokens"),
    stream: byId("stream"),
    modeButtons: [...root.querySelectorAll("[data-mode]")],
    newChat: byId("new-chat"),
    transcript: byId("transcript"),
    empty: byId("empty"),
    composer: byId("composer"),
    lockNote: byId("lock-note"),
    prompt: byId("prompt"),
    send: byId("send"),
    stop: byId("stop"),
  };

  const LANES = "ABCD";
  const MIN_COLUMNS = 2;
  const MAX_COLUMNS = 4;
  const CALL_POLL_MS = 120;
  const CALL_POLL_TRIES = 30;
  const ERROR_TITLES = {
    budget_exceeded: "Budget exceeded",
    all_candidates_failed: "All candidates failed",
    model_not_found: "Unknown model",
    model_not_allowed: "Model not allowed",
    login_required: "You are logged out",
    csrf_failed: "Security check failed",
    invalid_value: "Invalid request",
    invalid_json: "Invalid request",
    body_too_large: "Conversation too long",
    upstream_error: "The answer broke off",
    network: "Network error",
  };

  const state = {
    mode: "single",
    turns: [],
    fallbacks: [],
    columns: [],
    controllers: new Set(),
  };

  // ------------------------------------------------------------------ small helpers

  /** An element with attributes and children; strings become text nodes (never parsed as HTML). */
  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function formatCost(call) {
    if (call.cost_usd === null) return "unpriced";
    const cost = Number(call.cost_usd);
    if (cost === 0) return "$0";
    return cost >= 0.01 ? `$${cost.toFixed(4)}` : `$${cost.toFixed(6)}`;
  }

  function optionsOf(select) {
    return [...select.querySelectorAll("option")].filter((option) => option.value);
  }

  function isRoute(name) {
    return optionsOf(ui.target).some((o) => o.value === name && o.hasAttribute("data-route"));
  }

  function noteOf(name) {
    const option = optionsOf(ui.target).find((o) => o.value === name);
    return option ? option.dataset.note : "";
  }

  // ------------------------------------------------------------------ settings panel

  function showTargetNote() {
    ui.targetNote.textContent = noteOf(ui.target.value) || "";
  }

  function renderFallbacks() {
    ui.fallbacks.replaceChildren(
      ...state.fallbacks.map((name, index) =>
        h(
          "li",
          { class: "chip" },
          h("span", { class: "chip-index" }, String(index + 1)),
          h("code", {}, name),
          removeButton(`Remove fallback ${name}`, () => {
            state.fallbacks.splice(index, 1);
            renderFallbacks();
          }),
        ),
      ),
    );
    ui.fallbacks.hidden = state.fallbacks.length === 0;
  }

  function removeButton(label, onClick, disabled = false) {
    const button = h("button", { type: "button", class: "remove", "aria-label": label, title: label }, "×");
    button.disabled = disabled;
    button.addEventListener("click", onClick);
    return button;
  }

  function defaultColumns() {
    const usable = optionsOf(ui.target).filter((o) => !o.hasAttribute("data-unavailable"));
    const names = [ui.target.value, ...usable.map((o) => o.value)].filter(Boolean);
    const unique = [...new Set(names)];
    return unique.slice(0, MIN_COLUMNS);
  }

  function renderColumns() {
    const locked = state.turns.length > 0;
    ui.columns.replaceChildren(
      ...state.columns.map((name, index) => {
        const select = ui.target.cloneNode(true);
        select.removeAttribute("id");
        select.value = name;
        select.setAttribute("aria-label", `Column ${LANES[index]}`);
        select.addEventListener("change", () => {
          state.columns[index] = select.value;
        });
        return h(
          "li",
          { class: "column-pick" },
          h("span", { class: "lane-badge", "aria-hidden": "true" }, LANES[index]),
          select,
          removeButton(
            `Remove column ${LANES[index]}`,
            () => {
              state.columns.splice(index, 1);
              renderColumns();
            },
            locked || state.columns.length <= MIN_COLUMNS,
          ),
        );
      }),
    );
    ui.addColumn.disabled = locked || state.columns.length >= MAX_COLUMNS;
  }

  function setMode(mode) {
    state.mode = mode;
    const compare = mode === "compare";
    root.classList.toggle("is-compare", compare);
    for (const button of ui.modeButtons) button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    ui.singleField.hidden = compare;
    ui.fallbacksField.hidden = compare;
    ui.columnsField.hidden = !compare;
    if (compare && state.columns.length < MIN_COLUMNS) state.columns = defaultColumns();
    renderColumns();
  }

  function updateLock() {
    const locked = state.turns.length > 0;
    for (const button of ui.modeButtons) button.disabled = locked && button.dataset.mode !== state.mode;
    ui.lockNote.hidden = !locked || state.mode !== "compare";
    renderColumns();
  }

  // ------------------------------------------------------------------ transcript rendering

  /** Text with ``` fenced blocks shown as code; everything inserted as text. */
  function renderText(container, text) {
    const parts = text.split("```");
    const nodes = [];
    parts.forEach((part, index) => {
      if (index % 2 === 0) {
        if (part) nodes.push(h("div", { class: "prose" }, part));
        return;
      }
      const newline = part.indexOf("\n");
      const language = newline > 0 ? part.slice(0, newline).trim() : "";
      const code = newline >= 0 ? part.slice(newline + 1) : part;
      nodes.push(h("pre", { "data-language": language || null }, h("code", {}, code.replace(/\n$/, ""))));
    });
    container.replaceChildren(...nodes);
  }

  function nearBottom(element) {
    return element.scrollHeight - element.scrollTop - element.clientHeight < 48;
  }

  function scrollToEnd(element) {
    element.scrollTop = element.scrollHeight;
  }

  function newAnswer(target, lane) {
    const answer = {
      target,
      lane,
      text: "",
      requestId: null,
      model: null,
      error: null,
      stopped: false,
      call: null,
      discarded: false,
      renderQueued: false,
    };
    answer.dom = {
      status: h("span", { class: "answer-status" }, "waiting…"),
      text: h("div", { class: "answer-text" }),
      error: h("div", { class: "answer-error", role: "alert", hidden: true }),
      meta: h("footer", { class: "answer-meta", hidden: true }),
    };
    answer.dom.body = h("div", { class: "answer-body" }, answer.dom.text);
    answer.dom.root = h(
      "section",
      { class: "answer is-waiting", "data-lane": LANES[lane], "aria-label": `Answer from ${target}` },
      h(
        "header",
        { class: "answer-head" },
        state.mode === "compare" ? h("span", { class: "lane-badge", "aria-hidden": "true" }, LANES[lane]) : null,
        h("code", { class: "answer-target" }, target),
        answer.dom.status,
      ),
      answer.dom.body,
      answer.dom.error,
      answer.dom.meta,
    );
    return answer;
  }

  function renderTurn(turn) {
    ui.empty.hidden = true;
    const answers = h("div", { class: "answers" }, ...turn.answers.map((a) => a.dom.root));
    answers.style.setProperty("--cols", String(turn.answers.length));
    turn.dom = h(
      "article",
      { class: "turn" },
      h("div", { class: "msg-user" }, h("span", { class: "visually-hidden" }, "You: "), turn.user),
      answers,
    );
    ui.transcript.append(turn.dom);
    scrollToEnd(ui.transcript);
  }

  function setStatus(answer, status, label) {
    answer.dom.root.classList.remove("is-waiting", "is-streaming", "is-done", "is-error", "is-stopped");
    answer.dom.root.classList.add(`is-${status}`);
    answer.dom.status.textContent = label;
  }

  /** Run `change`; if the transcript was scrolled to its end before, keep it there. */
  function keepingEnd(change) {
    const stick = nearBottom(ui.transcript);
    change();
    if (stick) scrollToEnd(ui.transcript);
  }

  function queueTextRender(answer) {
    if (answer.renderQueued) return;
    answer.renderQueued = true;
    requestAnimationFrame(() => {
      answer.renderQueued = false;
      const stickCell = nearBottom(answer.dom.body);
      keepingEnd(() => renderText(answer.dom.text, answer.text));
      if (stickCell) scrollToEnd(answer.dom.body);
    });
  }

  function appendText(answer, text) {
    answer.text += text;
    queueTextRender(answer);
  }

  function showError(answer) {
    const error = answer.error;
    const children = [h("strong", {}, error.title), h("span", {}, error.message)];
    if (error.code === "login_required") children.push(h("a", { href: urls.login }, "Log in again"));
    answer.dom.error.replaceChildren(...children);
    answer.dom.error.hidden = false;
  }

  function stat(label, ...value) {
    return h("div", {}, h("dt", {}, label), h("dd", {}, ...value));
  }

  function renderMeta(answer) {
    const call = answer.call;
    const meta = answer.dom.meta;
    meta.hidden = false;
    if (!call) {
      meta.replaceChildren(h("p", { class: "muted" }, "The trace of this call is not available."));
      return;
    }
    const parts = [];
    if (call.model) {
      const answered = h("p", { class: "answered-by" }, "Answered by ", h("code", {}, call.model));
      if (call.requested !== call.model) {
        const viaRoute = isRoute(call.requested);
        answered.append(viaRoute ? " via route " : " instead of ", h("code", {}, call.requested));
      }
      if (call.client_disconnected) answered.append(h("span", { class: "tag" }, "stopped"));
      parts.push(answered);
    }
    if (call.attempts.length) {
      parts.push(
        h(
          "ol",
          { class: "attempts", "aria-label": "Attempt chain" },
          ...call.attempts.map((a) => h("li", { class: `attempt is-${a.outcome}` }, a.text)),
        ),
      );
    }
    const stats = [];
    if (call.model) {
      const tokens = [`${call.prompt_tokens} in · ${call.completion_tokens} out`];
      if (call.usage_estimated) {
        const title = "counted by routerweb: the provider reported no usage";
        tokens.push(h("span", { class: "tag est", title }, "estimated"));
      }
      stats.push(stat("Tokens", ...tokens));
      stats.push(stat("Cost", formatCost(call)));
    }
    stats.push(stat("Latency", formatMs(call.latency_ms)));
    if (call.model) {
      stats.push(stat("TTFT", formatMs(call.ttft_ms)));
      stats.push(stat("Speed", call.tokens_per_second === null ? "—" : `${call.tokens_per_second} tok/s`));
    }
    parts.push(h("dl", { class: "stats" }, ...stats));
    if (answer.voteButton) parts.push(answer.voteRow);
    meta.replaceChildren(...parts);
  }

  // ------------------------------------------------------------------ talking to routerweb

  function describeError(error, status) {
    const code = error && typeof error.code === "string" ? error.code : "";
    const fallbackTitle = status === 429 ? "Rate limited" : status >= 500 ? "Server error" : "Request refused";
    const title = ERROR_TITLES[code] || fallbackTitle;
    let message = String((error && error.message) || `routerweb answered HTTP ${status}.`);
    // "Budget exceeded: the monthly budget…" under the title "Budget exceeded": don't say it twice.
    if (message.toLowerCase().startsWith(`${title.toLowerCase()}:`)) message = message.slice(title.length + 1).trim();
    return { code, status, title, message };
  }

  async function errorFromResponse(response) {
    let error = null;
    try {
      error = (await response.json()).error;
    } catch {
      error = null; // not JSON (e.g. a proxy's error page): described from the status alone
    }
    return describeError(error, response.status);
  }

  function messagesFor(lane, upToTurn) {
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const turn of state.turns) {
      messages.push({ role: "user", content: turn.user });
      if (turn === upToTurn) break;
      const answer = turn.answers[lane];
      if (answer && answer.text) messages.push({ role: "assistant", content: answer.text });
    }
    return messages;
  }

  function requestBody(target, messages) {
    const body = { model: target, messages, stream: ui.stream.checked };
    if (state.mode === "single") {
      const fallbacks = state.fallbacks.filter((name) => name !== target);
      if (fallbacks.length) body.fallback_models = fallbacks;
    }
    const temperature = ui.temperature.value.trim();
    if (temperature !== "") body.temperature = Number(temperature);
    const maxTokens = ui.maxTokens.value.trim();
    if (maxTokens !== "") body.max_tokens = Number(maxTokens);
    return body;
  }

  /** Read server-sent events from `stream`, calling `onData` with each event's data. */
  async function readEvents(stream, onData) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    const boundary = /\r?\n\r?\n/;
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let match;
      while ((match = boundary.exec(buffer))) {
        const event = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) onData(data);
      }
    }
  }

  function onStreamData(answer, data) {
    if (data === "[DONE]") return;
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event.error) {
      answer.error = describeError(event.error, 502);
      return;
    }
    for (const choice of event.choices || []) {
      const content = choice.delta && choice.delta.content;
      if (content) appendText(answer, content);
    }
  }

  async function runAnswer(answer, body) {
    const controller = new AbortController();
    state.controllers.add(controller);
    answer.controller = controller;
    try {
      const response = await fetch(urls.chat, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream, application/json",
          "X-CSRFToken": csrfToken,
        },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      answer.requestId = response.headers.get("X-Request-Id");
      answer.model = response.headers.get("X-Router-Model") || null;
      if (!response.ok) {
        answer.error = await errorFromResponse(response);
      } else if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        setStatus(answer, "streaming", answer.model ? `streaming from ${answer.model}…` : "streaming…");
        await readEvents(response.body, (data) => onStreamData(answer, data));
      } else {
        const completion = await response.json();
        const message = completion.choices && completion.choices[0] && completion.choices[0].message;
        appendText(answer, (message && message.content) || "");
      }
    } catch (err) {
      if (controller.signal.aborted) {
        answer.stopped = true;
      } else {
        const detail = err && err.message ? ` (${err.message})` : "";
        const message = `The connection to routerweb failed${detail}. Check your connection and try again.`;
        answer.error = describeError({ code: "network", message }, 0);
      }
    } finally {
      state.controllers.delete(controller);
    }
    if (answer.discarded) return;
    keepingEnd(() => showOutcome(answer));
    if (answer.requestId) await loadCall(answer);
  }

  function showOutcome(answer) {
    renderText(answer.dom.text, answer.text);
    if (answer.error) {
      setStatus(answer, "error", "failed");
      answer.dom.body.hidden = !answer.text;
      showError(answer);
    } else if (answer.stopped) {
      setStatus(answer, "stopped", "stopped");
    } else {
      setStatus(answer, "done", "done");
      if (!answer.text) answer.dom.text.append(h("p", { class: "muted" }, "(empty answer)"));
    }
  }

  /** Fetch the recorded call (rows land within ~200 ms of the answer); polls briefly while it is missing. */
  async function loadCall(answer) {
    const url = urls.call.replace("REQUEST_ID", encodeURIComponent(answer.requestId));
    for (let attempt = 0; attempt < CALL_POLL_TRIES && !answer.discarded; attempt += 1) {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.ok) {
          answer.call = await response.json();
          break;
        }
        if (response.status !== 404) break;
      } catch {
        break;
      }
      await sleep(CALL_POLL_MS);
    }
    if (!answer.discarded) keepingEnd(() => renderMeta(answer));
  }

  // ------------------------------------------------------------------ compare-mode votes

  function canVote(turn) {
    return turn.answers.every((a) => a.requestId && a.call) && turn.answers.some(answered);
  }

  function answered(answer) {
    return Boolean(answer.call && answer.call.status === "ok" && answer.call.model && !answer.error);
  }

  function addVoteButtons(turn) {
    if (canVote(turn)) keepingEnd(() => showVoteButtons(turn));
  }

  function showVoteButtons(turn) {
    for (const answer of turn.answers) {
      if (!answered(answer)) continue;
      answer.voteButton = h("button", { type: "button", class: "vote small", "aria-pressed": "false" }, "Better");
      answer.voteButton.addEventListener("click", () => vote(turn, answer));
      answer.voteRow = h("div", { class: "vote-row" }, answer.voteButton);
      answer.dom.meta.append(answer.voteRow);
    }
    const note = "Which answer is better? Your vote counts for the model that answered it.";
    turn.voteNote = h("p", { class: "vote-note", role: "status" }, note);
    turn.dom.append(turn.voteNote);
  }

  async function vote(turn, chosen) {
    const body = {
      compared: turn.answers.map((a) => a.target),
      request_ids: turn.answers.map((a) => a.requestId),
      chosen: chosen.target,
    };
    for (const answer of turn.answers) if (answer.voteButton) answer.voteButton.disabled = true;
    let problem = null;
    try {
      const response = await fetch(urls.votes, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify(body),
      });
      if (!response.ok) problem = await errorFromResponse(response);
    } catch {
      problem = describeError({ code: "network", message: "The vote could not be sent. Try again." }, 0);
    }
    for (const answer of turn.answers) {
      if (!answer.voteButton) continue;
      answer.voteButton.disabled = false;
      if (problem) continue;
      const isChosen = answer === chosen;
      answer.voteButton.setAttribute("aria-pressed", String(isChosen));
      answer.voteButton.textContent = isChosen ? "✓ Preferred" : "Better";
      answer.dom.root.classList.toggle("is-preferred", isChosen);
    }
    turn.voteNote.classList.toggle("is-error", Boolean(problem));
    turn.voteNote.textContent = problem
      ? `${problem.title}: ${problem.message}`
      : `Vote saved: ${LANES[chosen.lane]} (${chosen.call.model}). Click another answer to change it.`;
  }

  // ------------------------------------------------------------------ sending

  function setBusy(busy) {
    ui.send.hidden = busy;
    ui.stop.hidden = !busy;
    ui.send.disabled = busy;
    if (!busy) ui.prompt.focus();
  }

  function composerError(message) {
    ui.prompt.setCustomValidity(message);
    ui.prompt.reportValidity();
    setTimeout(() => ui.prompt.setCustomValidity(""), 2500);
  }

  async function send() {
    const text = ui.prompt.value.trim();
    if (!text || state.controllers.size) return;
    const targets = state.mode === "compare" ? [...state.columns] : [ui.target.value];
    if (targets.some((t) => !t)) return composerError("Pick a model or route first.");
    if (new Set(targets).size !== targets.length) {
      return composerError("Pick a different model or route for each column.");
    }

    const turn = { user: text, answers: targets.map((target, lane) => newAnswer(target, lane)) };
    state.turns.push(turn);
    ui.prompt.value = "";
    autosize();
    updateLock();
    renderTurn(turn);
    setBusy(true);
    await Promise.all(
      turn.answers.map((answer, lane) => runAnswer(answer, requestBody(answer.target, messagesFor(lane, turn)))),
    );
    if (turn.discarded) return;
    setBusy(false);
    if (state.mode === "compare") addVoteButtons(turn);
  }

  function stopAll() {
    for (const controller of state.controllers) controller.abort();
  }

  function newChat() {
    stopAll();
    for (const turn of state.turns) {
      turn.discarded = true;
      for (const answer of turn.answers) answer.discarded = true;
    }
    state.turns = [];
    ui.transcript.replaceChildren(ui.empty);
    ui.empty.hidden = false;
    setBusy(false);
    updateLock();
  }

  function autosize() {
    ui.prompt.style.height = "auto";
    ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight + 2, 200)}px`;
  }

  // ------------------------------------------------------------------ wiring

  ui.target.addEventListener("change", showTargetNote);
  ui.fallbackAdd.addEventListener("change", () => {
    const name = ui.fallbackAdd.value;
    if (name && !state.fallbacks.includes(name)) state.fallbacks.push(name);
    ui.fallbackAdd.value = "";
    renderFallbacks();
  });
  ui.addColumn.addEventListener("click", () => {
    const unused = optionsOf(ui.target).find(
      (o) => !state.columns.includes(o.value) && !o.hasAttribute("data-unavailable"),
    );
    state.columns.push(unused ? unused.value : ui.target.value);
    renderColumns();
  });
  for (const button of ui.modeButtons) button.addEventListener("click", () => setMode(button.dataset.mode));
  ui.newChat.addEventListener("click", newChat);
  ui.stop.addEventListener("click", stopAll);
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.prompt.addEventListener("input", autosize);

  if (window.matchMedia("(max-width: 760px)").matches) ui.settings.open = false;
  showTargetNote();
  renderFallbacks();
  setMode("single");
  ui.prompt.focus();
})();
