// The Request logs page in headless Chromium (playwright-core).
//
// Run by the Rust test `browser::request_logs_page` (tests/gateway/browser.rs)
// against a live gateway whose data it created (two Pools, traffic, an admin
// assigned to the demo Pool only). Environment:
//   CODEX_POOLER_BROWSER_FIXTURE      JSON: base URL, credentials, ids, names
//   CODEX_POOLER_TEST_CHROMIUM        the browser binary (e.g. /usr/bin/chromium)
//   CODEX_POOLER_TEST_PLAYWRIGHT_DIR  a directory with node_modules/playwright-core
//   CODEX_POOLER_SCREENSHOT_DIR       optional: write request-logs.png and
//                                     request-log-detail.png there
// As the owner and then as the admin it signs in through the form, applies
// each filter through the form, checks the warnings for a bogus status and a
// malformed date (rows still listed), opens a row's detail and follows its
// Pool link, and watches live updates (pause, reload, resume). The admin must
// never see the second Pool's rows, accounts or models. Exits non-zero with
// the failed step on the first failure.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

const fixture = JSON.parse(process.env.CODEX_POOLER_BROWSER_FIXTURE || "null");
const chromiumPath = process.env.CODEX_POOLER_TEST_CHROMIUM;
const playwrightDir = process.env.CODEX_POOLER_TEST_PLAYWRIGHT_DIR;
const screenshotDir = process.env.CODEX_POOLER_SCREENSHOT_DIR || "";
if (!fixture || !chromiumPath || !playwrightDir) {
  console.error(
    "CODEX_POOLER_BROWSER_FIXTURE, CODEX_POOLER_TEST_CHROMIUM and " +
      "CODEX_POOLER_TEST_PLAYWRIGHT_DIR must be set (see tests/gateway/browser.rs)",
  );
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(playwrightDir), "noop.js"));
const { chromium } = require("playwright-core");

const BASE = fixture.base_url;
const ROWS = fixture.rows;
const DEMO_ROWS = [ROWS.ok, ROWS.failed, ROWS.rejected];
const ALL_ROWS = [...DEMO_ROWS, ROWS.second];
const LAUNCH_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// Longer than two polls of the page (3 s each), for "did not appear" checks.
const QUIET_MS = 7000;

// The whole run is bounded, so a stuck browser can never hang CI.
setTimeout(() => {
  console.error("FAIL: the browser script did not finish within 5 minutes");
  process.exit(1);
}, 5 * 60 * 1000).unref();

let currentStep = "start";
function check(condition, message) {
  if (!condition) throw new Error(message);
}
function sameSet(actual, expected, what) {
  const a = [...actual].sort();
  const e = [...expected].sort();
  check(
    a.length === e.length && a.every((v, i) => v === e[i]),
    `${what}: expected ${JSON.stringify(e)}, got ${JSON.stringify(a)}`,
  );
}
async function step(name, body) {
  currentStep = name;
  await body();
  console.log(`ok - ${name}`);
}
function utcDay(offsetDays) {
  return new Date(Date.now() + offsetDays * 86_400_000).toISOString().slice(0, 10);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the gateway, as a client would call it ---------------------------------

async function sendRequest(key, model, cacheKey) {
  const res = await fetch(`${BASE}/backend-api/codex/responses`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({
      model,
      instructions: "You are a test.",
      input: [{ type: "message", role: "user", content: [{ type: "input_text", text: "live" }] }],
      tools: [],
      stream: true,
      store: false,
      prompt_cache_key: cacheKey,
    }),
  });
  const id = res.headers.get("x-codex-pooler-request-id");
  await res.text();
  check(res.status === 200 && id, `request through the gateway: HTTP ${res.status}`);
  return id;
}

// --- the page -------------------------------------------------------------

async function rowIds(page) {
  return page.$$eval("#log-rows tr[data-id]", (trs) => trs.map((tr) => tr.dataset.id));
}

