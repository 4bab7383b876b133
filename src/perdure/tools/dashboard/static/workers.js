// The workers page: the worker processes on the store and what each serves, live.
"use strict";

(() => {
  const { getJson, el, when, poll } = perdure;
  const all = document.getElementById("all");
  all.checked = new URLSearchParams(location.search).get("all") === "1";
  all.addEventListener("change", () => {
    history.replaceState(null, "", all.checked ? "/workers?all=1" : "/workers");
    refresh();
  });
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());

  const lines = (items) => (items.length ? items.map((text) => el("span", { text })) : ["–"]);

  async function load() {
    const data = await getJson(`/api/workers${all.checked ? "?all=1" : ""}`);
    const rows = data.workers.map((w) =>
      el(
        "tr",
        { "data-worker-id": w.worker_id, className: w.alive ? null : "dead" },
        el("td", { className: "mono", text: w.worker_id }),
        el("td", { text: w.host }),
        el("td", { text: String(w.pid) }),
        el("td", { className: "when", text: when(w.started_at) }),
        el("td", { className: "when", text: when(w.last_seen) + (w.alive ? "" : " (dead)") }),
        el("td", { className: "serves orchestrations" }, ...lines(w.orchestrations)),
        el(
          "td",
          { className: "serves activities" },
          ...lines(w.activities.length ? [...w.activities, `queues: ${w.queues.join(", ")}`] : []),
        ),
      ),
    );
    document.getElementById("rows").replaceChildren(...rows);
    const empty = document.getElementById("empty");
    empty.hidden = rows.length > 0;
    empty.textContent = all.checked ? "No workers in the last day." : "No live workers: nothing runs the instances in this store.";
    document.getElementById("error").hidden = true;
  }

  function showError(error) {
    const box = document.getElementById("error");
    box.textContent = `Cannot load workers: ${error.message}`;
    box.hidden = false;
  }

  const refresh = poll(load, showError);
})();
