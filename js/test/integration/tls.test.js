// The JavaScript client over wss:// from Node: a broker with TLS (a test
// CA and a certificate for 127.0.0.1 made with the openssl command), the
// `ws` package's class given the CA, a publish and a subscription.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { connect } from "../../src/index.js";
import { Broker } from "../support/broker.js";

let dir;
let broker;
let ca;

/** A CA, and a certificate it signs for 127.0.0.1 and localhost. */
function makeCertificates(d) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: d, stdio: ["ignore", "ignore", "pipe"], timeout: 20000 });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=herald js test CA");
  openssl("req", ...ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(join(d, "ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n");
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "cert.pem");
  return { ca: join(d, "ca.pem"), cert: join(d, "cert.pem"), key: join(d, "key.pem") };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "herald-js-tls-"));
  const files = makeCertificates(dir);
  ca = readFileSync(files.ca);
  broker = await Broker.start(["--tls-cert", files.cert, "--tls-key", files.key]);
});
after(async () => {
  await broker?.close();
  await Broker.killAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The `ws` class, trusting the test CA: Node's `ws` takes TLS options as
 * its third argument, which the client's `new WebSocket(url)` leaves out. */
class TrustingWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { ca });
  }
}

test("wss:// with the broker's CA: publish, subscribe, and without the CA no connection", { timeout: 30000 }, async () => {
  const url = `wss://${broker.http}/ws`;
  const h = await connect(url, { WebSocket: TrustingWebSocket });
  const topic = `tls-${Math.random().toString(36).slice(2, 8)}`;
  const r = await h.publish(topic, "over wss");
  assert.equal(r.offset, 0);
  const sub = h.subscribe(topic, { start: "earliest" });
  const { value } = await sub.next();
  assert.equal(value.text(), "over wss");
  assert.equal(value.offset, 0);
  await sub.close();
  await h.close();

  // Not trusting the CA: the TLS handshake fails, so does connect, saying
  // why.
  await assert.rejects(connect(url, { WebSocket, maxReconnectAttempts: 0, connectTimeoutMs: 5000 }), /certificate/);
  // Nor does ws:// reach the HTTPS port (its 400 says to use HTTPS).
  await assert.rejects(connect(`ws://${broker.http}/ws`, { WebSocket, maxReconnectAttempts: 0, connectTimeoutMs: 5000 }), /400/);
});