async function options(page, name) {
  return page.$$eval(`select[name="${name}"] option`, (opts) =>
    opts
      .filter((o) => o.value !== "")
      .map((o) => ({ value: o.value, text: o.textContent.trim(), selected: o.selected })),
  );
}

async function optionValues(page, name) {
  return (await options(page, name)).map((o) => o.value);
}

/** Waits for the next document load that `action` causes. */
async function loads(page, action) {
  await Promise.all([page.waitForEvent("load"), action()]);
}

async function openList(page, query = "") {
  const res = await page.goto(`${BASE}/admin/request-logs${query}`);
  check(res && res.status() === 200, `GET /admin/request-logs${query}: ${res && res.status()}`);
}

async function submitFilters(page) {
  await loads(page, () => page.click("#log-filters button[type=submit]"));
}

async function openAdvanced(page) {
  const open = await page.$eval("#log-filters details", (d) => d.open);
  if (!open) await page.click("#log-filters details summary");
}

async function warnings(page) {
  return page.$$eval(".warning", (ps) =>
    ps.filter((p) => p.offsetParent !== null).map((p) => p.textContent.trim()),
  );
}

async function signIn(page, who) {
  await page.goto(`${BASE}/admin/request-logs`);
  check(new URL(page.url()).pathname === "/login", `signed out: sent to ${page.url()}`);
  await page.fill('input[name="email"]', who.email);
  await page.fill('input[name="password"]', who.password);
  await loads(page, () => page.click('form[action="/login"] button[type="submit"]'));
  check(new URL(page.url()).pathname === "/admin/pools", `after sign-in: ${page.url()}`);
}

async function screenshot(page, name) {
  if (!screenshotDir) return;
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, name), fullPage: true });
  console.log(`saved ${path.join(screenshotDir, name)}`);
}

/** Waits until the live-update script has refreshed the table once. */
async function liveRunning(page) {
  check(await page.isVisible("#live"), "the live-update control is shown");
  await page.waitForFunction(
    () => (document.getElementById("live-status")?.textContent || "").startsWith("Live ·"),
    null,
    { timeout: 15_000 },
  );
}

async function waitForRow(page, id) {
  await page.waitForSelector(`#log-rows tr[data-id="${id}"]`, { timeout: 15_000 });
}

/**
 * Every filter through the form. `rows` are the rows this operator may see,
 * `demoRows` those of the demo Pool, `pools`, `accounts` and `models` what
 * they are offered.
 */
