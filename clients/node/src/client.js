// `Client`: several node addresses, reads from any healthy node, writes to the leader.
//
// Reads go to the node that answered last and move on to the next configured node when a
// node fails (UNAVAILABLE, a connection error, a deadline); they never follow a leader hint.
//
// Writes (and admin calls) go to the last known leader and move to another node only when the
// write certainly did not run (`writeNotRun`): no connection could be opened, or the node said
// no leader could take it: UNAVAILABLE with the leader's address in `x-vault-leader` (tried
// next) or ending "(no leader known)". Any other failure, an UNAVAILABLE saying "the write may
// or may not have been applied" or "rotation of ... failed", or a connection lost mid-call
// (CANCELLED) included, is thrown to the caller, who knows whether a repeat is safe
// (`put(..., {cas})` is). Only a configured node is remembered as leader. Both retry, with
// backoff, for at most `retryForMs` before throwing the last error.
import { readFileSync } from "node:fs";
import { inspect } from "node:util";
import { Code, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { Admin, Secrets } from "../gen/vault/v1/vault_pb.js";
import { errorFor, fromError } from "./errors.js";
import { Watch } from "./watch.js";

// connect-node reports a lost HTTP/2 session (a node that died) as CANCELLED: we never cancel
// a unary call ourselves, so a read moves on from it like from UNAVAILABLE.
const READ_RETRY = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Canceled]);
// Socket errors that mean no connection was opened, so the request was never sent.
const NOT_CONNECTED = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/** Whether a failed read may move to another node. */
export function readMayMove(err) {
  return READ_RETRY.has(err.code);
}

/**
 * Whether a failed write certainly did not run, so another node may take it: no connection
 * could be opened (`notConnected`), or the node said no leader could take it (the server's
 * "no leader could take this request (leader: ADDR)" with `x-vault-leader`, or "... (no leader
 * known)"). Not: a lost connection, a timeout, "...; the write may or may not have been
 * applied", "rotation of NAME failed: ...", an unavailable key manager.
 */
export function writeNotRun(err, notConnected = false) {
  if (err.code !== Code.Unavailable) return false;
  return notConnected || Boolean(err.leader) || err.rawMessage.endsWith("(no leader known)");
}

