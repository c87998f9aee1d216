import { z } from "zod";
import { appNamePattern } from "../config.ts";
import { defineContract } from "./command.ts";
import { defineRecord } from "./record.ts";

export const commitPattern = /^[0-9a-f]{40}$/;
export const appName = z.string().regex(appNamePattern, "expected an app name of lower-case letters, digits or '-'");
export const commitId = z.string().regex(commitPattern, "expected a full 40-character commit id");
const repository = z.string().min(1).max(2048).regex(/^[^-]/, "a repository may not start with '-'");
/** Publish time in ms: nodes never replace a release with one of a lower sequence. */
const sequence = z.number().int().positive();

/**
 * Prepares a release on a web node: fetch the commit into releases/<commit>, verify the tree,
 * build it, report ready. With `activate`, the node also swaps to it as soon as it is ready.
 */
export const releaseContract = defineContract({
  type: "release",
  role: "web",
  summary: "Fetch, verify and build a commit of an app into releases/<commit>; optionally make it current",
  payload: z.object({ app: appName, repo: repository, commit: commitId, sequence, activate: z.boolean().default(false) }).strict(),
});

/** Makes a prepared release current: one rename(2) (at `at`, when given), then the health probe. */
export const activateContract = defineContract({
  type: "activate",
  role: "web",
  summary: "Swap an app's `current` to a prepared release, probe the site, swap back if it fails",
  payload: z.object({ app: appName, commit: commitId, sequence, at: z.iso.datetime().optional() }).strict(),
});

/** Swaps back to a kept release (the previous one by default), with no fetch. */
export const rollbackContract = defineContract({
  type: "rollback",
  role: "web",
  summary: "Swap an app back to a kept release (the previous one unless `to` names one)",
  payload: z.object({ app: appName, to: commitId.optional(), sequence }).strict(),
});

/** The release every web node of an app should serve, kept in S3 by publishers. */
export const desiredReleaseSchema = z.object({
  app: appName,
  repo: repository,
  commit: commitId,
  ref: z.string(),
  sequence,
  publishedAt: z.iso.datetime(),
  issuer: z.string(),
  /** The commit that was desired before, for `bosun rollback` without --to. */
  previous: commitId.optional(),
  rollback: z.boolean().optional(),
});
export type DesiredRelease = z.infer<typeof desiredReleaseSchema>;

/** What a web node adds to its heartbeats: the commit each app's `current` points at. */
export const webReportSchema = z
  .object({
    releases: z.record(z.string(), commitId),
    /** Where balancers reach this node's site (the web.advertise setting). */
    address: z.object({ host: z.string(), port: z.number().int() }).strict().optional(),
  })
  .strict();
export type WebReport = z.infer<typeof webReportSchema>;

/** The desired release of an app, signed by its publisher: web nodes sync to it at boot and once subscribed. */
export const desiredReleaseRecord = defineRecord({
  type: "desired-release",
  summary: "The release every web node of an app should serve",
  actsAs: ["release", "rollback"],
  payload: desiredReleaseSchema,
});
