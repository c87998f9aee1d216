import { stateKeys } from "@bosun/aws";
import { desiredReleaseSchema, errorMessage, type DesiredRelease, type WebReport } from "@bosun/core";
import type { CommandDefinition } from "../../command.ts";
import type { BootReport, Role, RoleServices } from "../../role.ts";
import { activate } from "./commands/activate.ts";
import { release } from "./commands/release.ts";
import { rollback } from "./commands/rollback.ts";
import { ReleaseRoot } from "./release-root.ts";
import { syncToDesired } from "./sync.ts";

/**
 * The web role: the node serves apps from deploy roots it keeps in step with the fleet's
 * releases (release, activate, rollback), reconciles each app with its desired release once
 * subscribed and at boot, and reports the commit each app serves.
 */
export function webRole(services: RoleServices): Role {
  const { settings, logger } = services;
  const apps = Object.entries(settings.apps);
  const rootOf = (app: string) => new ReleaseRoot({ logger }, { app, settings: settings.apps[app]! });

  const readDesired = async (app: string): Promise<DesiredRelease | undefined> => {
    const record = await services.store.get(stateKeys.release(app));
    return record === undefined ? undefined : desiredReleaseSchema.parse(record);
  };

  /** Brings every app to its desired release; reports what it did per app. */
  const syncAll = async (signal: AbortSignal, when: string): Promise<BootReport> => {
    const report: BootReport = { role: "web", items: [], failures: [] };
    for (const [app] of apps) {
      const started = performance.now();
      const log = logger.child({ app });
      const took = () => Math.round(performance.now() - started);
      try {
        const desired = await readDesired(app);
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
    async report(): Promise<WebReport> {
      const releases: Record<string, string> = {};
      for (const [app] of apps) {
        const commit = await rootOf(app).current();
        if (commit) releases[app] = commit;
      }
      return { releases };
    },
  };
}
