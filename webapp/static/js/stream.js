// A job's server-sent events (GET /jobs/<id>/events), read with fetch: the browser's EventSource cannot
// send the Authorization header. Like EventSource it reconnects by itself when the server ends the stream
// (every 25 s), passing the log cursor back (Last-Event-ID and ?after=) so no line comes twice.

import { Unauthorized, authHeaders, refused, session } from "./api.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Parse the text/event-stream format: `field: value` lines, a blank line ends an event, `:` a comment;
// `retry:` is the server's pause before a reconnection (longer when it is busy).
async function* events(body, hints) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (event.data.length) yield { type: event.type, data: event.data.join("\n"), id: event.id };
        event = { type: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.type = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
      else if (field === "retry" && /^\d+$/.test(text)) hints.retry = Number(text);
    }
  }
}

// Follow `jobId` until close(): `handlers.job(record)`, `handlers.log({lines, next})`, `handlers.error(
// message)` when the server refuses (404: stop; otherwise retried with a growing pause). `cursor()` is
// the caller's log cursor, sent on every (re)connection.
export function follow(jobId, cursor, handlers) {
  const generation = session.generation;
  let closed = false;
  let abort = null;
  const live = () => !closed && generation === session.generation;

  async function run() {
    let pause = 0;
    const hints = { retry: 1000 };
    while (live()) {
      abort = new AbortController();
      const after = cursor();
      const headers = authHeaders({ Accept: "text/event-stream", "Last-Event-ID": String(after) });
      try {
        const path = `/jobs/${encodeURIComponent(jobId)}/events?after=${after}`;
        const response = await fetch(path, { headers, signal: abort.signal, cache: "no-store" });
        if (!live()) return;
        if (response.status === 401) throw refused();
        if (!response.ok) {
          const data = await response.json().catch(() => ({}));
          handlers.error(data, response.status);
          if (response.status === 404) return;
          pause = Math.min(10000, pause * 2 || 1000);
        } else {
          for await (const event of events(response.body, hints)) {
            if (!live()) return;
            const data = JSON.parse(event.data);
            if (event.type === "job") handlers.job(data);
            else if (event.type === "log") handlers.log(data);
          }
          pause = hints.retry;
        }
      } catch (e) {
        if (!live() || e instanceof Unauthorized) return;
        pause = Math.min(10000, pause * 2 || 1000);  // the network dropped: try again, like EventSource
      }
      await sleep(pause);
    }
  }

  run();
  return {
    close() {
      closed = true;
      if (abort) abort.abort();
    },
  };
}
