// A real `herald serve` child process for the tests, on free ports, with
// its own data folder. Start, stop (SIGTERM), kill (SIGKILL) and restart
// on the same ports and folder. Each child leads its own process group and
// is killed as a group; every broker still running is killed when the test
// process exits, whatever way (a failed or timed-out test included), so no
// `herald serve` outlives the tests.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

const ROOT = resolve(new URL("../../..", import.meta.url).pathname);

/** The broker binary: $HERALD_BIN, else the workspace's debug build. */
export function heraldBin() {
  const bin = process.env.HERALD_BIN ?? join(ROOT, "target", "debug", "herald");
  if (!existsSync(bin)) {
    throw new Error(`no herald binary at ${bin}: run \`cargo build --bin herald\` (or set HERALD_BIN)`);
  }
  return bin;
}

/** Children started and not yet seen to exit; data folders not yet removed. */
const running = new Set();
const folders = new Set();

/** SIGKILLs a child's whole process group (it leads one: `detached`). */
function killGroup(child, sig = "SIGKILL") {
  try {
    process.kill(-child.pid, sig);
  } catch {
    // gone already
  }
}

process.on("exit", () => {
  for (const c of running) killGroup(c);
  for (const d of folders) {
    try {
      // The SIGKILLed child may still be writing for a moment: retry.
      rmSync(d, { recursive: true, force: true, maxRetries: 20, retryDelay: 10 });
    } catch (e) {
      process.stderr.write(`could not remove ${d}: ${e.message}\n`);
    }
  }
});
// A detached child does not get the terminal's Ctrl-C: pass it on.
for (const [sig, n] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]]) {
  process.once(sig, () => {
    for (const c of running) killGroup(c);
    process.exit(128 + n);
  });
}

/** Mints a JWT with `herald token` (args: --secret-file, --sub, --ttl, --allow-*). */
export function mintToken(args) {
  const r = spawnSync(heraldBin(), ["token", ...args], { encoding: "utf8", timeout: 20000 });
  if (r.status !== 0) throw new Error(`herald token ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout.trim();
}

export class Broker {
  /** Kills every broker still running (an `after` hook's safety net). */
  static async killAll() {
    await Promise.all([...running].map((c) => {
      const exited = new Promise((r) => c.once("exit", r));
      killGroup(c);
      return exited;
    }));
  }

  /** `o.tcp`, `o.http`: fixed addresses (default: free ports, kept for
   * restarts); `o.log`: HERALD_LOG (default $HERALD_LOG, else "warn"). */
  constructor(extra = [], o = {}) {
    this.dir = mkdtempSync(join(tmpdir(), "herald-js-"));
    folders.add(this.dir);
    this.extra = extra;
    this.tcp = o.tcp ?? "127.0.0.1:0";
    this.http = o.http ?? "127.0.0.1:0";
    this.log = o.log;
    this.child = null;
  }

  static async start(extra = []) {
    const b = new Broker(extra);
    await b.run();
    return b;
  }

  /** ws://…/ws and http://…/ of the running broker. */
  get wsUrl() {
    return `ws://${this.http}/ws`;
  }
  get httpUrl() {
    return `http://${this.http}`;
  }

  /** Starts the process (again, on the same ports, after the first time). */
  run() {
    const args = ["serve", "--listen", this.tcp, "--http", this.http, "--data-dir", this.dir, ...this.extra];
    const env = { ...process.env, HERALD_LOG: process.env.HERALD_LOG ?? this.log ?? "warn" };
    const child = spawn(heraldBin(), args, { stdio: ["ignore", "pipe", "pipe"], env, detached: true });
    this.child = child;
    running.add(child);
    child.once("exit", () => running.delete(child));
    child.stderr.on("data", (d) => process.stderr.write(`[herald] ${d}`));
    const lines = createInterface({ input: child.stdout });
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        killGroup(child);
        reject(new Error("herald serve did not start within 20 s"));
      }, 20000);
      child.once("exit", (code) => reject(new Error(`herald serve exited with ${code} before listening`)));
      lines.on("line", (l) => {
        let m = l.match(/^listening on (\S+)/);
        if (m) this.tcp = m[1];
        m = l.match(/^http listening on (\S+)/);
        if (m) {
          this.http = m[1];
          clearTimeout(timer);
          resolvePromise(this);
        }
      });
    });
  }

  /** SIGKILL: no shutdown at all, as a crash. */
  async kill() {
    await this._signal("SIGKILL");
  }

  /** SIGTERM: a graceful shutdown. */
  async stop() {
    await this._signal("SIGTERM");
  }

  async _signal(sig) {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    if (sig === "SIGKILL") killGroup(c);
    else c.kill(sig);
    await exited;
    this.child = null;
  }

  /** Stops the broker and removes its data folder. */
  async close() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
    folders.delete(this.dir);
  }
}
