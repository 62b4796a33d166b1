// Request logs page (/admin/request-logs): small progressive enhancements.
// The page works without this file; with it:
//  * changing the Pool submits the filters, so the account and model choices
//    narrow to that Pool at once (the account choice is cleared first: it
//    belongs to the previous Pool);
//  * on the first page, the JSON twin (/admin/api/request-logs, same filters,
//    read with the session cookie) is polled every few seconds; rows newer than
//    the newest shown are added on top, shown rows whose outcome changed are
//    redrawn, and at most PAGE_SIZE rows are kept. "Pause live updates" stops
//    it; the paused state is kept in the URL (live=0), so it survives a reload
//    and is carried by the filter form.
// Rows are built with the same labels, hints and formats as the server's
// (labels come from the page's data-labels attribute).
"use strict";

(function () {
  const PAGE_SIZE = 50;
  const POLL_MS = 3000;

  const form = document.getElementById("log-filters");
  const poolSelect = form && form.elements.namedItem("pool_id");
  if (poolSelect) {
    poolSelect.addEventListener("change", function () {
      const account = form.elements.namedItem("upstream_identity_id");
      if (account) account.value = "";
      if (form.requestSubmit) form.requestSubmit();
      else form.submit();
    });
  }

  const live = document.getElementById("live");
  const tbody = document.getElementById("log-rows");
  if (!live || !tbody || !window.fetch) return;
  const toggle = document.getElementById("live-toggle");
  const status = document.getElementById("live-status");
  const older = document.getElementById("log-older");
  const clear = document.getElementById("log-clear");
  let labels = { hints: {}, transports: {}, icons: {} };
  try {
    labels = JSON.parse(live.dataset.labels || "{}");
  } catch (_) {
    /* keep the empty tables: rows still show, without hints */
  }

  let paused = new URLSearchParams(location.search).get("live") === "0";
  let timer = null;
  let inFlight = false;

  // --- formatting, as src/admin/console/logs.rs `view` does it -------------

  function time(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function usage(r) {
    if (r.usage_status === "usage_known") {
      return "in " + (r.input_tokens || 0) + " (cached " + (r.cached_input_tokens || 0) +
        ") · out " + (r.output_tokens || 0) + " (reasoning " + (r.reasoning_tokens || 0) + ")";
    }
    if (r.usage_status === "usage_unknown") return "no usage reported (usage_unknown)";
    if (r.usage_status === "not_applicable") return "no usage: not sent upstream";
    return "not settled yet";
  }

  function cost(r) {
    if (r.settled_cost_micros !== null && r.settled_cost_micros !== undefined) {
      return "$" + (r.settled_cost_micros / 1e6).toFixed(6);
    }
    if (r.pricing_status && r.pricing_status !== "priced") return r.pricing_status;
    return "";
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children || []) {
      if (child === null || child === undefined || child === "") continue;
      node.append(child);
    }
    return node;
  }

  function cursorOf(r) {
    return r.admitted_at + "_" + r.id;
  }

  // Newer first: by admission time, then id (UUIDv7 text), like the server.
  function newer(a, b) {
    const [at, aid] = [Number(a.split("_")[0]), a.slice(a.indexOf("_") + 1)];
    const [bt, bid] = [Number(b.split("_")[0]), b.slice(b.indexOf("_") + 1)];
    return at > bt || (at === bt && aid > bid);
  }

  // A change of any of these redraws a shown row.
  function signature(r) {
    return [r.status, r.usage_status, r.completed_at, r.last_error_code,
      r.upstream_account_label, r.settled_cost_micros].join("|");
  }

  function row(r) {
    const error = r.last_error_code || "";
    const hint = labels.hints[error] || "";
    // A row refused before its body was read has its endpoint as the model.
    const requested = r.requested_model === r.endpoint ? "" : r.requested_model;
    const model = [requested, r.reasoning_effort, r.service_tier]
      .filter(Boolean).join(" · ");
    const tr = el("tr", {
      class: "status-" + r.status,
      "data-id": r.id,
      "data-cursor": cursorOf(r),
      "data-signature": signature(r),
    }, [
      el("td", { title: r.status }, [
        el("span", { "aria-label": r.status }, [labels.icons[r.status] || "•"]),
      ]),
      el("td", { class: "num nowrap" }, [
        time(r.admitted_at), el("br"),
        el("a", { href: "/admin/request-logs/" + encodeURIComponent(r.id) },
          [el("code", {}, [r.id.slice(-8)])]),
      ]),
      el("td", {}, [r.upstream_account_label || "", el("br"),
        el("small", {}, [r.pool_name || ""])]),
      el("td", {}, [r.upstream_account_plan
        ? el("span", { class: "badge" }, [r.upstream_account_plan]) : ""]),
      el("td", {}, [model, el("br"),
        el("small", {}, [r.api_key_label || r.api_key_prefix || ""])]),
      el("td", {}, [labels.transports[r.transport] || "other"]),
      el("td", {}, [el("code", {}, [r.endpoint]), el("br"),
        el("small", { class: "num" }, [r.total_ms !== null && r.total_ms !== undefined
          ? r.total_ms + " ms" : ""])]),
      el("td", { class: "num" }, [el("small", {}, [usage(r)]), el("br"), cost(r)]),
      el("td", {}, error ? [el("code", {}, [error]),
        hint ? el("br") : "", hint ? el("small", {}, [hint]) : ""] : []),
    ]);
    tr.classList.add("live-new");
    return tr;
  }

  // --- the poll ------------------------------------------------------------

  function filterQuery() {
    const params = new URLSearchParams(location.search);
    params.delete("before");
    params.delete("live");
    params.set("limit", String(PAGE_SIZE));
    return params.toString();
  }

  function shownRows() {
    return Array.from(tbody.querySelectorAll("tr[data-cursor]"));
  }

  function apply(data) {
    const shown = shownRows();
    const byId = new Map(shown.map((tr) => [tr.dataset.id, tr]));
    const newest = shown.length ? shown[0].dataset.cursor : null;
    const fresh = [];
    for (const r of data) {
      const existing = byId.get(r.id);
      if (existing) {
        // A server-rendered row has no signature yet: compare its status.
        const changed = existing.dataset.signature === undefined
          ? existing.className !== "status-" + r.status
          : existing.dataset.signature !== signature(r);
        if (changed) existing.replaceWith(row(r));
        else existing.dataset.signature = signature(r);
      } else if (newest === null || newer(cursorOf(r), newest)) {
        fresh.push(r);
      }
    }
    if (fresh.length) {
      const empty = document.getElementById("log-empty");
      if (empty) empty.remove();
      // `data` is newest first, like the table: keep that order on top.
      const first = tbody.firstChild;
      const frag = document.createDocumentFragment();
      for (const r of fresh) frag.append(row(r));
      tbody.insertBefore(frag, first);
    }
    const rows = shownRows();
    if (rows.length > PAGE_SIZE) {
      for (const tr of rows.slice(PAGE_SIZE)) tr.remove();
      // The older-page link continues after the last row still shown.
      const last = rows[PAGE_SIZE - 1].dataset.cursor;
      const params = new URLSearchParams(location.search);
      params.set("before", last);
      if (older) {
        older.querySelector("a").href = "/admin/request-logs?" + params.toString();
        older.hidden = false;
      }
    }
    return fresh.length;
  }

  async function poll() {
    if (paused || inFlight || document.hidden) return;
    inFlight = true;
    try {
      const res = await fetch("/admin/api/request-logs?" + filterQuery(), {
        credentials: "same-origin",
        headers: { accept: "application/json" },
      });
      if (res.status === 401) {
        stop();
        status.textContent = "Live updates stopped: sign in again.";
        return;
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const body = await res.json();
      const added = apply(body.data || []);
      status.textContent = "Live · updated " + new Date().toLocaleTimeString() +
        (added ? " · " + added + " new" : "");
    } catch (err) {
      status.textContent = "Live updates: could not refresh (" + err.message + "); retrying.";
    } finally {
      inFlight = false;
    }
  }

  function stop() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  function start() {
    stop();
    timer = setInterval(poll, POLL_MS);
    poll();
  }

  // Keeps `live=0` in the URL, the form and the Clear link while paused.
  function remember() {
    const url = new URL(location.href);
    if (paused) url.searchParams.set("live", "0");
    else url.searchParams.delete("live");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    let hidden = form && form.querySelector("input[type=hidden][name=live]");
    if (paused && form && !hidden) {
      hidden = el("input", { type: "hidden", name: "live", value: "0" });
      form.append(hidden);
    } else if (!paused && hidden) {
      hidden.remove();
    }
    if (clear) clear.href = "/admin/request-logs" + (paused ? "?live=0" : "");
  }

  function render() {
    toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
    toggle.setAttribute("aria-pressed", paused ? "true" : "false");
    live.dataset.paused = paused ? "true" : "false";
    if (paused) status.textContent = "Live updates paused.";
  }

  toggle.addEventListener("click", function () {
    paused = !paused;
    remember();
    render();
    if (paused) stop();
    else start();
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !paused) poll();
  });

  live.hidden = false;
  render();
  if (!paused) start();
})();
