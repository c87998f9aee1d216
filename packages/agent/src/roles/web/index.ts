import { SignedRecords, stateKeys } from "@bosun/aws";
import { desiredReleaseRecord, errorMessage, type DesiredRelease, type Logger, type WebReport } from "@bosun/core";
import type { CommandDefinition } from "../../command.ts";
import type { BootReport, Role, RoleServices } from "../../role.ts";
import { activate } from "./commands/activate.ts";
import { release } from "./commands/release.ts";
import { rollback } from "./commands/rollback.ts";
import { ReleaseRoot } from "./release-root.ts";
import { syncToDesired } from "./sync.ts";
import { waitForDrains } from "./leave.ts";

/**
 * The web role: the node serves apps from deploy roots it keeps in step with the fleet's
 * releases (release, activate, rollback), reconciles each app with its desired release once
 * subscribed and at boot, and reports the commit each app serves.
 */
export function webRole(services: RoleServices): Role {
  const { settings, logger } = services;
  const apps = Object.entries(settings.apps);
  const rootOf = (app: string) => new ReleaseRoot({ logger }, { app, settings: settings.apps[app]!, buildCgroup: settings.buildCgroup });

  const records = new SignedRecords({ store: services.store, trust: services.trust });
  /** The app's desired release, checked under the trust policy; a refused record is reported and not acted on. */
  const readDesired = async (app: string, log: Logger): Promise<DesiredRelease | "refused" | undefined> => {
    const read = await records.read(stateKeys.release(app), desiredReleaseRecord);
    if (read.ok) return read.value;
    const { envelope: _envelope, ...refusal } = read.refusal;
    log.warn({ ...refusal }, `refused the desired release record: ${refusal.reason}`);
    const { reason, detail, verified, messageId, type, issuer, record } = refusal;
    await services.events
      .emit("refused", messageId ?? record, { node: services.node, reason, detail, verified, record, ...(messageId ? { messageId } : {}), ...(type ? { type } : {}), ...(issuer ? { issuer } : {}) })
      .catch((error: unknown) => log.error({ err: error }, "could not publish the refusal"));
    return "refused";
  };

  /** Brings every app to its desired release; reports what it did per app. */
  const syncAll = async (signal: AbortSignal, when: string): Promise<BootReport> => {
    const report: BootReport = { role: "web", items: [], failures: [] };
    for (const [app] of apps) {
      const started = performance.now();
      const log = logger.child({ app });
      const took = () => Math.round(performance.now() - started);
      try {
        const desired = await readDesired(app, log);
        if (desired === "refused") {
          report.items.push({ name: app, action: "refused", detail: "its desired release record failed its checks", durationMs: took() });
          report.failures.push(`${app}: the desired release record was refused`);
          continue;
        }
        if (!desired) {
          log.info("no release of this app published yet");
          report.items.push({ name: app, action: "no-release", durationMs: took() });
          continue;
        }
        const action = await syncToDesired(rootOf(app), desired, signal, log);
        log.info({ commit: desired.commit, action }, `app checked against its desired release ${when}`);
        report.items.push({ name: app, action, detail: desired.commit, durationMs: took() });
      } catch (error) {
        if (signal.aborted) break;
        log.error({ err: error }, `could not bring app to its desired release ${when}`);
        report.failures.push(`${app}: ${errorMessage(error)}`);
      }
    }
    return report;
  };

  return {
    name: "web",
    commands: [release, activate, rollback] as CommandDefinition<never>[],
    // A release published between the boot-time sync and the subscription reached no queue.
    onSubscribed: async (signal) => void (await syncAll(signal, "after subscribing")),
    boot: (signal) => syncAll(signal, "at boot"),
    // Decommissioned: the balancers drain this node before it goes.
    leave: async (signal) => void (await waitForDrains(services, logger.child({ role: "web" }), signal)),
    async report(): Promise<WebReport> {
      const releases: Record<string, string> = {};
      for (const [app] of apps) {
        const commit = await rootOf(app).current();
        if (commit) releases[app] = commit;
      }
      return { releases, ...(settings.web.advertise ? { address: settings.web.advertise } : {}) };
    },
  };
}
