// The first-run story in headless Chromium (playwright-core).
//
// Run by the Rust test `browser::first_run_story` (tests/gateway/browser.rs)
// against a live gateway on an empty database. Environment:
//   CODEX_POOLER_BROWSER_FIXTURE      JSON: base URL, the bootstrap link, the
//                                     owner to create, the Pool, an auth.json
//                                     from the simulator, the key's name
//   CODEX_POOLER_TEST_CHROMIUM        the browser binary (e.g. /usr/bin/chromium)
//   CODEX_POOLER_TEST_PLAYWRIGHT_DIR  a directory with node_modules/playwright-core
//   CODEX_POOLER_SCREENSHOT_DIR       optional: write first-run-*.png there, one
//                                     per page visited
// Through the pages only (forms and links, as an operator would): open the
// bootstrap link, create the owner, sign in, create a Pool, paste the
// auth.json, refresh it and watch its quota countdown, link a second account
// with a device code, create an API key and copy it from its page, call the
// gateway with it, watch the key's last-used time appear on the Pool page,
// create a limited key in the wizard, read the Pools list's traffic, find
// every step in the Audit logs and open one, then turn on two-factor sign-in
// and sign in again with a recovery code. Exits non-zero with the failed step on the
// first failure.

import { createHmac } from "node:crypto";
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
// How long the Pool page may take to show the key's first use.
const LAST_USED_TIMEOUT_MS = 15_000;

// The whole run is bounded, so a stuck browser can never hang CI.
setTimeout(() => {
  console.error("FAIL: the browser script did not finish within 3 minutes");
  process.exit(1);
}, 3 * 60 * 1000).unref();

let currentStep = "start";
function check(condition, message) {
  if (!condition) throw new Error(message);
}
async function step(name, body) {
  currentStep = name;
  await body();
  console.log(`ok - ${name}`);
}

/** Waits for the next document load that `action` causes. */
async function loads(page, action) {
  await Promise.all([page.waitForEvent("load"), action()]);
}

function pathOf(page) {
  return new URL(page.url()).pathname;
}

async function screenshot(page, name) {
  if (!screenshotDir) return;
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, name), fullPage: true });
  console.log(`saved ${path.join(screenshotDir, name)}`);
}

async function notices(page) {
  return page.$$eval('[role="status"]', (ps) => ps.map((p) => p.textContent.trim()));
}

async function alerts(page) {
  return page.$$eval('[role="alert"]', (ps) => ps.map((p) => p.textContent.trim()));
}

/** Submits the form whose action is `action` and waits for the page it leads to. */
async function submit(page, action) {
  await loads(page, () => page.click(`form[action="${action}"] button[type="submit"]`));
}

/** Follows the top navigation link to `href`. */
async function navigate(page, href) {
  await loads(page, () => page.click(`header nav a[href="${href}"]`));
  check(pathOf(page) === href, `nav link to ${href} opened ${page.url()}`);
}

/** The text of `column` in the row of the table whose first cell is `first`. */
async function cell(page, first, column) {
  return page.evaluate(
    ({ first, column }) => {
      for (const table of document.querySelectorAll("table")) {
        const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
        const col = heads.indexOf(column);
        if (col < 0) continue;
        for (const tr of table.querySelectorAll("tbody tr")) {
          const cells = tr.querySelectorAll("td");
          const head = cells[0] && (cells[0].querySelector("a") || cells[0]);
          if (head && head.textContent.trim() === first && cells[col]) {
            return cells[col].textContent.trim();
          }
        }
      }
      return null;
    },
    { first, column },
  );
}

/** A Codex-style request through the gateway, as a client holding the key would send it. */
async function callGateway(key) {
  const res = await fetch(`${BASE}/backend-api/codex/responses`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: fixture.model,
      instructions: "You are a test.",
      input: [{ type: "message", role: "user", content: [{ type: "input_text", text: "hi" }] }],
      tools: [],
      stream: true,
      store: false,
      prompt_cache_key: "first-run-1",
    }),
  });
  const body = await res.text();
  check(res.status === 200, `request with the copied key: HTTP ${res.status}: ${body.slice(0, 300)}`);
  check(body.includes("response.completed"), `the stream completes: ${body.slice(-300)}`);
}

