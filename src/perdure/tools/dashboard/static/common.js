// Shared helpers of the dashboard pages: the JSON API, formatting and status badges.
"use strict";

const perdure = (() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const csrf = meta("csrf-token");
  const refreshMs = Number(meta("refresh-ms")) || 1500;

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  async function post(url, payload) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Perdure-CSRF": csrf },
      body: JSON.stringify(payload || {}),
    });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$/, "") : "–");

  function badge(status) {
    return el("span", { className: `badge status-${status.toLowerCase()}`, text: status });
  }

  function instanceLink(id) {
    return el("a", { href: `/instance?id=${encodeURIComponent(id)}`, className: "mono", text: id });
  }

  // A value the API cut to a preview ({text, truncated}): one short line, the whole preview on hover.
  function clipped(preview, lead = "") {
    if (!preview) return "–";
    const text = lead + preview.text + (preview.truncated ? "…" : "");
    return el("span", { title: text, text: text.length > 48 ? `${text.slice(0, 47)}…` : text });
  }

  function offset(seconds) {
    if (seconds < 60) return `+${seconds.toFixed(3)}s`;
    if (seconds < 3600) return `+${Math.floor(seconds / 60)}m${(seconds % 60).toFixed(1).padStart(4, "0")}s`;
    return `+${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")}m`;
  }

  // Poll `load` every refreshMs; a failing load shows its error and keeps polling.
  function poll(load, onError) {
    let timer = null;
    const live = document.getElementById("live");
    async function tick() {
      try {
        await load();
        live.classList.remove("stale");
      } catch (error) {
        live.classList.add("stale");
        onError(error);
      }
      timer = setTimeout(tick, refreshMs);
    }
    tick();
    return () => {
      clearTimeout(timer);
      tick();
    };
  }

  return { getJson, post, el, when, badge, instanceLink, clipped, offset, poll };
})();
