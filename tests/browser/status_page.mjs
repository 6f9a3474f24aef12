// Status page in a real browser: Debian's Chromium, headless, driven by playwright-core (no
// browser download). Starts the real meridian binary with health checks against two small HTTP
// servers run here, opens `GET /` on the admin listener, takes a screenshot, stops one health
// server and expects the page to turn that region red within 3 s.
//
// Why fall = 1 with interval = 1s: after the server stops, the next probe (at most 1 s later)
// is refused at once and, with fall = 1, marks the endpoint down; the page polls /status every
// second, so the DOM shows red at most ~2 s (plus a few ms of probe, fetch and redraw) after the
// stop: a second of margin on the 3 s bound. fall = 2 would make the worst case 3 s plus those
// milliseconds, i.e. no margin at all.
//
// Usage: node status_page.mjs --bin PATH/TO/meridian [--screenshot-dir DIR]
// Prints one line per check and closes with "browser: N passed, N failed"; exit 1 on failure.
// All traffic stays on 127.0.0.1.

import { spawn } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const BIN = path.resolve(opt("--bin", path.join(repo, "target/debug/meridian")));
const SHOTS = path.resolve(opt("--screenshot-dir", fs.mkdtempSync(path.join(os.tmpdir(), "meridian-shots-"))));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let passed = 0;
let failed = 0;
function check(ok, what, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok" : "FAIL"} - ${what}${detail ? ": " + detail : ""}`);
  return ok;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A health endpoint: 200 "ok" on every path until stopped. */
async function healthServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "x-load": "0.25" });
    res.end("ok\n");
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}/health`,
    stop: () =>
      new Promise((r) => {
        server.close(() => r());
        // Pooled keep-alive connections must go too, or the prober could keep using one.
        server.closeAllConnections();
      }),
  };
}

/** A DNS query for NAME/A (RD clear, no EDNS). */
function query(id, name) {
  const labels = name.split(".").filter(Boolean);
  const q = [];
  for (const l of labels) q.push(l.length, ...Buffer.from(l, "ascii"));
  q.push(0, 0, 1, 0, 1);
  return Buffer.from([id >> 8, id & 255, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...q]);
}

async function sendQueries(port, name, count) {
  const sock = dgram.createSocket("udp4");
  let answered = 0;
  sock.on("message", () => answered++);
  for (let i = 0; i < count; i++) {
    sock.send(query(i + 1, name), port, "127.0.0.1");
    if (i % 10 === 9) await sleep(5);
  }
  await sleep(300);
  sock.close();
  return answered;
}

async function getStatus(admin) {
  const r = await fetch(`${admin}/status`);
  if (!r.ok) throw new Error(`GET /status: HTTP ${r.status}`);
  return r.json();
}

async function waitFor(what, ms, fn) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try {
      if (await fn()) return true;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? ": " + last.message : ""}`);
}

