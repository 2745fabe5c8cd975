// The chat page: a browser client of the Switchboard gateway talking to the `chat` handler.
// It connects to /v1/ws with its token beside the `switchboard.v1` protocol, asks `chat` who
// is online (and again every few seconds), says things to other users through `chat`, and
// shows what it hears. Pushes kept for it while it was away arrive first; it acknowledges
// them (several to a frame) so the host forgets them.
"use strict";

const POLL_MS = 3000;
// The handler this page talks to: the only one whose `Chat` names the person who said it.
const CHAT = "chat";
let socket = null;
let me = null;
let poll = null;
// What each frame it sent was: the gateway answers frames in order, one answer each.
const sent = [];
// What each acknowledged message was, by the id the host gave it, until its answer comes.
const waiting = new Map();
// Pushes already shown, by id: a kept push can arrive twice (at-least-once).
const shown = new Set();
// Kept pushes to acknowledge, sent together (one frame, one store write) every ACK_MS.
const ACK_MS = 100;
let acks = [];
let flushing = null;

const $ = (id) => document.getElementById(id);

function status(text, kind) {
  const line = $("status");
  line.textContent = text;
  line.className = "status " + (kind || "");
}

function log(parts, kind) {
  const item = document.createElement("li");
  if (kind) item.className = kind;
  for (const [text, cls] of parts) {
    const span = document.createElement("span");
    span.textContent = text;
    if (cls) span.className = cls;
    item.appendChild(span);
  }
  $("log").appendChild(item);
  $("log").scrollTop = $("log").scrollHeight;
  return item;
}

function send(frame, what) {
  sent.push(what);
  socket.send(JSON.stringify(frame));
}

function ask(messageType, payload, what) {
  send({ to: CHAT, messageType, payload }, what);
}

function showOnline(users) {
  const list = $("online");
  const people = $("people");
  list.replaceChildren();
  people.replaceChildren();
  for (const user of users) {
    const item = document.createElement("li");
    item.textContent = user === me ? user + " (you)" : user;
    item.dataset.user = user;
    if (user === me) {
      item.className = "me";
    } else {
      item.addEventListener("click", () => { $("to").value = user; $("text").focus(); });
      const option = document.createElement("option");
      option.value = user;
      people.appendChild(option);
    }
    list.appendChild(item);
  }
}

// One answer to a frame this page sent: {"ack"}, {"acknowledged"}, or an ERROR_REPLY.
function answered(frame) {
  const what = sent.shift() || { kind: "unknown" };
  if (frame.ack !== undefined) {
    waiting.set(frame.ack, what);
  } else if (frame.signalType === "ERROR_REPLY") {
    log([["Refused: " + frame.description, null]], "error");
  }
}

// A reply or error reply to a message this page sent.
function replied(frame) {
  const what = waiting.get(frame.replyTo);
  waiting.delete(frame.replyTo);
  if (!what) return;
  if (!me && typeof frame.to === "string" && frame.to.startsWith("user:")) {
    me = frame.to.slice("user:".length);
    status("Connected as " + me + ".", "up");
  }
  if (frame.signalType === "ERROR_REPLY") {
    log([["Not sent: " + frame.description, null]], "error");
    return;
  }
  if (what.kind === "who") {
    showOnline(frame.payload.online || []);
  } else if (what.kind === "say") {
    const note = frame.payload.delivered === "now" ? "delivered" : "kept until " + what.to + " is back";
    what.item.appendChild(Object.assign(document.createElement("span"), { className: "note", textContent: "(" + note + ")" }));
  }
}

function flushAcks() {
  if (!socket || socket.readyState !== WebSocket.OPEN || acks.length === 0) return;
  while (acks.length > 0) send({ ack: acks.splice(0, 256) }, { kind: "ack" });
}

// A message addressed to this user, kept or not. The sender shown is what the host vouches
// for: the envelope's `from`, the handler that pushed it. Only `chat` sets a Chat's
// `payload.from` from the host's word on who said it, so only then is that the sender; any
// other handler's push is shown as its own, whatever its payload claims.
function heard(frame) {
  const kept = frame.headers && frame.headers["switchboard-kept"] !== undefined;
  if (kept) acks.push(frame.id);
  if (shown.has(frame.id)) return;
  shown.add(frame.id);
  if (frame.messageType === "Chat" && frame.from === CHAT) {
    const chat = frame.payload;
    log([[chat.from, "from"], [": " + chat.text, "text"]], "theirs");
  } else {
    const what = frame.messageType + " " + JSON.stringify(frame.payload);
    log([[String(frame.from), "from"], [": " + what, "text"]], "theirs");
  }
}

function received(event) {
  if (event.target !== socket) return;
  let frame;
  try { frame = JSON.parse(event.data); } catch { return; }
  if (frame.ack !== undefined || frame.acknowledged !== undefined) return answered(frame);
  // The host's refusal of a frame of this connection (other error replies answer messages).
  const refusal = frame.headers && frame.headers["switchboard-refused-frame"] !== undefined;
  if (frame.signalType === "ERROR_REPLY" && refusal) return answered(frame);
  if (frame.signalType === "REPLY" || frame.signalType === "ERROR_REPLY") return replied(frame);
  if (frame.signalType === "MESSAGE") return heard(frame);
}

function connect(token) {
  if (socket) socket.close();
  sent.length = 0;
  waiting.clear();
  acks = [];
  me = null;
  clearInterval(poll);
  clearInterval(flushing);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(scheme + "//" + location.host + "/v1/ws", ["switchboard.v1", token]);
  status("Connecting…");
  socket.addEventListener("open", (event) => {
    if (event.target !== socket) return;
    $("login").hidden = true;
    flushing = setInterval(flushAcks, ACK_MS);
    $("room").hidden = false;
    ask("Who", {}, { kind: "who" });
    poll = setInterval(() => ask("Who", {}, { kind: "who" }), POLL_MS);
    $("to").focus();
  });
  socket.addEventListener("message", received);
  socket.addEventListener("close", (event) => {
    if (event.target !== socket) return;
    clearInterval(poll);
    clearInterval(flushing);
    const why = event.code === 4001 ? "your token expired" : event.reason || "code " + event.code;
    status("Disconnected: " + why + ".", "down");
    $("login").hidden = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    connect($("token").value.trim());
  });
  $("say").addEventListener("submit", (event) => {
    event.preventDefault();
    const to = $("to").value.trim();
    const text = $("text").value;
    if (!to || !text.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    const item = log([["you → " + to, "from"], [": " + text, "text"]], "mine");
    ask("Say", { to, text }, { kind: "say", to, item });
    $("text").value = "";
  });
});
