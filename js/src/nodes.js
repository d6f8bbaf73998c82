// Which of the client's URLs to connect to: the URLs it was given (the
// nodes of a cluster, or one broker), and what it learnt about each.
//
// A cluster node that does not lead a topic answers a publish with
// NotLeader, naming the leader by its TCP address (`...; leader:
// HOST:PORT`), the address the nodes know each other by. The client talks
// WebSocket to the nodes' HTTP listeners, whose URLs a node does not know.
// So the client learns, for each URL it connects to, which node is there:
// with more than one URL it asks each node once for ClusterStatus (a
// request that needs no permission), whose answer gives that node's id and
// the id and TCP address of every node as that node knows them. A leader
// named by address is then a node id, and the URL of that node, if the
// client has been there. A URL not yet visited may be any node: when the
// leader's URL is not known, those are tried, in turn. URLs known to be
// other nodes are never tried for a named leader; when every URL is known
// and none is the leader, the leader cannot be reached from this client
// (the publish fails with NotLeader). When no leader is named (an election
// is under way), any other node may become the leader: the next URL.
//
// This module only chooses; the client (client.js) connects, asks, and
// waits between hops.

import { invalidArgument } from "./errors.js";

/** The TCP address a NotLeader message names (`...; leader: HOST:PORT`),
 * or null when it names none (an election is under way, or this node has
 * no replica of the topic). */
export function leaderNamed(message) {
  if (typeof message !== "string") return null;
  const at = message.lastIndexOf("leader: ");
  if (at < 0) return null;
  const a = message.slice(at + "leader: ".length).trim();
  return a !== "" && !/\s/.test(a) ? a : null;
}

/** The URL list `connect` was given: one URL, or an array of them. */
export function urlList(urls) {
  const list = Array.isArray(urls) ? [...urls] : [urls];
  if (list.length === 0) throw invalidArgument("connect: no URL given");
  for (const u of list) {
    if (typeof u !== "string" || u === "") throw invalidArgument(`connect: a URL must be a non-empty string, not ${JSON.stringify(u)}`);
  }
  return list;
}

export class Nodes {
  /** @param {string[]} urls */
  constructor(urls) {
    this.urls = urls;
    /** The URL in use, or tried next. */
    this.current = 0;
    /** Per URL: the node id there (learnt), or null. */
    this._ids = urls.map(() => null);
    /** Per URL: the nodes as that node knows them (TCP address → id), or null. */
    this._views = urls.map(() => null);
    /** Per URL: asked already (answered, or not a cluster). */
    this._asked = urls.map(() => false);
  }

  get url() {
    return this.urls[this.current];
  }

  /** Whether the client should ask the node at URL `i` who it is: there is
   * more than one URL to choose from, and it was not asked yet. */
  shouldAsk(i) {
    return this.urls.length > 1 && !this._asked[i];
  }

  /** The node at URL `i` answered ClusterStatus (`{ node_id, nodes: [{ id,
   * addr }] }`, the wire's names). */
  learn(i, info) {
    this._asked[i] = true;
    this._ids[i] = info.node_id;
    this._views[i] = new Map(info.nodes.map((n) => [n.addr, n.id]));
  }

  /** The node at URL `i` is not in a cluster (or did not say): not asked again. */
  notACluster(i) {
    this._asked[i] = true;
  }

  /** Forgets what URL `i` was thought to be (it proved wrong): asked again
   * at the next connection there. */
  forget(i) {
    this._ids[i] = null;
    this._views[i] = null;
    this._asked[i] = false;
  }

  /** The node id of `addr` as node `from` knows it, else as any node the
   * client asked knows it (null if none, or if they disagree). */
  _idOf(addr, from) {
    const own = this._views[from]?.get(addr);
    if (own !== undefined) return own;
    const ids = new Set();
    for (const v of this._views) {
      const id = v?.get(addr);
      if (id !== undefined) ids.add(id);
    }
    return ids.size === 1 ? [...ids][0] : null;
  }

  /** The node id at URL `i`, or null if not learnt yet. */
  idAt(i) {
    return this._ids[i];
  }

  /** The URL index after `i`, round the list. */
  next(i = this.current) {
    return (i + 1) % this.urls.length;
  }

  /**
   * Where to go after the node at URL `from` answered NotLeader naming
   * `leader` (a TCP address, or null): `{ index, known }`, `known` when the
   * URL is known to be the leader's, or null when none of the URLs can be
   * the leader's (then the publish fails).
   */
  redirect(from, leader) {
    const n = this.urls.length;
    if (leader === null) {
      // An election: any other node may win it.
      return { index: (from + 1) % n, known: false };
    }
    const id = this._idOf(leader, from);
    if (id !== null && this._ids[from] === id) {
      // It named itself, as what we learnt says: what we learnt is wrong.
      this.forget(from);
    }
    const order = [];
    for (let k = 1; k < n; k++) order.push((from + k) % n);
    if (id !== null) {
      const at = order.find((j) => this._ids[j] === id);
      if (at !== undefined) return { index: at, known: true };
    }
    // Not known where the leader is: a URL not visited yet may be it. A URL
    // known to be a node whose own address is `leader` would have been
    // found above; the others are other nodes.
    const unknown = order.find((j) => this._ids[j] === null);
    return unknown === undefined ? null : { index: unknown, known: false };
  }
}
