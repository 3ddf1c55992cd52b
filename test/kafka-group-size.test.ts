/**
 * `group.max.size` (1,000 members) as Kafka's coordinator applies it
 * (acceptJoiningMember): a join past it is answered GROUP_MAX_SIZE_REACHED,
 * which clients report and do not retry, not REBALANCE_IN_PROGRESS, which
 * they retry for ever. During a join phase what counts is the members that
 * have rejoined; in a Stable group, its members, and a static member coming
 * back without its member id is a new one, as in Kafka.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GroupCoordinator, MAX_MEMBERS_PER_GROUP, type Group, type JoinResult } from "../src/protocols/kafka/groups.js";
import { KAFKA_DEFAULTS } from "../src/protocols/kafka/door.js";
import { ErrorCode } from "../src/protocols/kafka/errors.js";

function coordinator(t: { after(fn: () => Promise<void>): void }, initialDelayMs: number): { c: GroupCoordinator; g: Group } {
  const dir = mkdtempSync(join(tmpdir(), "nagare-gsize-"));
  const c = new GroupCoordinator(dir, { ...KAFKA_DEFAULTS, initialRebalanceDelayMs: initialDelayMs, minSessionTimeoutMs: 6000, maxSessionTimeoutMs: 1_800_000 }, () => {});
  // The group's timers are unref'd (a server's sockets keep it running): this keeps the test's process up meanwhile.
  const alive = setInterval(() => {}, 1000);
  t.after(async () => {
    clearInterval(alive);
    // After the group's file writes under way: one landing later would make the directory again.
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { c, g: c.group("big", true)! };
}

/** A JoinGroup v5 as a consumer sends it; `instance` null: a dynamic member. */
function join_(g: Group, memberId: string, instance: string | null): Promise<JoinResult> {
  return g.join({ id: memberId, instanceId: instance, clientId: "c", host: "h", sessionTimeoutMs: 30_000, rebalanceTimeoutMs: 60_000, protocolType: "consumer", protocols: [["range", Buffer.alloc(0)]] }, 5);
}

test("during the join phase: the member past the most gets GROUP_MAX_SIZE_REACHED; those that joined stay", async (t) => {
  const { g } = coordinator(t, 60_000);
  const joins = Array.from({ length: MAX_MEMBERS_PER_GROUP }, (_, i) => join_(g, "", `s-${i}`));
  assert.equal(g.state, "PreparingRebalance");
  const extra = await join_(g, "", "s-extra");
  assert.equal(extra.error, ErrorCode.GROUP_MAX_SIZE_REACHED);
  assert.equal(extra.memberId, "");
  assert.equal((await join_(g, "", null)).error, ErrorCode.GROUP_MAX_SIZE_REACHED, "a dynamic member too");
  assert.equal(g.members.size, MAX_MEMBERS_PER_GROUP);
  g.abandon(ErrorCode.NOT_COORDINATOR);
  assert.ok((await Promise.all(joins)).every((j) => j.error === ErrorCode.NOT_COORDINATOR));
});

test("a Stable group that is full: a new member and a static member back without its id are refused, a member's rejoin is not", async (t) => {
  // The first join phase lasts the initial delay: long enough for every join below to be in it.
  const { g } = coordinator(t, 1000);
  const joined = await Promise.all(Array.from({ length: MAX_MEMBERS_PER_GROUP }, (_, i) => join_(g, "", `s-${i}`)));
  assert.ok(joined.every((j) => j.error === ErrorCode.NONE && j.generation === 1), "one join phase of them all");
  const leader = joined.find((j) => j.memberId === j.leader)!;
  const synced = await Promise.all(joined.map((j) => g.sync(j.memberId, `s-${joined.indexOf(j)}`, j.generation, j === leader ? joined.map((x): [string, Buffer] => [x.memberId, Buffer.from("a")]) : [])));
  assert.ok(synced.every((s) => s.error === ErrorCode.NONE));
  assert.equal(g.state, "Stable");

  assert.equal((await join_(g, "", "s-new")).error, ErrorCode.GROUP_MAX_SIZE_REACHED);
  assert.equal((await join_(g, "", null)).error, ErrorCode.GROUP_MAX_SIZE_REACHED, "KIP-394's first join too");
  assert.equal((await join_(g, "", "s-7")).error, ErrorCode.GROUP_MAX_SIZE_REACHED, "a restarted static member, as Kafka refuses it");
  assert.equal(g.state, "Stable", "nothing rebalanced");
  const follower = joined.find((j) => j !== leader)!;
  const again = await join_(g, follower.memberId, `s-${joined.indexOf(follower)}`);
  assert.equal(again.error, ErrorCode.NONE, "a member's rejoin with the same metadata");
  assert.equal(again.generation, follower.generation);
});
