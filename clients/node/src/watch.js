// `Watch`: an async iterator over a WatchSecrets stream that outlives the node it is on.
//
// Each message holds every event of its revisions and the revision to resume from. When the
// stream breaks (the node stops, the connection drops, the server cuts a slow consumer) the
// watch connects to the next node with `afterRevision` = the last revision received, so
// nothing is missed and nothing comes twice. A revision one node no longer keeps (OUT_OF_RANGE:
// pruned, or the node installed a snapshot) is asked of the other nodes; when none keeps it
// the watch throws `CompactedError`: read the secrets again and watch anew.
import { Code } from "@connectrpc/connect";
import { CompactedError, UnavailableError, fromError } from "./errors.js";

const RESUMABLE = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Aborted,
  Code.Canceled,
  Code.Internal,
  Code.Unknown,
]);

export const Change = Object.freeze({
  0: "UNSPECIFIED",
  1: "PUT",
  2: "DELETE",
  3: "UNDELETE",
  4: "DESTROY",
  5: "ROTATION",
  6: "REMOVE",
  7: "RESET",
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Watch {
  #client;
  #req;
  #progress;
  #giveUpAfterMs;
  #abort = null;
  #closed = false;
  #index;

  constructor(client, { names = [], prefixes = [], afterRevision = 0, progress = false, giveUpAfterMs } = {}) {
    this.#client = client;
    this.#req = { names, prefixes };
    this.#progress = progress;
    this.#giveUpAfterMs = giveUpAfterMs ?? client.retryForMs;
    this.#index = client._readerIndex();
    /** The last revision received (where a resume starts). */
    this.revision = Number(afterRevision);
    /** The address now streaming. */
    this.node = undefined;
    /** How many times the stream broke and the watch moved on. */
    this.resumes = 0;
  }

  /** Ends the iteration (from anywhere). */
  close() {
    this.#closed = true;
    this.#abort?.abort();
  }

  async *[Symbol.asyncIterator]() {
    const addrs = this.#client.addrs;
    let failingSince = null;
    let backoff = 50;
    const compactedOn = new Set();
    while (!this.#closed) {
      this.node = addrs[this.#index % addrs.length];
      const abort = new AbortController();
      this.#abort = abort;
      let failure;
      try {
        const stream = this.#client._secrets(this.node).watchSecrets(
          { ...this.#req, afterRevision: BigInt(this.revision) },
          { signal: abort.signal, headers: this.#client._headers() },
        );
        for await (const msg of stream) {
          failingSince = null;
          backoff = 50;
          compactedOn.clear();
          const revision = Number(msg.revision);
          this.revision = Math.max(this.revision, revision);
          const events = msg.events.map((ev) => ({
            name: ev.name,
            version: Number(ev.version),
            kind: Change[ev.kind] ?? "UNSPECIFIED",
            revision: Number(ev.revision),
          }));
          if (events.length || this.#progress) yield { revision, events };
          if (this.#closed) return;
        }
      } catch (e) {
        if (this.#closed) return;
        const err = fromError(e);
        if (err instanceof CompactedError) {
          compactedOn.add(this.node);
          if (addrs.every((a) => compactedOn.has(a))) {
            err.revision = this.revision;
            throw err;
          }
          this.#index += 1;
          continue;
        }
        if (!RESUMABLE.has(err.code)) throw err;
        failure = err;
      } finally {
        abort.abort();
      }
      if (this.#closed) return;
      this.#index += 1;
      this.resumes += 1;
      const now = Date.now();
      if (failingSince === null) {
        failingSince = now;
      } else {
        if (now - failingSince > this.#giveUpAfterMs) {
          throw failure ?? new UnavailableError("every watch stream ended", Code.Unavailable);
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 1000);
      }
    }
  }
}
