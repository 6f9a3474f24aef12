// Status page in a real browser: Debian's Chromium, headless, driven by playwright-core (no
// browser download). Starts the real meridian binary with health checks against two small HTTP
// servers run here, opens `GET /` on the admin listener at 1400 × 1000, checks that every
// service is on the first screen beside a smaller map, takes a screenshot, stops one health
// server and expects the page to turn that region red within 3 s and to list the change once
// (the endpoint is in three services) with an ISO date-time in UTC. A second server, started
// with a corrupt drains.json and a zone file that does not load, must put a banner on the page.
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

/**
 * A second server from the same folder layout, started with a drains.json that is not JSON and
 * a zone file that does not parse: it serves (SPEC "Day two"), /status says so, and the page
 * must show a banner for each.
 */
async function bannerChecks(page) {
  const [dnsPort, adminPort] = [await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-banner-"));
  fs.mkdirSync(path.join(dir, "zones"));
  fs.mkdirSync(path.join(dir, "state"));
  fs.copyFileSync(path.join(repo, "zones/example.com.zone"), path.join(dir, "zones/example.com.zone"));
  fs.writeFileSync(path.join(dir, "zones/broken.test.zone"), "@ 3600 IN SOA this is not a zone\n");
  fs.writeFileSync(path.join(dir, "state/drains.json"), "{ not json");
  fs.writeFileSync(
    path.join(dir, "meridian.toml"),
    `[server]
listen = ["127.0.0.1:${dnsPort}"]
zones = "zones"
udp_sockets = 1

[site]
id = "fra2"

[admin]
listen = "127.0.0.1:${adminPort}"

[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }

[[service]]
name = "www.example.com"
policy = "round-robin"
ttl = 30
endpoints = [{ region = "eu-west", address = "192.0.2.10" }]
`,
  );
  const logPath = path.join(dir, "meridian.log");
  const log = fs.openSync(logPath, "w");
  const server = spawn(BIN, ["serve", "--config", path.join(dir, "meridian.toml")], { stdio: ["ignore", log, log] });
  const admin = `http://127.0.0.1:${adminPort}`;
  try {
    const up = await waitFor("the second server's admin API", 15000, async () => {
      if (server.exitCode !== null) throw new Error(`meridian exited with ${server.exitCode}`);
      return (await getStatus(admin)).site === "fra2";
    }).catch((e) => {
      check(false, "a server with a broken zone and a corrupt drains.json starts (SPEC Day two)", e.message);
      return false;
    });
    if (!up) {
      console.log(fs.readFileSync(logPath, "utf8").slice(-2000));
      return;
    }
    const st = await getStatus(admin);
    check(st.drains_state && st.drains_state.ok === false, "/status says the drain state was lost", JSON.stringify(st.drains_state));
    const broken = (st.zones || []).find((z) => (z.name || z.origin || "").startsWith("broken.test"));
    check(broken && broken.loaded === false, "/status says broken.test did not load", JSON.stringify(st.zones));
    await page.goto(`${admin}/`);
    await page.waitForSelector('#banners [data-banner="drains"]', { timeout: 3000 }).then(
      () => check(true, "a banner says the drains were lost"),
      () => check(false, "a banner says the drains were lost"),
    );
    const zoneBanner = await page.$('#banners [data-banner="zone"]');
    const zoneText = zoneBanner ? await zoneBanner.textContent() : "";
    check(zoneText.includes("broken.test") && zoneText.includes("failed to load") && zoneText.includes("SOA needs 7 rdata fields"),
      "a banner names the zone that failed to load, and why", zoneText);
    const bannerBox = await page.$eval("#banners", (e) => e.getBoundingClientRect().top);
    check(bannerBox < 120, "the banners are at the top of the first screen", String(bannerBox));
    await page.screenshot({ path: path.join(SHOTS, "status-page-banner.png") });
  } finally {
    server.kill("SIGTERM");
    await new Promise((r) => (server.exitCode !== null ? r() : server.once("exit", r)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
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

# 192.0.2.10 is one machine in three services: its health change is one event.
[[service]]
name = "app.example.com"
policy = "geo"
ttl = 30
health = "web"
endpoints = [
  { region = "eu-west", address = "192.0.2.10", check = "${eu.url}" },
  { region = "us-east", address = "192.0.2.20", check = "${us.url}" },
]

[[service]]
name = "img.example.com"
policy = "failover"
ttl = 30
health = "web"
endpoints = [
  { region = "eu-west", address = "192.0.2.10", priority = 1, check = "${eu.url}" },
  { region = "ap-southeast", address = "192.0.2.30", priority = 2, check = "${us.url}" },
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
      (await getStatus(admin)).services.every((s) => s.endpoints.every((e) => e.healthy && e.last_probe && e.last_probe.ok)),
    );
    const answered = await sendQueries(dnsPort, "www.example.com", 200);
    check(answered > 150, "DNS answers www.example.com over UDP", `${answered}/200`);

    // A fresh profile per run; Playwright takes it as launchPersistentContext's first argument
    // (it refuses --user-data-dir among the args) and passes it on as --user-data-dir.
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-chromium-"));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 1000 },
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
    check(rows.length === 8, "every endpoint of the three services is listed", rows.join(" "));
    // The share needs one sample of the 1 s ticker before the queries and one pass of the page.
    // Weights 2:3:1:1, so 192.0.2.20 had about 3/7 of the 200 answers: a share far from 0 % (a
    // page showing "0 %" everywhere failed the old /\d+ %/ nowhere) and www's shares add up.
    const wwwShares = () =>
      page.$$eval('[data-service="www.example.com"] tr[data-endpoint]', (trs) =>
        trs.map((t) => [t.dataset.endpoint, t.querySelector("td.share")?.dataset.share, t.querySelector("td.share")?.textContent]));
    await page.waitForFunction(
      () => document.querySelector('[data-service="www.example.com"] tr[data-endpoint="192.0.2.20"] td.share[data-share]'),
      null,
      { timeout: 5000 },
    ).catch(() => {});
    const shares = await wwwShares();
    const share20 = Number((shares.find(([a]) => a === "192.0.2.20") || [])[1]);
    const text20 = (shares.find(([a]) => a === "192.0.2.20") || [])[2] || "";
    const sum = shares.reduce((t, [, v]) => t + Number(v || 0), 0);
    check(share20 > 0.25 && share20 < 0.62, "192.0.2.20 has about 3/7 of the answers", JSON.stringify(shares));
    check(text20.trim() === `${Math.round(share20 * 100)} %`, "the share is shown as a percentage", text20);
    check(Math.abs(sum - 1) < 0.001, "www's shares add up to 100 %", String(sum));

    // The first screen at 1400 × 1000: every service and every endpoint row without scrolling,
    // beside a map that is smaller than the services.
    const box = (sel) => page.$eval(sel, (e) => { const r = e.getBoundingClientRect(); return { top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height }; });
    const below = await page.$$eval(".svc h3, tr[data-endpoint]", (els) =>
      els.filter((e) => { const r = e.getBoundingClientRect(); return r.height === 0 || r.top < 0 || r.bottom > window.innerHeight; }).map((e) => e.textContent.slice(0, 40)));
    check(below.length === 0, "every service and endpoint is on the first screen at 1400 × 1000", below.join(" | "));
    const svcBox = await box("#services");
    const mapBox = await box("#map-card");
    check(svcBox.right <= mapBox.left, "the map is beside the services, not above them", `services ${JSON.stringify(svcBox)} map ${JSON.stringify(mapBox)}`);
    check(mapBox.width < svcBox.width && mapBox.height < 450, "the map is the smaller card", `map ${Math.round(mapBox.width)}×${Math.round(mapBox.height)}, services ${Math.round(svcBox.width)} wide`);
    check(mapBox.top < 200, "the map is on the first screen too", String(mapBox.top));
    check((await page.$$("#banners > *")).length === 0, "no banner while drains and zones are fine");
    await page.screenshot({ path: path.join(SHOTS, "status-page-healthy.png") });

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
    // The health change reaches the event list at the next 1 s pass of the sampler: once for
    // the endpoint, naming its three services.
    await page.waitForSelector('#events li[data-kind="health"]', { timeout: 3000 }).then(
      () => check(true, "the health change is listed in recent events"),
      () => check(false, "the health change is listed in recent events"),
    );
    await sleep(1500); // another sampler pass and redraw: a second event would be there by now
    const healthEvents = await page.$$eval('#events li[data-kind="health"]', (lis) =>
      lis.map((l) => ({ endpoint: l.dataset.endpoint, services: l.dataset.services, time: l.querySelector("time")?.textContent, datetime: l.querySelector("time")?.getAttribute("datetime"), text: l.textContent })));
    check(healthEvents.length === 1 && healthEvents[0].endpoint === "192.0.2.10",
      "one health event for the endpoint, not one per service", JSON.stringify(healthEvents));
    const named = (healthEvents[0]?.services || "").split(" ").sort().join(" ");
    check(named === "app.example.com img.example.com www.example.com", "the event lists the endpoint's three services", named);
    check((healthEvents[0]?.text || "").includes("app.example.com, img.example.com") || (healthEvents[0]?.text || "").split(",").length >= 3,
      "the services are written out in the event", healthEvents[0]?.text || "");
    const times = await page.$$eval("#events time", (ts) => ts.map((t) => [t.textContent, t.getAttribute("datetime")]));
    const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
    check(times.length > 0 && times.every(([t, d]) => iso.test(t) && t === d), "event times are ISO 8601 date-times in UTC", JSON.stringify(times));
    const st = await getStatus(admin);
    const theEvent = (st.events || []).find((e) => e.kind === "health" && e.endpoint === "192.0.2.10");
    const shown = healthEvents[0]?.time;
    check(theEvent && shown && Math.abs(Date.parse(shown) - Date.parse(theEvent.time)) < 1000 && Math.abs(Date.parse(shown) - Date.now()) < 60000,
      "the shown time is the event's, in UTC", `${shown} vs ${theEvent && theEvent.time}`);
    check((await page.textContent("#anycast")).includes("not configured"), "anycast without [anycast] says not configured");
    // The first screen, as an operator opening the page sees it: this is docs/status-page.png.
    await page.screenshot({ path: path.join(SHOTS, "status-page.png") });
    check(outside.length === 0, "the page requests nothing outside the server", outside.join(" "));
    check(errors.length === 0, "no script errors", errors.join(" | "));
    await bannerChecks(page);
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
