/* routerweb playground: plain JavaScript, no build step.
 *
 * Talks only to routerweb's own session endpoints (same origin, session cookie, CSRF header); no API
 * key is ever involved. Server messages are inserted as text (textContent / text nodes). Model output
 * is rendered as Markdown (vendored marked), and that HTML only ever reaches the page through
 * DOMPurify; without either library it is shown as text.
 *
 * The conversation and the settings are kept in localStorage (per user) so a reload keeps them.
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
    stored: root.dataset.storedUrl,
    login: root.dataset.loginUrl,
    api: root.dataset.apiUrl,
  };
  const STORAGE_KEY = `routerweb.playground.v1.${root.dataset.userId}`;
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
    viewCode: byId("view-code"),
    codeDialog: byId("code-dialog"),
    codeText: byId("code-text"),
    codeTabs: [...root.querySelectorAll("[data-code]")],
    codeCopy: byId("code-copy"),
    codeClose: byId("code-close"),
  };

  const LANES = "ABCD";
  const MIN_COLUMNS = 2;
  const MAX_COLUMNS = 4;
  // The call's row lands about a second after the answer: ask once, letting the server wait for it,
  // then retry a few times with a growing pause (the server answers 202 meanwhile, never 404).
  const CALL_WAIT_S = 3;
  const CALL_RETRY_PAUSES_MS = [500, 1500, 4000];
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

  /** An exact decimal string of dollars (or null: unpriced), in the one money format (static/js/money.js). */
  function formatCost(costUsd) {
    if (costUsd === null || costUsd === undefined) return "unpriced";
    return usdText(costUsd);
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

  /** Model output as Markdown (static/js/markdown.js), tables wrapped to scroll, code highlighted and
   * given a copy button when `final`. */
  function renderMarkdown(container, text, final) {
    markdownRender(container, text);
    for (const table of container.querySelectorAll("table")) {
      const wrap = h("div", { class: "table-wrap" });
      table.before(wrap);
      wrap.append(table);
    }
    if (!final) return;
    for (const code of container.querySelectorAll("pre > code")) {
      markdownHighlight(code);
      const pre = code.parentElement;
      const copy = h("button", { type: "button", class: "code-copy small", "aria-label": "Copy code" }, "Copy");
      copy.addEventListener("click", () => copyText(code.textContent, copy));
      pre.classList.add("has-copy");
      pre.prepend(copy);
    }
  }

  async function copyText(text, button) {
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  }

  function renderText(container, text, final = false) {
    if (markdownReady()) renderMarkdown(container, text, final);
    else renderPlain(container, text);
  }

  /** Without the Markdown libraries: text with ``` fenced blocks shown as code; everything as text. */
  function renderPlain(container, text) {
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
      usage: null,
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
    const edit = h("button", { type: "button", class: "turn-action small", title: "Edit and resend" }, "Edit");
    edit.addEventListener("click", () => editTurn(turn));
    turn.dom = h(
      "article",
      { class: "turn" },
      h(
        "div",
        { class: "msg-user-row" },
        edit,
        h("div", { class: "msg-user" }, h("span", { class: "visually-hidden" }, "You: "), turn.user),
      ),
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
      if (answer.finished) return; // showOutcome has drawn the final text
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

  /** The answer's footer: its actions, then what the call did (the recorded call, or the usage the
   * answer itself carried while the call is not loaded yet). */
  function renderMeta(answer) {
    const call = answer.call;
    const meta = answer.dom.meta;
    meta.hidden = false;
    const parts = [answerActions(answer)];
    if (!call) {
      if (answer.usage) parts.push(h("dl", { class: "stats" }, ...usageStats(answer.usage)));
      const note = answer.callPending ? "Loading the attempt chain…" : "The trace of this call is not available.";
      if (answer.requestId || !answer.usage) parts.push(h("p", { class: "muted trace-note" }, note));
      meta.replaceChildren(...parts);
      return;
    }
    if (call.model) {
      const failed = call.status !== "ok";
      const answered = h("p", { class: "answered-by" }, failed ? "Failed on " : "Answered by ", h("code", {}, call.model));
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
      stats.push(stat("Cost", formatCost(call.cost_usd)));
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

  /** Tokens and cost from the answer's own `usage` (`usage.cost`: an exact decimal string, when given). */
  function usageStats(usage) {
    const stats = [stat("Tokens", `${usage.prompt_tokens ?? "?"} in · ${usage.completion_tokens ?? "?"} out`)];
    if (usage.cost !== undefined) stats.push(stat("Cost", formatCost(usage.cost)));
    return stats;
  }

  function answerActions(answer) {
    const actions = h("div", { class: "answer-actions" });
    if (answer.text) {
      const copy = h("button", { type: "button", class: "small" }, "Copy");
      copy.addEventListener("click", () => copyText(answer.text, copy));
      actions.append(copy);
    }
    const turn = answer.turn;
    if (turn && turn === state.turns[state.turns.length - 1] && state.mode === "single") {
      const again = h("button", { type: "button", class: "small" }, answer.error ? "Retry" : "Regenerate");
      again.addEventListener("click", () => regenerate(turn));
      actions.append(again);
    }
    return actions;
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
    if (event.usage) answer.usage = event.usage;
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
        body: JSON.stringify(body.stream ? { ...body, stream_options: { include_usage: true } } : body),
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
        answer.usage = completion.usage || null;
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
    answer.finished = true;
    if (answer.discarded) return;
    answer.callPending = Boolean(answer.requestId);
    keepingEnd(() => {
      showOutcome(answer);
      renderMeta(answer);
    });
    if (answer.requestId) await loadCall(answer);
  }

  function showOutcome(answer) {
    renderText(answer.dom.text, answer.text, true);
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

  /** Fetch the recorded call once the answer has ended (for the attempt chain, latency, TTFT, speed). */
  async function loadCall(answer) {
    const url = `${urls.call.replace("REQUEST_ID", encodeURIComponent(answer.requestId))}?wait=${CALL_WAIT_S}`;
    for (let attempt = 0; attempt <= CALL_RETRY_PAUSES_MS.length && !answer.discarded; attempt += 1) {
      if (attempt > 0) await sleep(CALL_RETRY_PAUSES_MS[attempt - 1]);
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.status === 200) {
          answer.call = await response.json();
          break;
        }
        if (response.status !== 202) break; // 202: not recorded yet
      } catch {
        break;
      }
    }
    answer.callPending = false;
    if (!answer.discarded) keepingEnd(() => renderMeta(answer));
    saveConversation();
  }

  // ------------------------------------------------------------------ compare-mode votes

  function canVote(turn) {
    return !turn.noVote && turn.answers.every((a) => a.requestId && a.call) && turn.answers.some(answered);
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
    for (const answer of turn.answers) answer.turn = turn;
    const previous = state.turns[state.turns.length - 1];
    state.turns.push(turn);
    refreshActions(previous);
    ui.prompt.value = "";
    autosize();
    updateLock();
    renderTurn(turn);
    await runTurn(turn);
  }

  async function runTurn(turn) {
    setBusy(true);
    saveConversation();
    await Promise.all(
      turn.answers.map((answer, lane) => runAnswer(answer, requestBody(answer.target, messagesFor(lane, turn)))),
    );
    if (turn.discarded) return;
    setBusy(false);
    saveConversation();
    if (state.mode === "compare") addVoteButtons(turn);
  }

  /** Ask again for the last turn's answers (the same messages). */
  function regenerate(turn) {
    if (state.controllers.size || turn !== state.turns[state.turns.length - 1]) return;
    const fresh = turn.answers.map((answer) => {
      answer.discarded = true;
      const again = newAnswer(answer.target, answer.lane);
      again.turn = turn;
      answer.dom.root.replaceWith(again.dom.root);
      return again;
    });
    turn.answers = fresh;
    runTurn(turn);
  }

  /** Put a message back in the composer and drop it and everything after it: edit, then send again. */
  function editTurn(turn) {
    if (state.controllers.size) stopAll();
    const index = state.turns.indexOf(turn);
    if (index < 0) return;
    for (const dropped of state.turns.splice(index)) {
      dropped.discarded = true;
      for (const answer of dropped.answers) answer.discarded = true;
      dropped.dom.remove();
    }
    if (!state.turns.length) ui.empty.hidden = false;
    ui.prompt.value = turn.user;
    autosize();
    updateLock();
    refreshActions(state.turns[state.turns.length - 1]);
    saveConversation();
    ui.prompt.focus();
  }

  /** Only the last turn offers "Regenerate": redraw the footers of `turn` when that changed. */
  function refreshActions(turn) {
    if (!turn) return;
    for (const answer of turn.answers) if (!answer.dom.meta.hidden) renderMeta(answer);
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
    saveConversation();
  }

  // ------------------------------------------------------------------ kept across a reload

  function saveConversation() {
    const turns = state.turns.map((turn) => ({
      user: turn.user,
      noVote: Boolean(turn.noVote),
      answers: turn.answers.map((a) => ({
        target: a.target,
        text: a.text,
        error: a.error,
        stopped: a.stopped || !a.finished, // still running when saved: shown as stopped after a reload
        requestId: a.requestId,
        usage: a.usage,
        call: a.call,
      })),
    }));
    const saved = {
      mode: state.mode,
      columns: state.columns,
      fallbacks: state.fallbacks,
      target: ui.target.value,
      system: ui.system.value,
      temperature: ui.temperature.value,
      maxTokens: ui.maxTokens.value,
      stream: ui.stream.checked,
      turns,
    };
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
    } catch {
      // storage full or disabled: the conversation simply is not kept
    }
  }

  function loadConversation() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch {
      saved = null;
    }
    if (!saved || typeof saved !== "object") return;
    const names = new Set(optionsOf(ui.target).map((o) => o.value));
    // A target that cannot answer any more (its key was removed, its circuit opened) is not restored:
    // the page's default, which can, stays selected.
    const usable = optionsOf(ui.target).filter((o) => !o.hasAttribute("data-unavailable"));
    if (usable.some((o) => o.value === saved.target)) ui.target.value = saved.target;
    ui.system.value = String(saved.system || "");
    ui.temperature.value = String(saved.temperature || "");
    ui.maxTokens.value = String(saved.maxTokens || "");
    ui.stream.checked = saved.stream !== false;
    state.fallbacks = (saved.fallbacks || []).filter((name) => names.has(name));
    state.columns = (saved.columns || []).filter((name) => names.has(name));
    setMode(saved.mode === "compare" ? "compare" : "single");
    for (const kept of saved.turns || []) {
      if (!kept || typeof kept.user !== "string" || !Array.isArray(kept.answers)) continue;
      const turn = { user: kept.user, answers: [], noVote: Boolean(kept.noVote) };
      turn.answers = kept.answers.map((k, lane) => {
        const answer = newAnswer(String(k.target || ""), lane);
        Object.assign(answer, {
          turn,
          text: String(k.text || ""),
          error: k.error || null,
          stopped: Boolean(k.stopped),
          finished: true,
          requestId: k.requestId || null,
          usage: k.usage || null,
          call: k.call || null,
        });
        return answer;
      });
      state.turns.push(turn);
      renderTurn(turn);
      for (const answer of turn.answers) {
        showOutcome(answer);
        renderMeta(answer);
      }
      if (state.mode === "compare" && canVote(turn)) showVoteButtons(turn);
    }
    updateLock();
  }

  // ------------------------------------------------------------------ a stored call: open it, or replay it
  // `?call=<request id>` loads a recorded call's conversation and parameters (when its body was
  // stored); `&replay=<model or route>` also runs its last request again on that target and shows the
  // original answer and the replay side by side, as a compare turn.

  const OWN_PARAMETERS = new Set(["model", "messages", "stream", "stream_options", "fallback_models"]);

  /** A message's content as text: a string, or the text parts of a list of parts. */
  function contentText(content) {
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) return "";
    return content.map((part) => (part && part.type === "text" ? String(part.text || "") : "[non-text part]")).join("\n");
  }

  function showNotice(text, isError) {
    const note = h("p", { class: `pg-notice${isError ? " is-error" : ""}`, role: isError ? "alert" : "status" }, text);
    ui.transcript.prepend(note);
    return note;
  }

  async function openStoredCall(requestId, replayTarget) {
    let stored = null;
    let problem = null;
    try {
      const url = urls.stored.replace("REQUEST_ID", encodeURIComponent(requestId));
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) stored = await response.json();
      else problem = await errorFromResponse(response);
    } catch {
      problem = describeError({ code: "network", message: "The call could not be loaded. Try again." }, 0);
    }
    history.replaceState(null, "", window.location.pathname); // a reload keeps what is shown, not the query
    if (!stored) {
      showNotice(`${problem.title}: ${problem.message}`, true);
      return;
    }
    const original = stored.call.requested;
    if (replayTarget === original) {
      showNotice(`The call already asked ${original}: pick another model or route to replay it on.`, true);
      replayTarget = null;
    }
    newChat();
    const parameters = stored.parameters || {};
    const system = stored.messages.filter((m) => m && m.role === "system").map((m) => contentText(m.content));
    ui.system.value = system.join("\n\n");
    ui.temperature.value = typeof parameters.temperature === "number" ? String(parameters.temperature) : "";
    ui.maxTokens.value = Number.isInteger(parameters.max_tokens) ? String(parameters.max_tokens) : "";
    ui.stream.checked = parameters.stream === true;
    state.fallbacks = [];
    renderFallbacks();
    const lanes = replayTarget ? [original, replayTarget] : [original];
    if (replayTarget) {
      state.columns = lanes;
      setMode("compare");
    } else {
      if (optionsOf(ui.target).some((o) => o.value === original)) ui.target.value = original;
      setMode("single");
    }
    showTargetNote();

    // The user's messages make the turns; the assistant message after each is every lane's answer to it.
    const turns = [];
    for (const message of stored.messages) {
      if (!message || message.role === "system") continue;
      if (message.role === "user") turns.push({ user: contentText(message.content), replies: [] });
      else if (turns.length && message.role === "assistant") turns[turns.length - 1].replies.push(contentText(message.content));
    }
    if (!turns.length) turns.push({ user: "", replies: [] });
    const last = turns.length - 1;
    turns.forEach((kept, index) => {
      const turn = { user: kept.user, answers: [], noVote: index < last || !stored.own };
      turn.answers = lanes.map((target, lane) => {
        const answer = newAnswer(target, lane);
        const replayed = index === last && lane === 1; // runs below: not finished yet
        Object.assign(answer, { turn, finished: !replayed, text: kept.replies.join("\n\n") });
        if (index === last && lane === 0) {
          Object.assign(answer, { text: stored.answer, requestId: stored.call.request_id, call: stored.call });
          const tag = h("span", { class: "tag", title: `the recorded call ${stored.call.request_id}` }, "recorded");
          answer.dom.status.before(tag);
        }
        return answer;
      });
      state.turns.push(turn);
      renderTurn(turn);
      for (const answer of turn.answers) {
        if (!answer.finished) continue; // the replay: run below
        showOutcome(answer);
        renderMeta(answer);
      }
    });
    updateLock();
    const extra = Object.keys(parameters).filter((name) => !OWN_PARAMETERS.has(name));
    const dropped = extra.filter((name) => name !== "temperature" && name !== "max_tokens");
    let note = `Opened call ${stored.call.request_id} (${original}).`;
    if (stored.request_truncated || stored.answer_truncated) note += " It was stored truncated: the conversation is cut where marked.";
    if (!replayTarget && dropped.length) note += ` Not sent again from here: ${dropped.join(", ")}.`;
    if (replayTarget) note += ` Replaying its last request on ${replayTarget} with the same messages and parameters.`;
    if (replayTarget && !stored.own) note += " It is another user's call: the two answers cannot be voted on.";
    showNotice(note, false);
    saveConversation();
    if (!replayTarget) return;

    const turn = state.turns[last];
    const replay = turn.answers[1];
    const body = { model: replayTarget, messages: stored.messages, stream: ui.stream.checked };
    for (const name of extra) body[name] = parameters[name];
    setBusy(true);
    await runAnswer(replay, body);
    if (turn.discarded) return;
    setBusy(false);
    saveConversation();
    addVoteButtons(turn);
  }

  // ------------------------------------------------------------------ view as code

  let codeLanguage = "curl";

  /** The request the page sent last (or would send now), as the API takes it from a program. */
  function codeRequest() {
    const lastTurn = state.turns[state.turns.length - 1];
    const target = state.mode === "compare" ? state.columns[0] : ui.target.value;
    if (lastTurn) return requestBody(target, messagesFor(0, lastTurn));
    const messages = messagesFor(0, null);
    messages.push({ role: "user", content: ui.prompt.value.trim() || "Hello!" });
    return requestBody(target, messages);
  }

  function shellQuote(text) {
    return `'${text.replaceAll("'", "'\\''")}'`;
  }

  function curlCode(body) {
    return [
      `curl ${shellQuote(`${urls.api}/chat/completions`)} \\`,
      `  -H "Authorization: Bearer $ROUTERWEB_API_KEY" \\`,
      `  -H "Content-Type: application/json" \\`,
      body.stream ? `  -N \\` : null,
      `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
    ]
      .filter(Boolean)
      .join("\n");
  }

  /** Strings, lists and dicts of them as Python source: their JSON is (messages hold nothing else). */
  function pythonLiteral(value, indent) {
    return JSON.stringify(value, null, 4).split("\n").join(`\n${indent}`);
  }

  function pythonCode(body) {
    const args = [`    model=${JSON.stringify(body.model)},`, `    messages=${pythonLiteral(body.messages, "    ")},`];
    if (body.temperature !== undefined) args.push(`    temperature=${body.temperature},`);
    if (body.max_tokens !== undefined) args.push(`    max_tokens=${body.max_tokens},`);
    if (body.fallback_models) args.push(`    extra_body={"fallback_models": ${pythonLiteral(body.fallback_models, "    ")}},`);
    if (body.stream) args.push("    stream=True,");
    const lines = [
      "import os",
      "",
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url=${JSON.stringify(urls.api)}, api_key=os.environ["ROUTERWEB_API_KEY"])`,
      "",
    ];
    if (body.stream) {
      lines.push("stream = client.chat.completions.create(", ...args, ")");
      lines.push("for chunk in stream:", "    if chunk.choices:", '        print(chunk.choices[0].delta.content or "", end="", flush=True)');
      lines.push("print()");
    } else {
      lines.push("completion = client.chat.completions.create(", ...args, ")");
      lines.push("print(completion.choices[0].message.content)");
    }
    return lines.join("\n");
  }

  function showCode() {
    const body = codeRequest();
    ui.codeText.textContent = codeLanguage === "curl" ? curlCode(body) : pythonCode(body);
    ui.codeText.className = codeLanguage === "curl" ? "language-bash" : "language-python";
    delete ui.codeText.dataset.highlighted;
    if (window.hljs) window.hljs.highlightElement(ui.codeText);
    for (const tab of ui.codeTabs) tab.setAttribute("aria-selected", String(tab.dataset.code === codeLanguage));
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
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controllers.size && !ui.codeDialog.open) {
      event.preventDefault();
      stopAll();
    }
  });
  for (const field of [ui.target, ui.system, ui.temperature, ui.maxTokens, ui.stream]) {
    field.addEventListener("change", saveConversation);
  }
  ui.viewCode.addEventListener("click", () => {
    showCode();
    ui.codeDialog.showModal();
  });
  for (const tab of ui.codeTabs) {
    tab.addEventListener("click", () => {
      codeLanguage = tab.dataset.code;
      showCode();
    });
  }
  ui.codeCopy.addEventListener("click", () => copyText(ui.codeText.textContent, ui.codeCopy));
  ui.codeClose.addEventListener("click", () => ui.codeDialog.close());

  if (window.matchMedia("(max-width: 760px)").matches) ui.settings.open = false;
  setMode("single");
  loadConversation();
  showTargetNote();
  renderFallbacks();
  ui.prompt.focus();
  const opened = new URLSearchParams(window.location.search);
  if (opened.get("call")) openStoredCall(opened.get("call"), opened.get("replay"));
})();