async function applyEachFilter(page, { rows, demoRows, pools, accounts, models }) {
  await step("the unfiltered list", async () => {
    await openList(page);
    sameSet(await rowIds(page), rows, "rows");
    sameSet(await optionValues(page, "pool_id"), pools.map((p) => p.id), "Pool choices");
    sameSet(await optionValues(page, "upstream_identity_id"), accounts, "account choices");
    sameSet(await optionValues(page, "model"), models, "model choices");
  });

  await step("Pool filter (the select submits itself and narrows the choices)", async () => {
    for (const pool of pools) {
      await openList(page);
      await loads(page, () => page.selectOption('select[name="pool_id"]', pool.id));
      check(new URL(page.url()).searchParams.get("pool_id") === pool.id, `URL ${page.url()}`);
      const expected = pool.id === fixture.demo_pool.id ? demoRows : [ROWS.second];
      sameSet(await rowIds(page), expected, `rows of ${pool.name}`);
      const poolAccounts =
        pool.id === fixture.demo_pool.id
          ? fixture.demo_accounts.map((a) => a.id)
          : [fixture.second_account.id];
      sameSet(await optionValues(page, "upstream_identity_id"), poolAccounts, `accounts of ${pool.name}`);
      const poolModel = pool.id === fixture.demo_pool.id ? fixture.demo_model : fixture.second_model;
      sameSet(await optionValues(page, "model"), [poolModel], `models of ${pool.name}`);
    }
  });

  let failedAccount = "";
  await step("Status filter", async () => {
    for (const [status, expected] of [
      ["failed", [ROWS.failed]],
      ["rejected", [ROWS.rejected]],
    ]) {
      await openList(page);
      await page.selectOption('select[name="status"]', status);
      await submitFilters(page);
      sameSet(await rowIds(page), expected, `rows with status ${status}`);
    }
    await openList(page, "?status=failed");
    failedAccount = await page.$eval(
      `#log-rows tr[data-id="${ROWS.failed}"] td:nth-child(3)`,
      (td) => td.firstChild.textContent.trim(),
    );
    check(failedAccount, "the failed row names its upstream account");
  });

  await step("Upstream account filter", async () => {
    await openList(page);
    const choice = (await options(page, "upstream_identity_id")).find((o) =>
      o.text.startsWith(failedAccount),
    );
    check(choice, `an account choice for ${failedAccount}`);
    await page.selectOption('select[name="upstream_identity_id"]', choice.value);
    await submitFilters(page);
    const ids = await rowIds(page);
    check(ids.includes(ROWS.failed), `the failed row is listed for ${failedAccount}: ${ids}`);
    check(!ids.includes(ROWS.second), "no row of the second Pool's account");
    const accountsShown = await page.$$eval("#log-rows tr[data-id] td:nth-child(3)", (tds) =>
      tds.map((td) => td.firstChild.textContent.trim()),
    );
    check(
      accountsShown.every((a) => a === failedAccount),
      `only ${failedAccount}: ${accountsShown}`,
    );
    const selected = (await options(page, "upstream_identity_id")).filter((o) => o.selected);
    check(selected.length === 1 && selected[0].value === choice.value, "the account stays selected");
  });

  await step("Model filter", async () => {
    for (const model of models) {
      await openList(page);
      await page.selectOption('select[name="model"]', model);
      await submitFilters(page);
      // The rejected row was refused before its body was read: it has no model.
      const expected =
        model === fixture.demo_model ? demoRows.filter((id) => id !== ROWS.rejected) : [ROWS.second];
      sameSet(await rowIds(page), expected, `rows of ${model}`);
    }
  });

  await step("API key filter", async () => {
    await openList(page);
    await page.fill('input[name="api_key"]', fixture.paused_prefix);
    await submitFilters(page);
    sameSet(await rowIds(page), [ROWS.rejected], "rows of the paused key");
    await openList(page);
    await page.fill('input[name="api_key"]', "PAUSED KEY");
    await submitFilters(page);
    sameSet(await rowIds(page), [ROWS.rejected], "rows of the key by label");
  });

  await step("Correlation or row id filter", async () => {
    await openList(page);
    await openAdvanced(page);
    await page.fill('input[name="request_id"]', fixture.client_request_id);
    await submitFilters(page);
    sameSet(await rowIds(page), [ROWS.ok], "rows of the client request id");
    await openList(page);
    await openAdvanced(page);
    await page.fill('input[name="request_id"]', ROWS.failed.slice(-12));
    await submitFilters(page);
    sameSet(await rowIds(page), [ROWS.failed], "rows of an id fragment");
  });

  await step("Date from / Date to filters", async () => {
    await openList(page);
    await openAdvanced(page);
    await page.fill('input[name="date_from"]', utcDay(0));
    await page.fill('input[name="date_to"]', utcDay(0));
    await submitFilters(page);
    sameSet(await rowIds(page), rows, "rows of today");
    await openList(page);
    await openAdvanced(page);
    await page.fill('input[name="date_from"]', utcDay(1));
    await submitFilters(page);
    sameSet(await rowIds(page), [], "rows from tomorrow");
    check(await page.isVisible("text=No requests match."), "the empty state is shown");
  });

  await step("a bogus status and a malformed date warn, and rows still show", async () => {
    await openList(page, "?status=bogus&date_from=2026-13-45");
    const shown = await warnings(page);
    check(
      shown.some((w) => w.startsWith("status: unknown status")),
      `status warning visible: ${JSON.stringify(shown)}`,
    );
    check(
      shown.some((w) => w.startsWith("date_from: not a date")),
      `date warning visible: ${JSON.stringify(shown)}`,
    );
    sameSet(await rowIds(page), rows, "rows despite the ignored filters");
  });
}

