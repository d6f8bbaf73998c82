// The Socket.IO side of Herald's rooms benchmark: one Socket.IO 4.8 server
// with its default settings and the default in-memory adapter (nothing is
// written anywhere, nothing survives a restart).
//
// Protocol with bench.js:
//   "join" (room, ack)          the socket joins `room`; ack() once joined.
//   "emit" (room, payload, ack) `payload` is broadcast to the room except the
//                               sender (socket.to(room).emit("event", ...)),
//                               then ack() confirms it to the emitter.
// Members receive "event" (payload).
//
// Usage: node server.js [--port 3000] [--host 127.0.0.1]
// Prints "listening on HOST:PORT" once it accepts connections (port 0 picks
// a free one); exits on SIGTERM/SIGINT.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function parseArgs(argv) {
  const opts = { port: 3000, host: "127.0.0.1" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === "--port" && value !== undefined) {
      opts.port = Number(value);
      i++;
    } else if (flag === "--host" && value !== undefined) {
      opts.host = value;
      i++;
    } else {
      throw new Error(`unknown argument ${flag} (usage: node server.js [--port N] [--host H])`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error(`--port must be 0-65535, not ${opts.port}`);
  }
  return opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const httpServer = http.createServer();
  const io = new Server(httpServer); // default settings, in-memory adapter

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      if (typeof room !== "string" || typeof ack !== "function") return;
      socket.join(room);
      ack();
    });
    socket.on("emit", (room, payload, ack) => {
      if (typeof room !== "string" || typeof ack !== "function") return;
      socket.to(room).emit("event", payload);
      ack();
    });
  });

  httpServer.on("error", (err) => {
    console.error(`socket.io server: ${err.message}`);
    process.exit(1);
  });
  httpServer.listen(opts.port, opts.host, () => {
    const { address, port } = httpServer.address();
    console.log(`listening on ${address}:${port}`);
  });

  const stop = () => {
    io.close();
    httpServer.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

try {
  main();
} catch (err) {
  console.error(`socket.io server: ${err.message}`);
  process.exit(2);
}
