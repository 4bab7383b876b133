// The schedules page: every schedule with its state and counts, live; pause, resume, trigger, delete.
"use strict";

(() => {
  const { getJson, post, el, when, instanceLink, poll } = perdure;
  const STATE_BADGES = { active: "running", paused: "suspended", ended: "completed", failed: "failed" };

  function every(seconds) {
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) {
        parts.push(`${Math.floor(seconds / size)}${unit}`);
        seconds %= size;
      }
    }
    if (seconds || !parts.length) parts.push(`${seconds}s`);
    return parts.join("");
  }

  function whenText(s) {
    return s.cron ? `cron ${s.cron} (${s.timezone})` : `every ${every(s.every_seconds)}`;
  }

  function button(label, command, schedule, className = "secondary") {
    const node = el("button", { type: "button", className, text: label, "data-command": command });
    node.addEventListener("click", async () => {
      const payload = {};
      if (command === "pause") payload.note = prompt(`Pause ${schedule.schedule_id}: why? (optional)`) || null;
      if (command === "delete" && !confirm(`Delete schedule ${schedule.schedule_id}? Runs already started go on.`)) return;
      try {
        await post(`/api/schedule/${command}?id=${encodeURIComponent(schedule.schedule_id)}`, payload);
        flash(`${command} requested for ${schedule.schedule_id}; it takes effect at the schedule's next turn.`);
        refresh();
      } catch (error) {
        showError(error, `Cannot ${command} ${schedule.schedule_id}`);
      }
    });
    return node;
  }

  function actions(s) {
    const buttons = el("div", { className: "row-actions" });
    if (s.state !== "ended" && s.state !== "failed") {
      buttons.append(
        s.state === "paused" ? button("Resume", "resume", s) : button("Pause", "pause", s),
        button("Trigger", "trigger", s),
      );
    }
    buttons.append(button("Delete", "delete", s, "danger"));
    return el("td", {}, buttons);
  }

  function lastRun(s) {
    if (s.running) return el("span", {}, "running ", instanceLink(s.running));
    if (!s.last_run_id) return "–";
    const cell = el("span", {}, instanceLink(s.last_run_id));
    if (s.last_error) cell.append(el("div", { className: "error-message", text: s.last_error }));
    return cell;
  }

  async function load() {
    const data = await getJson("/api/schedules");
    const rows = data.schedules.map((s) =>
      el(
        "tr",
        { "data-schedule-id": s.schedule_id, "data-state": s.state },
        el("td", {}, el("a", { href: `/instance?id=${encodeURIComponent(s.instance_id)}`, className: "mono", text: s.schedule_id })),
        el("td", { text: s.name }),
        el("td", { className: "mono", text: whenText(s) }),
        el("td", { text: s.overlap }),
        el(
          "td",
          { title: s.note || "" },
          el("span", { className: `badge status-${STATE_BADGES[s.state] || "pending"}`, text: s.state }),
          s.note ? el("div", { className: "value-note", text: s.note }) : "",
        ),
        el("td", { className: "when", text: when(s.next_fire_at) }),
        el("td", { text: `${s.fires} · ${s.skipped} · ${s.missed}` }),
        el("td", {}, lastRun(s)),
        actions(s),
      ),
    );
    document.getElementById("rows").replaceChildren(...rows);
    document.getElementById("empty").hidden = rows.length > 0;
    document.getElementById("error").hidden = true;
  }

  function flash(text) {
    const box = document.getElementById("flash");
    box.textContent = text;
    box.hidden = false;
  }

  function showError(error, what = "Cannot load schedules") {
    const box = document.getElementById("error");
    box.textContent = `${what}: ${error.message}`;
    box.hidden = false;
  }

  const refresh = poll(load, showError);
})();
