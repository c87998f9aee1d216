import { createConnection } from "node:net";
import { BosunError } from "@bosun/core";

/** HAProxy's runtime API could not be reached or refused a command; `code` says which. */
export class HaproxyError extends BosunError {}

/** What one server of a backend looks like to HAProxy (`show stat`). */
export interface ServerStat {
  name: string;
  /** UP, DOWN, MAINT, DRAIN, NOLB, "UP 1/3", "no check"... */
  status: string;
  /** Sessions using the server now. */
  sessions: number;
  /** The last check's verdict (L7OK, L4CON...), empty when none ran. */
  check: string;
  address: string;
}

// Names and addresses come from node records: anything that could end a runtime command or start
// another (';', a newline, a space) is refused before it reaches the socket.
const word = /^[A-Za-z0-9_.:/[\]-]+$/;

/** A runtime API command built from words that are each checked; never a string pasted together from input. */
export function runtimeCommand(...words: string[]): string {
  for (const w of words) if (!word.test(w)) throw new HaproxyError("HAPROXY_BAD_WORD", `refusing to send ${JSON.stringify(w)} to HAProxy's runtime API`);
  return words.join(" ");
}

/** HAProxy's runtime API on its admin socket: one connection per command, as HAProxy's non-interactive mode expects. */
export class RuntimeApi {
  readonly socket: string;
  readonly #timeoutMs: number;

  constructor(options: { socket: string; timeoutMs?: number }) {
    this.socket = options.socket;
    this.#timeoutMs = options.timeoutMs ?? 5000;
  }

  send(command: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const connection = createConnection(this.socket);
      connection.setTimeout(this.#timeoutMs, () => connection.destroy(new HaproxyError("HAPROXY_TIMEOUT", `HAProxy did not answer "${command}" within ${this.#timeoutMs} ms`)));
      connection.on("connect", () => connection.end(`${command}\n`));
      connection.on("data", (chunk: Buffer) => chunks.push(chunk));
      connection.on("error", (error) => reject(new HaproxyError("HAPROXY_SOCKET", `HAProxy's runtime socket ${this.socket}: ${error.message}`, { cause: error })));
      connection.on("close", (hadError) => {
        if (!hadError) resolve(Buffer.concat(chunks).toString("utf8"));
      });
    });
  }

  /** Sends a command whose success HAProxy answers with an empty reply or one of `ok`; anything else is its error. */
  async expect(command: string, ok: RegExp = /^$/): Promise<void> {
    const answer = (await this.send(command)).trim();
    if (!ok.test(answer)) throw new HaproxyError("HAPROXY_REFUSED", `HAProxy refused "${command}": ${answer.split("\n")[0]}`);
  }

  /** The servers of one backend, from `show stat` (CSV with a header). */
  async servers(backend: string): Promise<ServerStat[]> {
    const text = await this.send(runtimeCommand("show", "stat", backend, "4", "-1"));
    const lines = text.split("\n").filter((l) => l.trim() !== "");
    const header = lines[0]?.replace(/^# /, "").split(",") ?? [];
    const at = (name: string) => header.indexOf(name);
    if (at("svname") < 0) throw new HaproxyError("HAPROXY_STAT", `unexpected answer to show stat: ${text.slice(0, 200)}`);
    return lines.slice(1).map((line) => {
      const f = line.split(",");
      return { name: f[at("svname")] ?? "", status: f[at("status")] ?? "", sessions: Number(f[at("scur")] ?? 0) || 0, check: f[at("check_status")] ?? "", address: f[at("addr")] ?? "" };
    });
  }

  /** The worker's pid (`show info`), which a reload changes and a runtime change does not. */
  async pid(): Promise<number> {
    const match = /^Pid: (\d+)$/m.exec(await this.send("show info"));
    if (!match) throw new HaproxyError("HAPROXY_INFO", "show info did not give a pid");
    return Number(match[1]);
  }
}
