// The chat page in a real headless Chromium (Debian's chromium, driven by
// playwright-core), against a real `herald serve`. Alice and Bob are two
// browser contexts (separate storage, like two people). Bob reaches the
// broker through a TCP proxy the test controls, so his WebSocket is cut
// for real: Chromium's offline emulation would leave an open WebSocket to
// 127.0.0.1 alone, and a test built on it would pass without a disconnect.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { Broker } from "../support/broker.js";
import { Proxy } from "../support/proxy.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const WAIT = 20000;

let broker, proxy, browser, profile;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`);
  }
  broker = await Broker.start();
  proxy = await Proxy.start(broker.http);
  // A fresh profile folder: nothing from an earlier run.
  profile = mkdtempSync(join(tmpdir(), "herald-chromium-"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...FLAGS, `--disk-cache-dir=${join(profile, "cache")}`],
    env: { ...process.env, HOME: profile, XDG_CONFIG_HOME: profile, XDG_CACHE_HOME: profile },
    timeout: 60000,
  });
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await broker?.close();
  await Broker.killAll();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

const uniq = (p) => `${p}-${Math.random().toString(36).slice(2, 7)}`;

/** The chat lines a page shows, as text, in order. */
const lines = (page) => page.$$eval("#messages .msg.chat .text", (els) => els.map((e) => e.textContent));

async function status(page, state) {
  await page.waitForSelector(`#status[data-state="${state}"]`, { timeout: WAIT });
}

/** Opens the chat as `name` in `room` at `base` and waits until joined. */
async function open(page, base, name, room) {
  await page.goto(`${base}/?name=${name}&room=${room}`);
  await status(page, "connected");
  await page.waitForFunction((n) => [...document.querySelectorAll("#members li")].some((li) => li.textContent === n), name, { timeout: WAIT });
}

/** Types `text` and sends it; with `confirmed`, waits until it is durable. */
async function say(page, text, { confirmed = true } = {}) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  if (confirmed) await page.waitForFunction(() => !document.querySelector("#messages .msg.pending"), null, { timeout: WAIT });
}

/** Waits until `page` shows `want` as its last lines. */
async function waitForLines(page, want) {
  await page.waitForFunction(
    (w) => {
      const got = [...document.querySelectorAll("#messages .msg.chat .text")].map((e) => e.textContent);
      return w.every((x) => got.includes(x));
    },
    want,
    { timeout: WAIT },
  );
}

test("chat in Chromium: cut connection, closed tab, broker SIGKILL, reload", { timeout: 240000 }, async (t) => {
  const room = uniq("room");
  const aliceName = uniq("alice");
  const bobName = uniq("bob");
  const alice = await (await browser.newContext()).newPage();
  const bobContext = await browser.newContext();
  let bob = await bobContext.newPage();
  const direct = `http://${broker.http}`;
  const viaProxy = `http://${proxy.address}`;
  await open(alice, direct, aliceName, room);
  await open(bob, viaProxy, bobName, room);
  await say(alice, "hello bob");
  await waitForLines(bob, ["hello bob"]);
  // Everything Bob saw so far, in order; each step adds to it.
  let bobSaw = ["hello bob"];

  await t.test("bob's WebSocket is cut; alice sends 5; bob comes back and sees exactly those 5, once, in order", async () => {
    const accepted = proxy.accepted;
    proxy.cut({ stayDown: true });
    await status(bob, "reconnecting");
    const five = [1, 2, 3, 4, 5].map((i) => `while bob was cut off ${i}`);
    for (const m of five) await say(alice, m);
    assert.deepEqual(await lines(bob), bobSaw, "nothing reached bob while cut off");
    proxy.up();
    await status(bob, "connected");
    assert.ok(proxy.accepted > accepted, "bob reconnected through a new connection");
    await say(alice, "marker 1");
    bobSaw = [...bobSaw, ...five, "marker 1"];
    await waitForLines(bob, ["marker 1"]);
    assert.deepEqual(await lines(bob), bobSaw);
  });

  await t.test("bob's tab is closed; alice sends 5; a new tab with bob's id shows exactly those", async () => {
    await bob.close();
    const five = [1, 2, 3, 4, 5].map((i) => `while bob's tab was closed ${i}`);
    for (const m of five) await say(alice, m);
    bob = await bobContext.newPage();
    await open(bob, viaProxy, bobName, room);
    await say(alice, "marker 2");
    await waitForLines(bob, ["marker 2"]);
    // A new tab shows what this name has not seen, nothing older.
    assert.deepEqual(await lines(bob), [...five, "marker 2"]);
    bobSaw = [...five, "marker 2"];
  });

  await t.test("the broker is SIGKILLed and restarted with both pages open: nothing lost, nothing twice", async () => {
    await say(alice, "before the crash");
    await waitForLines(bob, ["before the crash"]);
    await broker.kill();
    await status(alice, "reconnecting");
    await status(bob, "reconnecting");
    // Typed while the broker is down: sent once it is back.
    await say(alice, "typed while the broker was down 1", { confirmed: false });
    await say(bob, "bob typed while the broker was down", { confirmed: false });
    await say(alice, "typed while the broker was down 2", { confirmed: false });
    await broker.run(); // same ports, same data folder
    await status(alice, "connected");
    await status(bob, "connected");
    await alice.waitForFunction(() => !document.querySelector("#messages .msg.pending"), null, { timeout: WAIT });
    await bob.waitForFunction(() => !document.querySelector("#messages .msg.pending"), null, { timeout: WAIT });
    await say(alice, "after the restart");
    const want = ["before the crash", "typed while the broker was down 1", "typed while the broker was down 2", "after the restart"];
    await waitForLines(bob, [...want, "bob typed while the broker was down"]);
    await waitForLines(alice, ["bob typed while the broker was down", "after the restart"]);
    for (const page of [alice, bob]) {
      const got = await lines(page);
      assert.equal(new Set(got).size, got.length, `no line twice: ${JSON.stringify(got)}`);
    }
    // Alice's own lines reach bob in the order she typed them.
    const bobLines = await lines(bob);
    const order = want.map((w) => bobLines.indexOf(w));
    assert.deepEqual([...order].sort((a, b) => a - b), order, JSON.stringify(bobLines));
    bobSaw = bobLines;
  });

  await t.test("a reload of bob's page shows the same lines, none twice", async () => {
    await bob.reload();
    await status(bob, "connected");
    await say(alice, "after the reload");
    await waitForLines(bob, ["after the reload"]);
    assert.deepEqual(await lines(bob), [...bobSaw, "after the reload"]);
    if (process.env.HERALD_SCREENSHOT) {
      await bob.setViewportSize({ width: 1000, height: 640 });
      await bob.screenshot({ path: process.env.HERALD_SCREENSHOT });
    }
  });
});