async function main() {
  if (!fs.existsSync(BIN)) throw new Error(`no meridian binary at ${BIN} (cargo build first)`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  const eu = await healthServer();
  const us = await healthServer();
  const [dnsPort, adminPort] = [await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-browser-"));
  fs.mkdirSync(path.join(dir, "zones"));
  fs.copyFileSync(path.join(repo, "zones/example.com.zone"), path.join(dir, "zones/example.com.zone"));
  fs.writeFileSync(
    path.join(dir, "meridian.toml"),
    `[server]
listen = ["127.0.0.1:${dnsPort}"]
zones = "zones"
udp_sockets = 1

[site]
id = "fra1"
location = { lat = 50.11, lon = 8.68 }

[admin]
listen = "127.0.0.1:${adminPort}"

[health.web]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 1
fall = 1

[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
countries = ["US", "CA"]
[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }
continents = ["EU", "AF"]
[regions.ap-southeast]
location = { lat = 1.35, lon = 103.82 }
continents = ["AS", "OC"]

[[service]]
name = "www.example.com"
policy = "weighted"
ttl = 30
health = "web"
endpoints = [
  { region = "eu-west", address = "192.0.2.10", weight = 2, check = "${eu.url}" },
  { region = "us-east", address = "192.0.2.20", weight = 3, check = "${us.url}" },
  { region = "us-east", address = "192.0.2.21", weight = 1, check = "${us.url}" },
  { region = "ap-southeast", address = "192.0.2.30", weight = 1, check = "${us.url}" },
]
`,
  );
  const log = fs.openSync(path.join(dir, "meridian.log"), "w");
  const server = spawn(BIN, ["serve", "--config", path.join(dir, "meridian.toml")], {
    stdio: ["ignore", log, log],
  });
  let browser;
  const cleanup = [];
  let completed = false;
  const admin = `http://127.0.0.1:${adminPort}`;
  try {
    await waitFor("the admin API", 15000, async () => {
      if (server.exitCode !== null) throw new Error(`meridian exited with ${server.exitCode}`);
      return (await getStatus(admin)).site === "fra1";
    });
    await waitFor("every endpoint probed healthy", 10000, async () =>
      (await getStatus(admin)).services[0].endpoints.every((e) => e.healthy && e.last_probe && e.last_probe.ok),
    );
    const answered = await sendQueries(dnsPort, "www.example.com", 200);
    check(answered > 150, "DNS answers www.example.com over UDP", `${answered}/200`);

    // A fresh profile per run; Playwright takes it as launchPersistentContext's first argument
    // (it refuses --user-data-dir among the args) and passes it on as --user-data-dir.
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-chromium-"));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      // Playwright adds --headless itself for headless launches; listed for clarity.
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    cleanup.push(() => fs.rmSync(profile, { recursive: true, force: true }));
    const page = browser.pages()[0] || (await browser.newPage());
    const outside = [];
    const errors = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(admin + "/") && !r.url().startsWith("data:")) outside.push(r.url());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));

    const resp = await page.goto(`${admin}/`);
    check(resp && resp.status() === 200, "GET / serves the page", resp ? String(resp.status()) : "no response");
    await page.waitForSelector('[data-region="eu-west"][data-state="green"]', { timeout: 5000 });
    check(true, "eu-west is green while its health server answers");
    check((await page.textContent("#site")) === "fra1", "the site id is shown");
    const rows = await page.$$eval("tr[data-endpoint]", (trs) => trs.map((t) => t.dataset.endpoint));
    check(rows.length === 4, "every endpoint is listed", rows.join(" "));
    // The share needs one sample of the 1 s ticker before the queries and one pass of the page.
    await page.waitForFunction(
      () => [...document.querySelectorAll('tr[data-endpoint="192.0.2.20"] td')].some((td) => /\d+ %/.test(td.textContent)),
      null,
      { timeout: 5000 },
    ).then(
      () => check(true, "answer shares of the last minute are shown"),
      () => check(false, "answer shares of the last minute are shown"),
    );
    await page.screenshot({ path: path.join(SHOTS, "status-page-healthy.png"), fullPage: true });

    const stopped = Date.now();
    await eu.stop();
    let redAfter = null;
    try {
      await page.waitForSelector('[data-region="eu-west"][data-state="red"]', { timeout: 3000 });
      redAfter = Date.now() - stopped;
    } catch {
      /* reported below */
    }
    check(redAfter !== null, "eu-west turns red within 3 s of its health server stopping",
      redAfter !== null ? `${redAfter} ms` : "still not red after 3 s");
    const health = await page.getAttribute('tr[data-endpoint="192.0.2.10"]', "data-health");
    check(health === "unhealthy", "its endpoint row says unhealthy", String(health));
    const usState = await page.getAttribute('[data-region="us-east"]', "data-state");
    check(usState === "green", "us-east stays green", String(usState));
    // The health change reaches the event list at the next 1 s pass of the sampler.
    await page.waitForSelector('#events li[data-kind="health"]', { timeout: 3000 }).then(
      () => check(true, "the health change is listed in recent events"),
      () => check(false, "the health change is listed in recent events"),
    );
    check((await page.textContent("#anycast")).includes("not configured"), "anycast without [anycast] says not configured");
    await page.screenshot({ path: path.join(SHOTS, "status-page.png"), fullPage: true });
    check(outside.length === 0, "the page requests nothing outside the server", outside.join(" "));
    check(errors.length === 0, "no script errors", errors.join(" | "));
    console.log(`screenshots in ${SHOTS}`);
    completed = true;
  } finally {
    if (browser) await browser.close().catch(() => {});
    server.kill("SIGTERM");
    await new Promise((r) => (server.exitCode !== null ? r() : server.once("exit", r)));
    await us.stop();
    await eu.stop().catch(() => {});
    if (failed > 0 || !completed) {
      console.log("--- meridian log ---");
      console.log(fs.readFileSync(path.join(dir, "meridian.log"), "utf8").slice(-4000));
    }
    fs.rmSync(dir, { recursive: true, force: true });
    for (const f of cleanup) f();
  }
}

try {
  await main();
} catch (e) {
  check(false, "browser test ran to the end", e && e.stack ? e.stack : String(e));
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
