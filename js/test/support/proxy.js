// A TCP proxy the tests control, to cut a client's connection for real
// (the WebSocket underneath closes as if the network failed) and to keep
// it down for a while.

import net from "node:net";

export class Proxy {
  /** Forwards 127.0.0.1:<port> to `target` ("host:port"). */
  static async start(target) {
    const p = new Proxy(target);
    await new Promise((r) => p.server.listen(0, "127.0.0.1", r));
    p.port = p.server.address().port;
    return p;
  }

  constructor(target) {
    const [host, port] = target.split(":");
    this.target = { host, port: Number(port) };
    this.pairs = new Set();
    this.down = false;
    this.accepted = 0;
    this.server = net.createServer((client) => this._accept(client));
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  _accept(client) {
    if (this.down) {
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.target);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cuts every connection now; with `stayDown`, refuses new ones until up(). */
  cut({ stayDown = false } = {}) {
    this.down = stayDown;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  up() {
    this.down = false;
  }

  /** Stops passing on what the broker sends over the current connections
   * (the client's requests still reach it): replies that are lost while
   * the requests took effect. */
  holdReplies() {
    for (const { client, upstream } of this.pairs) {
      upstream.unpipe(client);
      upstream.pause();
    }
  }

  /** Points the proxy at another address (a restarted broker). */
  retarget(target) {
    const [host, port] = target.split(":");
    this.target = { host, port: Number(port) };
  }

  async close() {
    this.cut({ stayDown: true });
    await new Promise((r) => this.server.close(r));
  }
}

/** Waits until `pred()` holds, polling, or fails after `ms`. */
export async function until(pred, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves with the next `type` event of `target`, or fails after `ms`. */
export function nextEvent(target, type, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event within ${ms} ms`)), ms);
    target.addEventListener(type, (e) => {
      clearTimeout(timer);
      resolve(e);
    }, { once: true });
  });
}
