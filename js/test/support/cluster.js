// Three (or more) real `herald serve` cluster nodes for the tests
// (docs/cluster.md): each a Broker (broker.js: its own process group and
// data folder, killed and removed whatever way the tests end) on TCP and
// HTTP ports picked free beforehand, since every node is told every
// node's TCP address (`--peers`) before any starts.

import net from "node:net";
import { Broker } from "./broker.js";

/** `n` free loopback ports (listened on, then released for the nodes). */
async function freePorts(n) {
  const servers = await Promise.all(
    [...Array(n)].map(
      () =>
        new Promise((resolve, reject) => {
          const s = net.createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export class Cluster {
  /** Starts `n` nodes (ids 1..n) and resolves once each listens. */
  static async start(n = 3) {
    const ports = await freePorts(2 * n);
    const tcp = ports.slice(0, n).map((p) => `127.0.0.1:${p}`);
    const http = ports.slice(n).map((p) => `127.0.0.1:${p}`);
    const peers = tcp.map((a, i) => `${i + 1}=${a}`).join(",");
    // openraft's reports of peers that are down are expected noise here.
    const nodes = tcp.map(
      (a, i) => new Broker(["--node-id", String(i + 1), "--peers", peers], { tcp: a, http: http[i], log: "warn,openraft=off" }),
    );
    const c = new Cluster(nodes);
    await Promise.all(nodes.map((b) => b.run()));
    return c;
  }

  constructor(nodes) {
    this.nodes = nodes;
  }

  /** The WebSocket URL of each node, in node order (node id i + 1). */
  get urls() {
    return this.nodes.map((b) => b.wsUrl);
  }

  /** The node whose id is `id`. */
  node(id) {
    return this.nodes[id - 1];
  }

  /** Stops every node and removes their data folders. */
  async close() {
    await Promise.all(this.nodes.map((b) => b.close()));
  }
}
