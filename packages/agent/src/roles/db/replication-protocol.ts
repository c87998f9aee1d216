import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";
import { BosunError } from "@bosun/core";

/** The replication connection failed: the server refused it, or said something this client does not speak. */
export class ReplicationProtocolError extends BosunError {}

const CLIENT_LONG_PASSWORD = 0x1;
const CLIENT_LONG_FLAG = 0x4;
const CLIENT_PROTOCOL_41 = 0x200;
const CLIENT_TRANSACTIONS = 0x2000;
const CLIENT_SECURE_CONNECTION = 0x8000;
const CLIENT_PLUGIN_AUTH = 0x80000;
const COM_QUERY = 0x03;
const COM_BINLOG_DUMP = 0x12;
/** A semi-synchronous replica's packets start so (MariaDB's ReplSemiSyncBase::k_packet_magic_num). */
export const SEMI_SYNC_MAGIC = 0xef;

/** mysql_native_password: SHA1(password) XOR SHA1(seed + SHA1(SHA1(password))); nothing for an empty password. */
export function nativePassword(password: string, seed: Buffer): Buffer {
  if (password === "") return Buffer.alloc(0);
  const sha1 = (...parts: Buffer[]) => createHash("sha1").update(Buffer.concat(parts)).digest();
  const once = sha1(Buffer.from(password, "utf8"));
  const mask = sha1(seed, sha1(once));
  return Buffer.from(once.map((b, i) => b ^ mask[i]!));
}

/**
 * The client half of MariaDB's wire protocol that a replica needs and no maintained Node.js
 * client exposes: log in (mysql_native_password), run a few SET statements, ask for the binary
 * log from a position (COM_BINLOG_DUMP), read the event packets as they come, and write the
 * semi-synchronous replica's acknowledgement packets on the same connection. Packets are framed
 * as the protocol does: a 3-byte length and a sequence number.
 */
export class ReplicationConnection {
  readonly #socket: Socket;
  #buffer: Buffer = Buffer.alloc(0);
  #partial: Buffer[] = [];
  #waiting: ((packet: Buffer) => void) | undefined;
  readonly #queue: Buffer[] = [];
  #closed: Error | undefined;
  #onClose: ((error: Error) => void) | undefined;
  #seq = 0;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#take(chunk));
    const closed = (error: Error) => {
      if (this.#closed) return;
      this.#closed = error;
      this.#onClose?.(error);
      this.#waiting?.(Buffer.alloc(0));
    };
    socket.on("error", (error) => closed(error));
    socket.on("close", () => closed(new ReplicationProtocolError("REPLICATION_CLOSED", "the server closed the replication connection")));
  }