async function detailAndPoolLink(page, screenshotName) {
  await step("a row's detail, and its link to the Pool", async () => {
    await openList(page);
    await loads(page, () => page.click(`a[href="/admin/request-logs/${ROWS.ok}"]`));
    check(new URL(page.url()).pathname === `/admin/request-logs/${ROWS.ok}`, `detail URL ${page.url()}`);
    const title = await page.textContent("h1");
    check(title.includes(ROWS.ok.slice(-8)), `detail heading: ${title}`);
    check(await page.isVisible("text=Attempts"), "the attempts are listed");
    check((await page.textContent("dl.facts")).includes(ROWS.ok), "the row id is shown");
    if (screenshotName) await screenshot(page, screenshotName);
    await loads(page, () => page.click(`dl.facts a[href="/admin/pools/${fixture.demo_pool.id}"]`));
    check(new URL(page.url()).pathname === `/admin/pools/${fixture.demo_pool.id}`, `Pool URL ${page.url()}`);
    check((await page.textContent("h1")).includes(fixture.demo_pool.name), "the Pool page opens");
  });
}

function launch() {
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), "cxp-chromium-"));
  return chromium
    .launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: LAUNCH_ARGS,
      viewport: { width: 1440, height: 900 },
    })
    .then((context) => ({ context, userDataDir }));
}

/** Console errors other than failed resource loads (favicon, the 404 page). */
function watchErrors(page, errors) {
  page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) {
      errors.push(`console error: ${msg.text()}`);
    }
  });
}

