// The chat page: rooms, presence and direct messages on Herald, in plain
// JavaScript with no build step. Each name is a Herald client id and joins
// its room durably, so while the tab is closed (or offline, or the broker
// restarts) the room's log keeps what was said and its position in it, and
// the page shows it, once and in order, when it comes back.
//
// Shown once: each message carries an id (an emit re-sent after a
// reconnect arrives twice, with the same id), and the page remembers the
// last position it showed in each topic it reads (the room's log, its
// inbox for direct messages): a reload may be handed again an event whose
// ack had not reached the broker's disk. What this tab has shown
// is kept in sessionStorage, so a reload shows it again; a new tab starts
// empty and shows only what it has not seen.

import { connect } from "/herald.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/** Per-tab history and cross-tab positions, by name. */
class Memory {
  constructor(name, room) {
    this.historyKey = `herald-chat:${name}:${room}:history`;
    this.offsetKey = (topic) => `herald-chat:${name}:offset:${topic}`;
    this.idsKey = `herald-chat:${name}:ids`;
  }
  history() {
    return JSON.parse(sessionStorage.getItem(this.historyKey) ?? "[]");
  }
  remember(line) {
    const h = this.history();
    h.push(line);
    sessionStorage.setItem(this.historyKey, JSON.stringify(h.slice(-500)));
  }
  lastOffset(topic) {
    return Number(localStorage.getItem(this.offsetKey(topic)) ?? -1);
  }
  setOffset(topic, o) {
    if (o > this.lastOffset(topic)) localStorage.setItem(this.offsetKey(topic), String(o));
  }
  seen(id) {
    return JSON.parse(localStorage.getItem(this.idsKey) ?? "[]").includes(id);
  }
  markSeen(id) {
    const ids = JSON.parse(localStorage.getItem(this.idsKey) ?? "[]");
    ids.push(id);
    localStorage.setItem(this.idsKey, JSON.stringify(ids.slice(-1000)));
  }
}

function setStatus(state, text) {
  const s = $("status");
  s.dataset.state = state;
  s.textContent = text;
}

function line({ id, kind, sender, to, text }, classes = []) {
  const el = document.createElement("div");
  el.className = ["msg", kind, ...classes].join(" ");
  el.dataset.id = id;
  el.dataset.sender = sender;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = kind === "dm" ? `${sender} → ${to}` : sender;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  el.append(who, body);
  const box = $("messages");
  box.append(el);
  box.scrollTop = box.scrollHeight;
  return el;
}

function system(text) {
  const el = document.createElement("div");
  el.className = "system";
  el.textContent = text;
  $("messages").append(el);
}

const newId = () => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

async function connectWithRetry(url, clientId) {
  for (let delay = 250; ; delay = Math.min(delay * 2, 3000)) {
    try {
      return await connect(url, { clientId, reconnectInitialMs: 100, reconnectMaxMs: 2000 });
    } catch (e) {
      if (e.code === "InvalidArgument" || e.code === "Unauthorized") throw e;
      setStatus("reconnecting", "reconnecting…");
      await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random() / 2)));
    }
  }
}

async function start(name, room) {
  history.replaceState(null, "", `?${new URLSearchParams({ ...Object.fromEntries(params), name, room })}`);
  $("login").hidden = true;
  $("chat").hidden = false;
  $("room-name").textContent = room;
  document.title = `${name} in #${room} · Herald chat`;
  const memory = new Memory(name, room);
  for (const l of memory.history()) line(l);

  setStatus("reconnecting", "connecting…");
  const url = params.get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const herald = await connectWithRetry(url, name);
  window.herald = herald; // for the console (and the browser tests)
  setStatus("connected", "connected");
  herald.addEventListener("disconnected", () => setStatus("reconnecting", "reconnecting…"));
  herald.addEventListener("reconnecting", () => setStatus("reconnecting", "reconnecting…"));
  herald.addEventListener("reconnected", () => {
    setStatus("connected", "connected");
    refreshMembers();
  });
  herald.addEventListener("closed", () => setStatus("offline", "disconnected"));

  const pending = new Map();
  const show = (ev, kind) => {
    if (ev.offset <= memory.lastOffset(ev.topic)) return; // shown before a reload, or in another tab
    memory.setOffset(ev.topic, ev.offset);
    let m;
    try {
      m = ev.json();
    } catch {
      m = { id: `${ev.topic}@${ev.offset}`, text: ev.text() };
    }
    // This tab's own line moves from where it was typed to where the room
    // got it, as every other member (and a reload) sees it.
    pending.get(m.id)?.remove();
    pending.delete(m.id);
    if (memory.seen(m.id)) return; // an emit re-sent after a reconnect
    memory.markSeen(m.id);
    const l = { id: m.id, kind, sender: ev.sender, to: m.to ?? null, text: m.text };
    memory.remember(l);
    line(l);
  };
  herald.on("chat", (ev) => show(ev, "chat"));
  herald.on("dm", (ev) => show(ev, "dm"));

  async function refreshMembers() {
    try {
      const ms = await herald.members(room);
      const ul = $("members");
      ul.replaceChildren(
        ...ms.map((m) => {
          const li = document.createElement("li");
          li.textContent = m.clientId;
          li.className = m.online ? "online" : "offline";
          return li;
        }),
      );
    } catch (e) {
      console.warn("members", e);
    }
  }
  herald.onPresence((p) => {
    if (p.room === room && (p.type === "join" || p.type === "leave")) system(`${p.clientId} ${p.type === "join" ? "joined" : "left"}`);
    refreshMembers();
  });
  await herald.joinDurable(room);
  refreshMembers();

  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("text");
    const text = input.value.trim();
    input.value = "";
    if (!text) return;
    const id = newId();
    const dm = text.match(/^\/msg\s+(\S+)\s+(.+)$/);
    const l = dm ? { id, kind: "dm", sender: name, to: dm[1], text: dm[2] } : { id, kind: "chat", sender: name, to: null, text };
    const el = line(l, ["pending"]);
    pending.set(id, el);
    const payload = JSON.stringify({ id, text: l.text, to: l.to });
    // The emit resolves once durable (in the room's log, or the recipient's
    // inbox for a direct message); while the
    // connection is down it waits and is sent after the reconnect.
    const sent = dm ? herald.emitToClient(dm[1], "dm", payload) : herald.emit({ room }, "chat", payload);
    sent.then(
      () => {
        if (dm) {
          // Direct messages do not come back to the sender: confirmed here.
          el.remove();
          pending.delete(id);
          memory.markSeen(id);
          memory.remember(l);
          line(l);
        }
      },
      (err) => {
        el.classList.add("failed");
        el.title = String(err);
      },
    );
  });
  $("text").focus();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  start($("name").value.trim(), $("room").value.trim());
});

if (params.get("name") && params.get("room")) {
  start(params.get("name"), params.get("room"));
} else {
  $("name").focus();
}