  /** Connects and logs in; the socket path wins over host and port. */
  static async open(target: { socket?: string; host: string; port: number; user: string; password: string }, signal: AbortSignal): Promise<ReplicationConnection> {
    const socket = target.socket ? connect(target.socket) : connect(target.port, target.host);
    const onAbort = () => socket.destroy(new ReplicationProtocolError("REPLICATION_ABORTED", "stopping"));
    signal.addEventListener("abort", onAbort, { once: true });
    const connection = new ReplicationConnection(socket);
    try {
      await connection.#login(target.user, target.password);
      return connection;
    } catch (error) {
      socket.destroy();
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Called once, when the connection ends for any reason. */
  onClose(fn: (error: Error) => void): void {
    this.#onClose = fn;
    if (this.#closed) fn(this.#closed);
  }

  close(): void {
    this.#socket.destroy();
  }

  /** Runs a statement that returns no rows (SET …); an error packet rejects with the server's message. */
  async execute(sql: string): Promise<void> {
    this.#seq = 0;
    this.#write(Buffer.concat([Buffer.from([COM_QUERY]), Buffer.from(sql, "utf8")]));
    const reply = await this.#read();
    if (reply[0] === 0xff) throw this.#serverError(reply, sql);
    if (reply[0] !== 0x00) throw new ReplicationProtocolError("REPLICATION_PROTOCOL", `${sql}: expected an OK packet, got 0x${reply[0]?.toString(16)}`);
  }

  /** Asks for the binary log from `file` at `position`; events then arrive through `nextEvent`. */
  startDump(serverId: number, file: string, position: number): void {
    this.#seq = 0;
    const head = Buffer.alloc(11);
    head[0] = COM_BINLOG_DUMP;
    head.writeUInt32LE(position, 1);
    head.writeUInt16LE(0, 5);
    head.writeUInt32LE(serverId, 7);
    this.#write(Buffer.concat([head, Buffer.from(file, "latin1")]));
  }

  /** The next packet of the dump: an event (after its OK byte), or a rejection when the server sent an error or went away. */
  async nextPacket(): Promise<Buffer> {
    const packet = await this.#read();
    if (packet.length === 0) throw this.#closed ?? new ReplicationProtocolError("REPLICATION_CLOSED", "the replication connection ended");
    if (packet[0] === 0xff) throw this.#serverError(packet, "the binary-log dump");
    if (packet[0] === 0xfe && packet.length < 9) throw new ReplicationProtocolError("REPLICATION_CLOSED", "the server ended the binary-log dump");
    return packet;
  }

  /** A semi-synchronous acknowledgement: every event up to `position` of `file` is safe. A new command: sequence 0. */
  acknowledge(file: string, position: number): void {
    const body = Buffer.alloc(9 + Buffer.byteLength(file, "latin1") + 1);
    body[0] = SEMI_SYNC_MAGIC;
    body.writeBigUInt64LE(BigInt(position), 1);
    body.write(file, 9, "latin1");
    this.#seq = 0;
    this.#write(body);
  }

  async #login(user: string, password: string): Promise<void> {
    const greeting = await this.#read();
    if (greeting.length === 0) throw this.#closed ?? new ReplicationProtocolError("REPLICATION_CLOSED", "the server closed the connection before greeting");
    if (greeting[0] === 0xff) throw this.#serverError(greeting, "connecting");
    if (greeting[0] !== 10) throw new ReplicationProtocolError("REPLICATION_PROTOCOL", `unsupported protocol version ${greeting[0]}`);
    let at = greeting.indexOf(0, 1) + 1 + 4;
    const seedStart = greeting.subarray(at, at + 8);
    at += 8 + 1 + 2 + 1 + 2 + 2;
    const seedLength = greeting[at] ?? 0;
    at += 1 + 10;
    const rest = greeting.subarray(at, at + Math.max(13, seedLength - 8));
    const seed = Buffer.concat([seedStart, rest.subarray(0, rest.length - 1)]);
    at += rest.length;
    const plugin = greeting.subarray(at, greeting.indexOf(0, at) === -1 ? greeting.length : greeting.indexOf(0, at)).toString("latin1");
    const auth = plugin === "mysql_native_password" || plugin === "" ? nativePassword(password, seed) : Buffer.alloc(0);
    const flags = CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    const head = Buffer.alloc(32);
    head.writeUInt32LE(flags, 0);
    head.writeUInt32LE(16 * 1024 * 1024, 4);
    head[8] = 33; // utf8
    this.#write(Buffer.concat([head, Buffer.from(user, "utf8"), Buffer.from([0, auth.length]), auth, Buffer.from("mysql_native_password\0", "latin1")]));
    let reply = await this.#read();
    if (reply[0] === 0xfe) {
      // Another plugin asked for: only mysql_native_password is spoken here.
      const end = reply.indexOf(0, 1);
      const asked = reply.subarray(1, end).toString("latin1");
      if (asked !== "mysql_native_password") throw new ReplicationProtocolError("REPLICATION_AUTH", `the server wants the ${asked} authentication plugin for ${user}; the replication connection speaks mysql_native_password only`);
      this.#write(nativePassword(password, reply.subarray(end + 1, end + 21)));
      reply = await this.#read();
    }
    if (reply[0] === 0xff) throw this.#serverError(reply, `logging in as ${user}`);
    if (reply[0] !== 0x00) throw new ReplicationProtocolError("REPLICATION_PROTOCOL", `logging in: expected an OK packet, got 0x${reply[0]?.toString(16)}`);
  }

  #serverError(packet: Buffer, doing: string): ReplicationProtocolError {
    const code = packet.readUInt16LE(1);
    const message = packet.subarray(packet[3] === 0x23 ? 9 : 3).toString("utf8");
    return new ReplicationProtocolError("REPLICATION_REFUSED", `${doing}: the server answered error ${code}: ${message}`);
  }

  /** Writes one packet, numbered after the last one read (a new command sets the sequence to 0 first). */
  #write(payload: Buffer): void {
    const header = Buffer.alloc(4);
    header.writeUIntLE(payload.length, 0, 3);
    header[3] = this.#seq;
    this.#seq = (this.#seq + 1) & 0xff;
    this.#socket.write(Buffer.concat([header, payload]));
  }

  #take(chunk: Buffer): void {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk;
    while (this.#buffer.length >= 4) {
      const length = this.#buffer.readUIntLE(0, 3);
      if (this.#buffer.length < 4 + length) return;
      this.#seq = (this.#buffer[3]! + 1) & 0xff;
      const part = Buffer.from(this.#buffer.subarray(4, 4 + length));
      this.#buffer = this.#buffer.subarray(4 + length);
      // A payload of 16 MiB - 1 goes on in the next packet: one message is all of its parts.
      this.#partial.push(part);
      if (length === 0xffffff) continue;
      const packet = Buffer.concat(this.#partial);
      this.#partial = [];
      if (this.#waiting) {
        const resolve = this.#waiting;
        this.#waiting = undefined;
        resolve(packet);
      } else this.#queue.push(packet);
    }
  }

  #read(): Promise<Buffer> {
    const next = this.#queue.shift();
    if (next) return Promise.resolve(next);
    if (this.#closed) return Promise.resolve(Buffer.alloc(0));
    return new Promise((resolve) => (this.#waiting = resolve));
  }
}
