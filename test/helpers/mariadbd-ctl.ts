// What a db node's stop and start commands are in the tests (db.stopCommand, db.startCommand):
// like `systemctl start mariadb`, `start` returns once the server answers, and leaves it running
// on its own; `stop` returns once it has exited.
//   node mariadbd-ctl.ts start <dir> <port> <server-id>
//   node mariadbd-ctl.ts stop <dir>
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createConnection } from "mysql2/promise";
import { MariaDb, stopByPid } from "./mariadb.ts";

const [command, dir, port, serverId] = process.argv.slice(2);
if (command === "start" && dir && port && serverId) {
  const child = spawn("mariadbd", MariaDb.args(dir, Number(port), Number(serverId)), { detached: true, stdio: "ignore" });
  child.unref();
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mariadbd exited with ${child.exitCode}; see ${join(dir, "error.log")}`);
    try {
      await (await createConnection({ socketPath: join(dir, "mysqld.sock"), user: "root", password: "" })).end();
      break;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
} else if (command === "stop" && dir) {
  const pid = Number.parseInt(readFileSync(join(dir, "mysqld.pid"), "utf8"), 10);
  await stopByPid(pid, 60_000);
} else {
  process.stderr.write("usage: mariadbd-ctl.ts start <dir> <port> <server-id> | stop <dir>\n");
  process.exit(2);
}
