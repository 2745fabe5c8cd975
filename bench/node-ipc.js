// The seeds' peer (shared/seeds/000): a server that drives a child process over Node's IPC
// channel with `sendAndWait`, a waiter per request correlated by id. Keeps IN_FLIGHT
// requests in flight for SECONDS and prints round trips per second as JSON.
//
//   node bench/node-ipc.js [IN_FLIGHT [SECONDS]]
"use strict";
const { fork } = require("child_process");

if (process.argv[2] === "child") {
  // The bot: answers every server event with its own event, echoing the payload.
  process.on("message", (event) => {
    process.send({ id: event.id, event_type: "PONG", payload: event.payload });
  });
  return;
}

const inFlight = Number(process.argv[2] || 64);
const seconds = Number(process.argv[3] || 5);
const child = fork(__filename, ["child"]);
const waiting = new Map();
let nextId = 0;

child.on("message", (event) => {
  const resolve = waiting.get(event.id);
  waiting.delete(event.id);
  resolve(event);
});

function sendAndWait(event) {
  const id = nextId++;
  return new Promise((resolve) => {
    waiting.set(id, resolve);
    child.send({ id, ...event });
  });
}

async function lane(until, counts) {
  while (Date.now() < until) {
    const reply = await sendAndWait({ event_type: "PING", payload: { n: 1 } });
    if (reply.event_type !== "PONG" || reply.payload.n !== 1) throw new Error("wrong answer");
    counts.done++;
  }
}

(async () => {
  const warm = { done: 0 };
  await Promise.all(Array.from({ length: inFlight }, () => lane(Date.now() + 1000, warm)));
  const counts = { done: 0 };
  const started = process.hrtime.bigint();
  const until = Date.now() + seconds * 1000;
  await Promise.all(Array.from({ length: inFlight }, () => lane(until, counts)));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ round_trips: counts.done, seconds: elapsed, per_second: counts.done / elapsed }));
  child.kill();
})();
