// A real `herald serve` child process for the tests, on free ports, with
// its own data folder. Start, stop (SIGTERM), kill (SIGKILL) and restart
// on the same ports and folder.

import { spawn } from "node:child_process";
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

export class Broker {
  constructor(extra = []) {
    this.dir = mkdtempSync(join(tmpdir(), "herald-js-"));
    this.extra = extra;
    this.tcp = "127.0.0.1:0";
    this.http = "127.0.0.1:0";
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
    const child = spawn(heraldBin(), args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HERALD_LOG: process.env.HERALD_LOG ?? "warn" } });
    this.child = child;
    child.stderr.on("data", (d) => process.stderr.write(`[herald] ${d}`));
    const lines = createInterface({ input: child.stdout });
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error("herald serve did not start within 20 s")), 20000);
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
    c.kill(sig);
    await exited;
    this.child = null;
  }

  /** Stops the broker and removes its data folder. */
  async close() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
