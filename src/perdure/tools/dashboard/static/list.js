// The instance list: status filters, search by id prefix or name, cursor paging, live refresh.
"use strict";

(() => {
  const { getJson, el, when, badge, instanceLink, clipped, poll } = perdure;
  const STATUSES = ["PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED", "TERMINATED"];
  const params = new URLSearchParams(location.search);
  const state = {
    statuses: new Set(params.getAll("status")),
    prefix: params.get("prefix") || "",
    name: params.get("name") || "",
    cursors: [null], // cursor of each page seen so far; the last one is the current page
    next: null,
  };

  const fieldset = document.getElementById("statuses");
  for (const status of STATUSES) {
    const box = el("input", { type: "checkbox", name: "status", value: status, id: `status-${status}` });
    box.checked = state.statuses.has(status);
    box.addEventListener("change", () => {
      if (box.checked) state.statuses.add(status);
      else state.statuses.delete(status);
      restart();
    });
    fieldset.append(el("label", { className: `chip status-${status.toLowerCase()}` }, box, status));
  }
  const prefix = document.getElementById("prefix");
  const name = document.getElementById("name");
  prefix.value = state.prefix;
  name.value = state.name;
  let typing = null;
  for (const input of [prefix, name]) {
    input.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.prefix = prefix.value.trim();
        state.name = name.value.trim();
        restart();
      }, 250);
    });
  }
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("clear").addEventListener("click", () => {
    state.statuses.clear();
    prefix.value = name.value = state.prefix = state.name = "";
    for (const box of fieldset.querySelectorAll("input")) box.checked = false;
    restart();
  });
  document.getElementById("next").addEventListener("click", () => {
    if (state.next) {
      state.cursors.push(state.next);
      refresh();
    }
  });
  document.getElementById("first").addEventListener("click", () => {
    state.cursors = [null];
    refresh();
  });

  function query() {
    const q = new URLSearchParams();
    for (const status of state.statuses) q.append("status", status);
    if (state.prefix) q.set("prefix", state.prefix);
    if (state.name) q.set("name", state.name);
    if (params.get("limit")) q.set("limit", params.get("limit"));
    return q;
  }

  function restart() {
    state.cursors = [null];
    const q = query().toString();
    history.replaceState(null, "", q ? `/?${q}` : "/");
    refresh();
  }

  async function load() {
    const q = query();
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) q.set("after", cursor);
    const data = await getJson(`/api/instances?${q}`);
    state.next = data.next_cursor;
    const rows = data.instances.map((i) =>
      el(
        "tr",
        { "data-instance-id": i.instance_id, "data-status": i.status },
        el("td", {}, instanceLink(i.instance_id)),
        el("td", { text: i.name }),
        el("td", { text: i.version || "–" }),
        el("td", {}, badge(i.status)),
        el("td", { className: "preview" }, clipped(i.custom_status_preview)),
        el("td", { className: "preview error-preview" }, clipped(i.error_preview, i.error_preview && `${i.error_preview.type}: `)),
        el("td", { className: "when", text: when(i.created_at) }),
        el("td", { className: "when", text: when(i.updated_at) }),
      ),
    );
    document.getElementById("rows").replaceChildren(...rows);
    document.getElementById("empty").hidden = rows.length > 0;
    document.getElementById("next").disabled = !state.next;
    document.getElementById("first").disabled = state.cursors.length === 1;
    document.getElementById("page-label").textContent = `page ${state.cursors.length}`;
    document.getElementById("error").hidden = true;
  }

  function showError(error) {
    const box = document.getElementById("error");
    box.textContent = `Cannot load instances: ${error.message}`;
    box.hidden = false;
  }

  const refresh = poll(load, showError);
})();
