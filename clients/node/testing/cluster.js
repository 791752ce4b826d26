// A real vault cluster for the tests: `vault-testcluster` (tests/src/bin in the workspace),
// whose path the Rust test that runs this suite puts in VAULT_TESTCLUSTER.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

export class TestCluster {
  static async start({ nodes = 3, tls = false, env = {}, readerCerts = [] } = {}) {
    const bin = process.env.VAULT_TESTCLUSTER;
    if (!bin) throw new Error("VAULT_TESTCLUSTER is not set: run through `make test` (tests/tests/clients_polyglot.rs)");
    const args = ["--nodes", String(nodes), ...(tls ? ["--tls"] : [])];
    for (const [k, v] of Object.entries(env)) args.push(`--env=${k}=${v}`);
    for (const cn of readerCerts) args.push(`--reader-cert=${cn}`);
    const c = new TestCluster(spawn(bin, args, {
      stdio: ["pipe", "pipe", "inherit"],
    }));
    const hello = await c.#reply();
    c.addrs = hello.addrs;
    c.token = hello.token;
    c.caFile = hello.ca_file ?? undefined;
    /** CN -> {cert_file, key_file} */
    c.readerCerts = hello.reader_certs ?? {};
    return c;
  }

  #proc;
  #lines;

  constructor(proc) {
    this.#proc = proc;
    this.#lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  }

  async #reply() {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error("vault-testcluster exited");
    const reply = JSON.parse(value);
    if (reply.error) throw new Error(reply.error);
    return reply;
  }

  async #command(cmd) {
    this.#proc.stdin.write(`${cmd}\n`);
    return this.#reply();
  }

  kill(i) {
    return this.#command(`kill ${i}`);
  }

  start(i) {
    return this.#command(`start ${i}`);
  }

  async leader() {
    return (await this.#command("leader")).leader;
  }

  async close() {
    if (this.#proc.exitCode !== null) return;
    const exited = new Promise((r) => this.#proc.once("exit", r));
    this.#proc.stdin.end("quit\n");
    await exited;
  }
}