/** Whether `e` (as a call threw it) says no connection could be opened. */
function notConnected(e) {
  for (let c = e; c; c = c.cause) {
    if (NOT_CONNECTED.has(c.code)) return true;
  }
  return false;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `host:port` from `host:port`, `http://host:port` or `https://host:port/`. */
function target(addr) {
  return addr.trim().replace(/^https?:\/\//, "").replace(/\/+$/, "");
}

function toSecret(r) {
  const secret = {
    name: r.name,
    version: Number(r.version),
    createdAtMs: Number(r.createdAtMs),
    get text() {
      return new TextDecoder().decode(this.value);
    },
  };
  // Not enumerable: a logged secret does not show its value.
  Object.defineProperty(secret, "value", { value: r.value, enumerable: false });
  return secret;
}

export class Client {
  #token;
  #tls;
  #nodeOptions;
  #transports = new Map();
  #sessions = [];
  #reader = 0;
  #leader = undefined;

  /**
   * @param {object} opts
   * @param {string[]|string} opts.addrs node API addresses (`host:port`, optionally with a scheme)
   * @param {string} [opts.token] sent as `authorization: Bearer` (reads need none)
   * @param {string} [opts.caFile] turns on TLS (so does an `https://` address)
   * @param {string} [opts.certFile] client certificate (reader rules by CN), with `keyFile`
   * @param {string} [opts.keyFile]
   * @param {number} [opts.timeoutMs] per call (default 5000)
   * @param {number} [opts.retryForMs] how long a call keeps trying other nodes (default 15000)
   * @param {number} [opts.keepaliveMs] HTTP/2 pings on an idle connection, so a quiet watch is
   *   not closed by the node's idle timeout (`VAULT_API_IDLE_SECS`) (default 60000)
   */
  constructor({
    addrs,
    token,
    caFile,
    certFile,
    keyFile,
    timeoutMs = 5000,
    retryForMs = 15000,
    keepaliveMs = 60000,
  } = {}) {
    const list = (typeof addrs === "string" ? addrs.split(",") : addrs ?? []).map((a) => a.trim()).filter(Boolean);
    if (list.length === 0) throw new TypeError("no vault address given");
    if (Boolean(certFile) !== Boolean(keyFile)) {
      throw new TypeError("a client certificate needs both certFile and keyFile");
    }
    this.#tls = Boolean(caFile || certFile || list.some((a) => a.startsWith("https://")));
    this.addrs = list.map(target);
    this.#token = token || undefined;
    this.#nodeOptions = {};
    if (caFile) this.#nodeOptions.ca = readFileSync(caFile);
    if (certFile) {
      this.#nodeOptions.cert = readFileSync(certFile);
      this.#nodeOptions.key = readFileSync(keyFile);
    }
    this.timeoutMs = timeoutMs;
    this.retryForMs = retryForMs;
    this.keepaliveMs = keepaliveMs;
  }

  /**
   * A client from `VAULT_ADDR` (comma-separated), `VAULT_TOKEN` or `VAULT_TOKEN_FILE`,
   * `VAULT_CACERT`, `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY`; `overrides` win.
   */
  static fromEnv(env = process.env, overrides = {}) {
    let token = env.VAULT_TOKEN || undefined;
    if (!token && env.VAULT_TOKEN_FILE) token = readFileSync(env.VAULT_TOKEN_FILE, "utf8").trim() || undefined;
    return new Client({
      addrs: env.VAULT_ADDR ?? "",
      token,
      caFile: env.VAULT_CACERT || undefined,
      certFile: env.VAULT_CLIENT_CERT || undefined,
      keyFile: env.VAULT_CLIENT_KEY || undefined,
      ...overrides,
    });
  }

  /** Closes the connections to the nodes (a later call opens them again). */
  close() {
    for (const s of this.#sessions) s.abort();
    this.#sessions = [];
    this.#transports.clear();
  }

  toString() {
    return `Client(addrs=${JSON.stringify(this.addrs)}, tls=${this.#tls}, token=<${this.#token ? "set" : "none"}>)`;
  }

  [inspect.custom]() {
    return this.toString();
  }

  toJSON() {
    return { addrs: this.addrs, tls: this.#tls, token: this.#token ? "<set>" : "<none>" };
  }

  // ---- reads ---------------------------------------------------------------------------

  /** The newest live version of `name`, or `version`: `{name, version, value, text, createdAtMs}`. */
  async get(name, version = 0) {
    return toSecret(await this.#read("Secrets", "getSecret", { name, version: BigInt(version) }));
  }

  /** Several secrets in one call: a Map of name to its secret or its typed error. */
  async getMany(names) {
    const res = await this.#read("Secrets", "batchGetSecrets", { requests: names.map((name) => ({ name })) });
    const out = new Map();
    for (const item of res.results) {
      if (item.result.case === "secret") out.set(item.name, toSecret(item.result.value));
      else out.set(item.name, errorFor(item.result.value?.code ?? Code.Unknown, item.result.value?.message ?? ""));
    }
    return out;
  }

  /** Every secret under `prefix` (metadata only). */
  async *list(prefix = "") {
    let pageToken = "";
    do {
      const page = await this.#read("Secrets", "listSecrets", { prefix, pageToken });
      yield* page.secrets;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  async versions(name) {
    return this.#read("Secrets", "listVersions", { name });
  }

  /** ServerStatus of the node that answers (no token needed). */
  async status() {
    return this.#read("Admin", "serverStatus", {});
  }

  async clusterStatus() {
    return this.#read("Admin", "clusterStatus", {});
  }

  /**
   * Changes to `names` and `prefixes` as an async iterator of `{revision, events}`, surviving
   * the loss of its node (see `Watch`).
   */
  watch({ names = [], prefixes = [], afterRevision = 0, progress = false, giveUpAfterMs } = {}) {
    return new Watch(this, { names, prefixes, afterRevision, progress, giveUpAfterMs });
  }

  // ---- writes --------------------------------------------------------------------------

  /**
   * Writes a new version; returns its number. `cas`: only if the current version is this
   * (0: only if the secret does not exist), else `CasMismatchError`.
   */
  async put(name, value, { cas, maxVersions } = {}) {
    const req = { name, value: typeof value === "string" ? new TextEncoder().encode(value) : value };
    if (cas !== undefined && cas !== null) req.expectedVersion = BigInt(cas);
    if (maxVersions !== undefined) req.maxVersions = maxVersions;
    return Number((await this.#write("Secrets", "putSecret", req)).version);
  }

  async delete(name, { destroy = false } = {}) {
    await this.#write("Secrets", "deleteSecret", { name, destroy });
  }

  async setRotation(name, everySecs, generator) {
    return this.#write("Secrets", "setRotation", { name, everySecs: BigInt(everySecs), generator });
  }

  /** Rotates now with the secret's policy; returns the new version. */
  async rotate(name) {
    return Number((await this.#write("Secrets", "rotateSecret", { name })).version);
  }

  /** A reader rule (admin): clients matching `cidrs` or `certCns` may read `grants`. */
  async createReader(name, { grants, cidrs = [], certCns = [], replace = false }) {
    await this.#write("Admin", "createReader", { name, grants, cidrs, certCns, replace });
  }

  async deleteReader(name) {
    await this.#write("Admin", "deleteReader", { name });
  }

  // ---- plumbing (the underscore ones are for Watch) ------------------------------------

  _headers() {
    return this.#token ? { authorization: `Bearer ${this.#token}` } : {};
  }

  _readerIndex() {
    return this.#reader;
  }

  #transport(addr) {
    let t = this.#transports.get(addr);
    if (!t) {
      const baseUrl = `${this.#tls ? "https" : "http"}://${addr}`;
      const nodeOptions = this.#tls ? this.#nodeOptions : undefined;
      // One HTTP/2 session per node, kept to close it in close().
      const pings = { pingIntervalMs: this.keepaliveMs, pingTimeoutMs: 20000, pingIdleConnection: true };
      const sessionManager = new Http2SessionManager(baseUrl, pings, nodeOptions);
      this.#sessions.push(sessionManager);
      t = createGrpcTransport({ baseUrl, nodeOptions, sessionManager });
      this.#transports.set(addr, t);
    }
    return t;
  }

  _secrets(addr) {
    return createClient(Secrets, this.#transport(addr));
  }

  #stub(addr, service) {
    return createClient(service === "Secrets" ? Secrets : Admin, this.#transport(addr));
  }

  #read(service, method, req) {
    const n = this.addrs.length;
    const order = () => Array.from({ length: n }, (_, k) => this.addrs[(this.#reader + k) % n]);
    const good = (addr) => {
      const i = this.addrs.indexOf(addr);
      if (i >= 0) this.#reader = i;
    };
    return this.#call(service, method, req, order, good, readMayMove, false);
  }

  #write(service, method, req) {
    const order = () => [...(this.#leader ? [this.#leader] : []), ...this.addrs.filter((a) => a !== this.#leader)];
    const good = (addr) => {
      if (this.addrs.includes(addr)) this.#leader = addr;
    };
    return this.#call(service, method, req, order, good, writeNotRun, true);
  }

  async #call(service, method, req, order, good, mayMove, followHints) {
    const deadline = Date.now() + this.retryForMs;
    let backoff = 50;
    let last;
    for (;;) {
      const queue = order();
      const tried = new Set();
      while (queue.length) {
        const addr = queue.shift();
        if (tried.has(addr)) continue;
        tried.add(addr);
        try {
          const res = await this.#stub(addr, service)[method](req, {
            headers: this._headers(),
            timeoutMs: this.timeoutMs,
          });
          good(addr);
          return res;
        } catch (e) {
          const err = fromError(e);
          if (!mayMove(err, notConnected(e))) throw err;
          last = err;
          if (followHints && err.leader) {
            // For this call; remembered as leader once it answers, if configured (`good`).
            const hint = target(err.leader);
            if (!tried.has(hint)) queue.unshift(hint);
          }
        }
      }
      if (Date.now() + backoff > deadline) throw last;
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 1000);
    }
  }
}