async function asOwner() {
  const { context, userDataDir } = await launch();
  const errors = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    watchErrors(page, errors);
    await step("owner: sign in through the form", () => signIn(page, fixture.owner));
    await step("owner: the page with live updates running", async () => {
      await openList(page);
      await liveRunning(page);
      sameSet(await rowIds(page), ALL_ROWS, "rows");
      await screenshot(page, "request-logs.png");
    });
    await applyEachFilter(page, {
      rows: ALL_ROWS,
      demoRows: DEMO_ROWS,
      pools: [fixture.demo_pool, fixture.second_pool],
      accounts: [...fixture.demo_accounts.map((a) => a.id), fixture.second_account.id],
      models: [fixture.demo_model, fixture.second_model],
    });
    await detailAndPoolLink(page, "request-log-detail.png");

    await step("owner: a new request appears without a reload", async () => {
      await openList(page);
      await liveRunning(page);
      const id = await sendRequest(fixture.demo_key, fixture.demo_model, "browser-live-1");
      await waitForRow(page, id);
      check((await rowIds(page))[0] === id, "the new row is on top");
    });
    await step("owner: pause stops updates, survives a reload, resume catches up", async () => {
      await page.click("#live-toggle");
      check(new URL(page.url()).searchParams.get("live") === "0", `paused URL ${page.url()}`);
      check((await page.textContent("#live-toggle")).trim() === "Resume live updates", "button says Resume");
      const whilePaused = await sendRequest(fixture.demo_key, fixture.demo_model, "browser-live-2");
      await sleep(QUIET_MS);
      check(!(await rowIds(page)).includes(whilePaused), "no new row while paused");
      await loads(page, () => page.reload());
      check(new URL(page.url()).searchParams.get("live") === "0", "still paused after a reload");
      check((await page.textContent("#live-toggle")).trim() === "Resume live updates", "still Resume");
      check((await rowIds(page)).includes(whilePaused), "the reload lists it");
      const afterReload = await sendRequest(fixture.demo_key, fixture.demo_model, "browser-live-3");
      await sleep(QUIET_MS);
      check(!(await rowIds(page)).includes(afterReload), "no new row while paused after reload");
      await page.click("#live-toggle");
      check(new URL(page.url()).searchParams.get("live") === null, `resumed URL ${page.url()}`);
      await waitForRow(page, afterReload);
      check((await page.textContent("#live-toggle")).trim() === "Pause live updates", "button says Pause");
    });
    check(errors.length === 0, `owner pages logged errors:\n${errors.join("\n")}`);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

async function asAdmin() {
  const { context, userDataDir } = await launch();
  const errors = [];
  const forbidden = [
    fixture.second_pool.name,
    fixture.second_account.label,
    fixture.second_account.email,
    fixture.second_model,
    fixture.second_account.id,
    ROWS.second,
  ];
  const neverShown = async (page, what) => {
    const html = await page.content();
    for (const text of forbidden) {
      check(!html.includes(text), `${what} shows ${text} of the other Pool`);
    }
  };
  try {
    const page = context.pages()[0] || (await context.newPage());
    watchErrors(page, errors);
    await step("admin: sign in through the form", () => signIn(page, fixture.admin));
    // The demo Pool now also holds the rows of the owner's live-update checks.
    let visible = [];
    await step("admin: only the assigned Pool's rows, accounts and models", async () => {
      await openList(page);
      await liveRunning(page);
      visible = await rowIds(page);
      check(visible.length === DEMO_ROWS.length + 3, `the demo Pool's rows: ${visible}`);
      check(DEMO_ROWS.every((id) => visible.includes(id)), `the fixture's rows: ${visible}`);
      const pools = await page.$$eval("#log-rows tr[data-id] td:nth-child(3) small", (s) =>
        s.map((e) => e.textContent.trim()),
      );
      check(pools.every((p) => p === fixture.demo_pool.name), `Pools shown: ${pools}`);
      await neverShown(page, "the list");
    });
    await applyEachFilter(page, {
      rows: visible,
      demoRows: visible,
      pools: [fixture.demo_pool],
      accounts: fixture.demo_accounts.map((a) => a.id),
      models: [fixture.demo_model],
    }).catch((err) => {
      throw new Error(`admin: ${err.message}`);
    });
    await detailAndPoolLink(page, null);
    await step("admin: the other Pool stays out of reach by URL", async () => {
      for (const query of [
        `?pool_id=${fixture.second_pool.id}`,
        `?request_id=${ROWS.second}`,
        `?api_key=second%20key`,
      ]) {
        await openList(page, query);
        sameSet(await rowIds(page), [], `rows for ${query}`);
        if (!query.includes(ROWS.second)) await neverShown(page, `the list with ${query}`);
      }
      await openList(page, `?pool_id=${fixture.second_pool.id}`);
      sameSet(await optionValues(page, "upstream_identity_id"), [], "accounts of a Pool not assigned");
      await openList(page, `?upstream_identity_id=${fixture.second_account.id}`);
      sameSet(await rowIds(page), [], "rows of the other Pool's account");
      const html = await page.content();
      check(!html.includes(fixture.second_account.label), "the other account's label is not shown");
      const res = await page.goto(`${BASE}/admin/request-logs/${ROWS.second}`);
      check(res.status() === 404, `the other Pool's row detail: ${res.status()}`);
      await neverShown(page, "the refused detail");
    });
    await step("admin: live updates bring the assigned Pool's rows only", async () => {
      await openList(page);
      await liveRunning(page);
      const other = await sendRequest(fixture.second_key, fixture.second_model, "browser-admin-2");
      const mine = await sendRequest(fixture.demo_key, fixture.demo_model, "browser-admin-1");
      await waitForRow(page, mine);
      await sleep(QUIET_MS);
      check(!(await rowIds(page)).includes(other), "the other Pool's new row never appears");
      await neverShown(page, "the live list");
    });
    check(errors.length === 0, `admin pages logged errors:\n${errors.join("\n")}`);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

try {
  await asOwner();
  await asAdmin();
  console.log("all browser checks passed");
} catch (err) {
  console.error(`FAIL at "${currentStep}": ${err.message}`);
  process.exit(1);
}