/** The current 6-digit TOTP code (RFC 6238: SHA-1, 30 s) of a base32 secret. */
function totpCode(secretBase32) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const ch of secretBase32.replace(/=+$/, "").toUpperCase()) {
    bits += alphabet.indexOf(ch).toString(2).padStart(5, "0");
  }
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(value).padStart(6, "0");
}

// Known console errors, each waiting for its fix; delete the entry with the fix.
// The slug field's pattern `[a-z0-9-]{1,64}` (templates/pools.html) is invalid
// under the `v` flag browsers compile pattern attributes with, so Chromium
// ignores it and the slug is checked by the server only; `[a-z0-9\-]{1,64}` works.
const KNOWN_CONSOLE_ERRORS = [];

/** Console errors other than failed resource loads (favicon) and the known ones. */
function watchErrors(page, errors) {
  page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    const text = msg.text();
    if (msg.type() !== "error" || text.startsWith("Failed to load resource")) return;
    if (KNOWN_CONSOLE_ERRORS.some((known) => text.startsWith(known))) {
      console.log(`known console error (not failing the run): ${text}`);
      return;
    }
    errors.push(`console error: ${text}`);
  });
}

async function story(page) {
  const owner = fixture.owner;
  let poolPath = "";
  let rawKey = "";
  let adminPassword = "";

  await step("the bootstrap link opens the owner form with the token filled in", async () => {
    const res = await page.goto(fixture.bootstrap_link);
    check(res && res.status() === 200, `GET the bootstrap link: ${res && res.status()}`);
    check((await page.textContent("h1")).trim() === "Create the owner", "the bootstrap page");
    const token = new URL(fixture.bootstrap_link).searchParams.get("token");
    check((await page.inputValue('input[name="token"]')) === token, "the token is filled in");
    await page.fill('input[name="email"]', owner.email);
    await page.fill('input[name="password"]', owner.password);
    await page.fill('input[name="password_repeat"]', owner.password);
    await screenshot(page, "first-run-bootstrap.png");
    await submit(page, "/bootstrap");
    check(pathOf(page) === "/login", `after bootstrap: ${page.url()}`);
  });

  await step("sign in as the new owner", async () => {
    check((await notices(page)).length === 1, "the login page confirms the owner exists");
    await page.fill('input[name="email"]', owner.email);
    await page.fill('input[name="password"]', owner.password);
    await screenshot(page, "first-run-login.png");
    await submit(page, "/login");
    if (pathOf(page) === "/admin/password") {
      // Only shown when the account must choose its own password first.
      await screenshot(page, "first-run-password.png");
      const chosen = `${owner.password}-2`;
      await page.fill('input[name="current_password"]', owner.password);
      await page.fill('input[name="password"]', chosen);
      await page.fill('input[name="password_repeat"]', chosen);
      await submit(page, "/admin/password");
    }
    check(pathOf(page) === "/admin/pools", `after sign-in: ${page.url()}`);
    check((await page.textContent("header .who")).includes(owner.email), "signed in as the owner");
  });

  await step("create a Pool from the empty Pools page", async () => {
    check((await page.textContent("tbody")).includes("No Pools yet"), "no Pools on a first run");
    await page.fill('form[action="/admin/pools"] input[name="slug"]', fixture.pool.slug);
    await page.fill('form[action="/admin/pools"] input[name="name"]', fixture.pool.name);
    await screenshot(page, "first-run-pools.png");
    await submit(page, "/admin/pools");
    poolPath = pathOf(page);
    check(/^\/admin\/pools\/[^/]+$/.test(poolPath), `the new Pool's page: ${page.url()}`);
    check((await page.textContent("h1")).includes(fixture.pool.name), "the Pool's name heads its page");
  });

  await step("import the auth.json from the simulator", async () => {
    check((await page.textContent("body")).includes("No accounts in this Pool yet"), "no accounts yet");
    await page.fill(`form[action="${poolPath}/upstreams"] textarea[name="auth_json"]`, fixture.auth_json);
    await submit(page, `${poolPath}/upstreams`);
    check(pathOf(page) === poolPath, `back on the Pool page: ${page.url()}`);
    check((await notices(page)).some((n) => n.includes("Account imported")), "the import is confirmed");
    check((await alerts(page)).length === 0, `no error: ${await alerts(page)}`);
    check((await page.textContent("body")).includes(fixture.account_email), "the account is listed");
    await screenshot(page, "first-run-pool-imported.png");
  });

  await step("refresh the account now and watch its quota reset count down", async () => {
    check(await page.evaluate(() => typeof window.htmx === "object"), "the vendored htmx is loaded");
    await loads(page, () => page.click(`form[action^="${poolPath}/upstreams/"][action$="/refresh"] button`));
    check(pathOf(page) === poolPath, `back on the Pool page: ${page.url()}`);
    check((await notices(page)).some((n) => n.includes("Tokens refreshed")), "the refresh is confirmed");
    const countdown = 'main [data-countdown-seconds]';
    check((await page.$$(countdown)).length > 0, "quota windows show a reset countdown");
    // The server writes whole seconds ("17999s"); the script turns them into
    // a live "4h 59m" and keeps counting.
    await page.waitForFunction(
      (sel) => {
        const el = document.querySelector(sel);
        return el.dataset.countdownSeen && /^(\d+d \d+h|\d+h \d+m|\d+m \d+s|\d+s|now)$/.test(el.textContent)
          && el.textContent !== `${el.dataset.countdownSeconds}s`;
      },
      countdown,
      { timeout: 5_000 },
    );
    check(!(await page.textContent("main")).includes("1970-"), "reset times are real dates");
    await screenshot(page, "first-run-pool-quota.png");
  });

  await step("link a second account with a device code", async () => {
    await page.fill(`form[action="${poolPath}/device-links"] input[name="label"]`, "Device account");
    await submit(page, `${poolPath}/device-links`);
    check(pathOf(page).startsWith(`${poolPath}/device-links/`), `the link page: ${page.url()}`);
    const code = (await page.textContent(".user-code")).trim();
    check(/^SIM/.test(code), `a user code is shown: ${code}`);
    check((await page.textContent("main")).includes("/codex/device"), "where to enter the code");
    await screenshot(page, "first-run-device-link.png");
    // The page checks by itself (the simulator accepts the code on its second poll).
    await page.waitForURL((url) => url.pathname === poolPath, { timeout: 20_000 });
    await page.waitForLoadState("load");
    check(
      (await notices(page)).some((n) => n.includes("linked with a device code")),
      `the link is confirmed: ${await notices(page)}`,
    );
    check((await page.textContent("#upstreams-table")).includes("Device account"), "the account is listed");
  });

  await step("create an API key and copy it from its page", async () => {
    await page.fill(`form[action="${poolPath}/api-keys"] input[name="name"]`, fixture.key_name);
    await submit(page, `${poolPath}/api-keys`);
    check((await page.textContent("h1")).includes(fixture.key_name), "the key's page names it");
    // What an operator does: select the field and copy its value.
    await page.click("#raw-key");
    rawKey = await page.evaluate(() => {
      const input = document.getElementById("raw-key");
      input.select();
      return input.value.slice(input.selectionStart, input.selectionEnd);
    });
    check(rawKey.length > 40 && !/\s/.test(rawKey), `a raw key is shown: ${JSON.stringify(rawKey)}`);
    await screenshot(page, "first-run-key-created.png");
    await loads(page, () => page.click(`main a[href="${poolPath}#keys"]`));
    check(pathOf(page) === poolPath, `back to the Pool: ${page.url()}`);
    check(!(await page.content()).includes(rawKey), "the raw key is never shown again");
    const prefix = await cell(page, fixture.key_name, "Prefix");
    check(prefix && rawKey.startsWith(prefix), `the key's prefix ${prefix} is listed`);
    const lastUsed = await cell(page, fixture.key_name, "Last used");
    check(lastUsed === "never", `an unused key: last used ${JSON.stringify(lastUsed)}`);
  });

  await step("a request with the copied key succeeds", () => callGateway(rawKey));

  await step("the Pool page shows when the key was last used", async () => {
    // The gateway records the use through its batched writer: reload until it shows.
    const deadline = Date.now() + LAST_USED_TIMEOUT_MS;
    let lastUsed = "never";
    while (lastUsed === "never" && Date.now() < deadline) {
      await loads(page, () => page.reload());
      lastUsed = await cell(page, fixture.key_name, "Last used");
    }
    check(
      /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})? UTC$/.test(lastUsed || ""),
      `last used is a time: ${JSON.stringify(lastUsed)}`,
    );
    await screenshot(page, "first-run-key-used.png");
  });

  await step("create a key with models, enforcement and limits in the wizard", async () => {
    await loads(page, () => page.click(`a[href="${poolPath}/api-keys/new"]`));
    const next = () => loads(page, () => page.click('button[name="go"]:not(.small)'));
    await page.fill('input[name="name"]', "ci robot");
    await page.fill('input[name="expires_in_days"]', "90");
    await next();
    check((await page.textContent('[aria-current="step"]')).includes("Models"), "step 2: models");
    await page.fill('textarea[name="allowed_models"]', fixture.model);
    await next();
    check((await page.textContent('[aria-current="step"]')).includes("Enforcement"), "step 3");
    await page.check('input[name="reasoning_mode"][value="maximum"]');
    await page.selectOption('select[name="reasoning_effort"]', "high");
    await next();
    check((await page.textContent('[aria-current="step"]')).includes("Limits"), "step 4");
    await page.fill('input[name="max_requests_per_minute"]', "60");
    await page.fill('input[name="max_spend_usd_per_month"]', "20");
    await next();
    check((await page.textContent('[aria-current="step"]')).includes("Review"), "step 5");
    const review = await page.textContent("dl.facts");
    for (const shown of ["ci robot", "in 90 days", fixture.model, "up to high", "$20.00"]) {
      check(review.includes(shown), `the review shows ${shown}: ${review}`);
    }
    await screenshot(page, "first-run-key-wizard.png");
    await submit(page, `${poolPath}/api-keys`);
    check((await page.textContent("h1")).includes("ci robot"), "the wizard's key is created");
  });

  await step("the Pools page counts the accounts, the keys and the traffic", async () => {
    await navigate(page, "/admin/pools");
    check((await cell(page, fixture.pool.name, "Usable / accounts")) === "2 / 2", "two usable accounts");
    check((await cell(page, fixture.pool.name, "Active keys")) === "2", "two active keys");
    check((await cell(page, fixture.pool.name, "Requests 5 h")) === "1", "one request in the last 5 h");
    check((await page.$$("svg.traffic rect.all")).length > 0, "the 24 h chart draws the hour");
    await screenshot(page, "first-run-pools-list.png");
  });

  await step("every step is in the Audit logs", async () => {
    await navigate(page, "/admin/audit");
    const rows = await page.$$eval("tbody tr", (trs) =>
      trs.map((tr) => ({
        action: (tr.querySelector("td code")?.textContent || "").trim(),
        text: tr.textContent,
      })),
    );
    const expected = {
      "auth.bootstrap": 1,
      "auth.login": 1,
      "pool.create": 1,
      "upstream.import": 1,
      "upstream_account.refresh": 1,
      "upstream_account.device_link_start": 1,
      "upstream_account.oauth_device_link": 1,
      "api_key.create": 2,
    };
    for (const [action, count] of Object.entries(expected)) {
      const found = rows.filter((r) => r.action === action);
      check(found.length === count, `${action} listed ${count}×: ${JSON.stringify(rows.map((r) => r.action))}`);
      check(found.every((r) => r.text.includes(owner.email)), `${action} names the owner`);
    }
    await screenshot(page, "first-run-audit-logs.png");
    await loads(page, () => page.click("tbody tr td a"));
    check(/^\/admin\/audit\/[^/]+$/.test(pathOf(page)), `an event's detail: ${page.url()}`);
    check((await page.textContent("main")).includes(owner.email), "the detail names the actor");
    await screenshot(page, "first-run-audit-event.png");
  });

  await step("the Operators page lists the owner", async () => {
    await navigate(page, "/admin/operators");
    check((await cell(page, owner.email, "Role")) === "owner", "the owner is listed with its role");
    await screenshot(page, "first-run-operators.png");
  });

  await step("create an admin for the Pool, with a temporary password shown once", async () => {
    await page.fill('form[action="/admin/operators"] input[name="email"]', fixture.admin_email);
    await page.check('form[action="/admin/operators"] input[name="role"][value="admin"]');
    await page.check(`form[action="/admin/operators"] input[name="pool"][value="${poolPath.split("/").pop()}"]`);
    await submit(page, "/admin/operators");
    check((await page.textContent("h1")).includes(fixture.admin_email), "the operator is created");
    adminPassword = await page.inputValue("#temporary-password");
    check(adminPassword.length >= 12, "a temporary password is shown");
    await screenshot(page, "first-run-operator-created.png");
  });

  await step("turn on two-factor sign-in and sign in again with a recovery code", async () => {
    await loads(page, () => page.click('header a[href="/admin/security"]'));
    check((await page.textContent("h1")).trim() === "Security", "the Security page");
    await screenshot(page, "first-run-security.png");
    await page.fill('form[action="/admin/security/totp/setup"] input[name="current_password"]', owner.password);
    await submit(page, "/admin/security/totp/setup");
    const secret = await page.inputValue("#totp-secret");
    check(/^[A-Z2-7]{32}$/.test(secret), `a base32 secret is shown: ${secret}`);
    await screenshot(page, "first-run-totp-setup.png");
    await page.fill('input[name="code"]', totpCode(secret));
    await submit(page, "/admin/security/totp/enable");
    const codes = await page.$$eval("#recovery-codes li", (lis) => lis.map((li) => li.textContent.trim()));
    check(codes.length === 10, `ten recovery codes: ${codes.length}`);
    await screenshot(page, "first-run-recovery-codes.png");
    await submit(page, "/logout");
    await page.fill('input[name="email"]', owner.email);
    await page.fill('input[name="password"]', owner.password);
    await submit(page, "/login");
    check(pathOf(page) === "/login/totp", `the second step is asked for: ${page.url()}`);
    await screenshot(page, "first-run-login-totp.png");
    await page.fill('input[name="code"]', codes[0]);
    await submit(page, "/login/totp");
    check(pathOf(page) === "/admin/pools", `signed in with a recovery code: ${page.url()}`);
  });

  await step("the new admin must replace the temporary password, then sees only the Pool", async () => {
    await submit(page, "/logout");
    await page.fill('input[name="email"]', fixture.admin_email);
    await page.fill('input[name="password"]', adminPassword);
    await submit(page, "/login");
    check(pathOf(page) === "/admin/password", `the password page comes first: ${page.url()}`);
    await screenshot(page, "first-run-password-change.png");
    const chosen = "admin-chosen-password-1";
    await page.fill('input[name="current_password"]', adminPassword);
    await page.fill('input[name="password"]', chosen);
    await page.fill('input[name="password_repeat"]', chosen);
    await submit(page, "/admin/password");
    check(pathOf(page) === "/admin/pools", `then the Pools: ${page.url()}`);
    check((await cell(page, fixture.pool.name, "Status")) === "active", "the assigned Pool is listed");
    check((await page.$$('header nav a[href="/admin/operators"]')).length === 0, "no Operators for an admin");
  });
}

const userDataDir = mkdtempSync(path.join(os.tmpdir(), "cxp-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: chromiumPath,
  headless: true,
  args: LAUNCH_ARGS,
  viewport: { width: 1280, height: 800 },
});
let failed = false;
try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  watchErrors(page, errors);
  await story(page);
  check(errors.length === 0, `the pages logged errors:\n${errors.join("\n")}`);
  console.log("all first-run checks passed");
} catch (err) {
  console.error(`FAIL at "${currentStep}": ${err.message}`);
  failed = true;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
