import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { untilWallClock } from "@bosun/aws";

describe("waiting for a moment on the wall clock", () => {
  it("never returns before the moment, even when a timer fires early against the clock", async () => {
    // A clock that reads 2 ms behind the timers the first few times: a timer due at `at` fires
    // while this clock still reads before `at`, as Node's timers can against Date.now().
    let readings = 0;
    const lagging = () => Date.now() - (++readings <= 3 ? 2 : 0);
    const at = Date.now() + 30;
    await untilWallClock(at, undefined, lagging);
    assert.ok(lagging() >= at, "returned before the named moment");
    assert.ok(readings >= 3, "looked at the clock again after the first timer");
  });

  it("returns at once when the signal is aborted", async () => {
    const abort = new AbortController();
    abort.abort();
    const started = Date.now();
    await untilWallClock(started + 60_000, abort.signal);
    assert.ok(Date.now() - started < 1000);
  });
});
