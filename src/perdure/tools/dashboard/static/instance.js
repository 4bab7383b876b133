// One instance: state, values, error, children, a timeline, the history, and confirmed actions.
"use strict";

(() => {
  const { getJson, post, el, when, badge, instanceLink, offset, poll } = perdure;
  const SVG = "http://www.w3.org/2000/svg";
  const params = new URLSearchParams(location.search);
  const instanceId = params.get("id") || "";
  const api = (path) => `${path}?id=${encodeURIComponent(instanceId)}`;
  let current = null;

  document.getElementById("title").textContent = instanceId;
  document.title = `perdure · ${instanceId}`;
  for (const link of document.querySelectorAll(".value-note a")) {
    link.href = `/api/download?id=${encodeURIComponent(instanceId)}&field=${link.dataset.field}`;
  }

  function fact(term, ...value) {
    return [el("dt", { text: term }), el("dd", {}, ...value)];
  }

  function render(data) {
    current = data;
    const i = data.instance;
    document.getElementById("summary").hidden = false;
    document.getElementById("instance-id").textContent = i.instance_id;
    document.getElementById("status").replaceWith(Object.assign(badge(i.status), { id: "status" }));
    const facts = [
      ...fact("Name", `${i.name}${i.version ? ` @ ${i.version}` : ""}`),
      ...fact("Execution", String(i.execution_id)),
      ...fact("Created (UTC)", when(i.created_at)),
      ...fact("Updated (UTC)", when(i.updated_at)),
    ];
    if (i.parent_instance_id) facts.push(...fact("Parent", instanceLink(i.parent_instance_id)));
    document.getElementById("facts").replaceChildren(...facts);
    for (const button of document.querySelectorAll("#actions button")) {
      button.disabled = !data.can[button.dataset.action.replace("-", "_")];
    }
    showValue("input", data.values.input);
    showValue("output", data.values.output);
    showValue("custom-status", data.values.custom_status);
    const error = data.error;
    document.getElementById("error-section").hidden = !error;
    if (error) {
      document.getElementById("error-message").textContent = `${error.type}: ${cut(error.message)}`;
      document.getElementById("traceback").textContent = error.traceback ? cut(error.traceback) : "(no traceback)";
      const note = [error.message, error.traceback].some((part) => part && part.truncated)
        ? "The error is too long to show here in full."
        : "";
      document.getElementById("error-note").querySelector("span").textContent = note;
    }
    renderWaits(data.waiting_for);
    document.getElementById("children-section").hidden = data.children.length === 0;
    document.getElementById("children").replaceChildren(
      ...data.children.map((c) =>
        el(
          "tr",
          {},
          el("td", {}, instanceLink(c.instance_id)),
          el("td", { text: c.name }),
          el("td", {}, badge(c.status)),
          el("td", { text: when(c.updated_at) }),
        ),
      ),
    );
    document.getElementById("history-title").textContent = `History (execution ${i.execution_id})`;
    document.getElementById("history").replaceChildren(
      ...data.history.map((e) =>
        el(
          "tr",
          { "data-event": e.type },
          el("td", { text: String(e.event_id) }),
          el("td", { className: "mono", text: offset(e.offset_seconds) }),
          el("td", { text: e.type }),
          el("td", { className: "details", text: describe(e.details) }),
        ),
      ),
    );
    renderTimeline(data);
    document.getElementById("error").hidden = true;
  }

  // What an unfinished instance waits for: one line each, the child linked, unserved work in red.
  function renderWaits(waits) {
    document.getElementById("waiting-section").hidden = waits.length === 0;
    document.getElementById("waiting-for").replaceChildren(
      ...waits.map((w) => {
        const unserved = (w.kind === "activity" || w.kind === "start") && w.served_by.length === 0;
        const item = el("li", { "data-kind": w.kind, className: unserved ? "unserved" : null });
        if (w.kind === "child" && w.instance_id) item.append(instanceLink(w.instance_id), " ");
        item.append(w.text);
        return item;
      }),
    );
  }

  const cut = (clip) => clip.text + (clip.truncated ? "…" : "");
  const count = (n) => n.toLocaleString("en");

  // A value as the API cut it ({text, truncated, length} or null), and its download link.
  function showValue(id, value) {
    document.getElementById(id).textContent = value ? cut(value) : "–";
    const note = document.getElementById(`${id}-note`);
    note.hidden = !value;
    note.querySelector("span").textContent =
      value && value.truncated ? `Showing ${count([...value.text].length)} of ${count(value.length)} characters.` : "";
  }

  function describe(details) {
    const parts = [];
    for (const [key, value] of Object.entries(details)) {
      if (value === null || (key === "queue" && value === "default") || (key === "attempt" && value === 1)) continue;
      if (key === "error") parts.push(`error=${value.type}: ${value.message}`);
      else parts.push(`${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
    }
    return parts.join("  ");
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A Gantt chart of the execution: one row per activity, timer and child, on a shared time axis.
  function renderTimeline(data) {
    const box = document.getElementById("timeline");
    const spans = data.timeline;
    if (spans.length === 0) {
      box.replaceChildren(el("p", { className: "empty", text: "No activities, timers or children in this execution." }));
      return;
    }
    const t = (iso) => Date.parse(iso);
    const history = data.history;
    const start = history.length ? t(history[0].timestamp) : t(data.now);
    const finish = data.finished && history.length ? t(history[history.length - 1].timestamp) : t(data.now);
    const end = Math.max(finish, ...spans.map((s) => (s.end ? t(s.end) : finish)), start + 1);
    const labelWidth = 260, width = 960, row = 26, top = 24;
    const scale = (ms) => labelWidth + ((ms - start) / (end - start)) * (width - labelWidth - 16);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${top + spans.length * row + 8}`,
      class: "gantt",
      role: "img",
      "aria-label": "timeline of activities, timers and children",
    });
    for (let k = 0; k <= 4; k++) {
      const x = labelWidth + (k / 4) * (width - labelWidth - 16);
      chart.append(svg("line", { x1: x, x2: x, y1: top - 6, y2: top + spans.length * row, class: "tick" }));
      const anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
      chart.append(svg("text", { x, y: 14, class: "axis", "text-anchor": anchor }, offset(((end - start) / 1000) * (k / 4))));
    }
    spans.forEach((s, n) => {
      const y = top + n * row;
      const x1 = scale(t(s.start));
      const x2 = Math.max(scale(s.end ? t(s.end) : finish), x1 + 3);
      const group = svg("g", { class: `span kind-${s.kind} outcome-${s.outcome}`, "data-kind": s.kind });
      const label = svg("text", { x: 8, y: y + 17, class: "label" }, s.label.length > 38 ? `${s.label.slice(0, 37)}…` : s.label);
      const title = `${s.label}: ${s.outcome}, ${offset((t(s.start) - start) / 1000)}` +
        (s.end ? ` → ${offset((t(s.end) - start) / 1000)}` : " → …");
      group.append(svg("title", {}, title));
      if (s.kind === "child" && s.instance_id) {
        const link = svg("a", { href: `/instance?id=${encodeURIComponent(s.instance_id)}` });
        link.append(label);
        group.append(link);
      } else {
        group.append(label);
      }
      group.append(svg("rect", { x: x1, y: y + 5, width: x2 - x1, height: row - 10, rx: 3, class: "bar" }));
      chart.append(group);
    });
    box.replaceChildren(chart, legend());
  }

  function legend() {
    const item = (cls, text) => el("span", { className: `legend-item ${cls}` }, el("i"), text);
    return el(
      "div",
      { className: "legend" },
      item("kind-activity", "activity"),
      item("kind-timer", "timer"),
      item("kind-child", "child orchestration"),
      item("outcome-failed", "failed"),
      item("outcome-pending", "not finished"),
      item("outcome-cancelled", "cancelled or abandoned"),
      item("outcome-withdrawn", "withdrawn (never fired)"),
    );
  }

  // --- actions, each behind a confirmation dialog ----------------------------------------------
  const dialog = document.getElementById("confirm");
  const TEXT = {
    terminate: ["Terminate this instance?", "It stops at once, and its unfinished children are terminated too. This cannot be undone."],
    suspend: ["Suspend this instance?", "It runs no turns until it is resumed; its messages wait."],
    resume: ["Resume this instance?", "The messages that waited are applied in order."],
    rewind: ["Rewind this failed instance?", "Failed activities and children run again; completed work is kept."],
    "raise-event": ["Raise an event?", "The instance receives the event when it waits for it."],
  };
  let pending = null;

  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => {
      pending = button.dataset.action;
      const [title, text] = TEXT[pending];
      document.getElementById("confirm-title").textContent = title;
      document.getElementById("confirm-text").textContent = `${instanceId}: ${text}`;
      document.getElementById("reason-field").hidden = pending === "raise-event";
      document.getElementById("event-fields").hidden = pending !== "raise-event";
      document.getElementById("confirm-reason").value = "";
      document.getElementById("confirm-error").hidden = true;
      document.getElementById("confirm-ok").textContent = button.textContent;
      dialog.showModal();
    });
  }
  document.getElementById("confirm-cancel").addEventListener("click", () => {
    pending = null;
    dialog.close();
  });
  document.getElementById("confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorBox = document.getElementById("confirm-error");
    let payload = { reason: document.getElementById("confirm-reason").value.trim() || null };
    if (pending === "raise-event") {
      try {
        payload = {
          name: document.getElementById("event-name").value.trim(),
          data: JSON.parse(document.getElementById("event-data").value || "null"),
        };
      } catch (error) {
        errorBox.textContent = `The data is not valid JSON: ${error.message}`;
        errorBox.hidden = false;
        return;
      }
    }
    try {
      await post(api(`/api/instance/${pending}`), payload);
    } catch (error) {
      errorBox.textContent = error.message;
      errorBox.hidden = false;
      return;
    }
    const flash = document.getElementById("flash");
    flash.textContent = `${pending} requested for ${instanceId}.`;
    flash.hidden = false;
    dialog.close();
    pending = null;
    refresh();
  });

  function showError(error) {
    const box = document.getElementById("error");
    box.textContent = `Cannot load ${instanceId}: ${error.message}`;
    box.hidden = false;
  }

  const refresh = poll(async () => render(await getJson(api("/api/instance"))), showError);
})();
