/**
 * A push consumer in a cluster counts a subscriber on another node as
 * interest only when it is the kind a subscriber on its own node must be
 * (JetStream.hasDeliveryInterest, nats-server's registerNotification): one
 * on exactly the deliver subject, plain without a deliver_group, else a
 * member of that group. A wildcard subscriber, a plain one beside a
 * deliver_group or another group's member on another node took the
 * delivery, and the client that should have had it waited ack_wait.
 *
 * The stream is led by node a; the subscribers are on node b. Nothing
 * delivered is judged once a control consumer on the same stream has
 * delivered the same message to node b: the subscriptions made before the
 * control's on b's connection had reached a by then (one route, in order).
 * The widest wildcard is `dlv.>`, not `>`: a `>` subscriber on b also gets
 * the JetStream API requests made on a, and b serves them a second time
 * (a consumer delete then may be answered "consumer not found").
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { AckPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { DEFAULT_ETCD_TIMINGS, jetStreamClusterPerFile, within } from "./helpers/cluster.js";
import { v3Clients, waitUntil } from "./helpers/clients.js";

const clients = v3Clients();
const { nodes } = jetStreamClusterPerFile("pushint", { etcdTimings: DEFAULT_ETCD_TIMINGS }, () => clients.closeAll());

/** Far longer than any wait here: a delivery made to the wrong subscriber would come again only after it. */
const ACK_WAIT_MS = 30_000;
const PROMPT_MS = 10_000;

interface Site {
  jsm: JetStreamManager;
  js: JetStreamClient;
  /** A client of node b, where every subscriber is. */
  onB: NatsConnection;
}

let site: Site | undefined;
async function setUp(): Promise<Site> {
  if (site !== undefined) return site;
  const [a, b] = nodes;
  const onA = await clients.open(a.url);
  const jsm = await jetstreamManager(onA);
  const info = await jsm.streams.add({ name: "PI", subjects: ["pi.>"], placement: { cluster: "", tags: ["node:a"] } });
  assert.equal(info.cluster?.leader, "a");
  site = { jsm, js: jetstream(onA), onB: await clients.open(b.url) };
  return site;
}

/** What a subscriber on node b gets, kept in order. */
function collect(onB: NatsConnection, subject: string, queue?: string): { sub: Subscription; got: Msg[]; bodies: () => string[] } {
  const got: Msg[] = [];
  const sub = onB.subscribe(subject, { queue, callback: (_e, m) => void got.push(m) });
  return { sub, got, bodies: () => got.map((m) => m.string()) };
}

/**
 * Consumer `name` on `pi.<name>`, delivering to `deliver` (with `group`), while only the `wrong` subscribers are on node
 * b: once a control consumer has delivered the same message to node b, `name` has delivered nothing and is not bound.
 * Then `right` subscribes on node b and gets the message at once, as the consumer's first delivery.
 */
async function judge(name: string, deliver: string, group: string | undefined, wrong: Array<{ subject: string; queue?: string }>, right: { queue?: string }): Promise<void> {
  const { jsm, js, onB } = await setUp();
  const mine = `$JS.ACK.PI.${name}.`;
  const others = wrong.map((w) => collect(onB, w.subject, w.queue));
  const stolen = (): string[] => others.flatMap((o, k) => o.got.filter((m) => m.reply?.startsWith(mine)).map(() => `${wrong[k].subject} ${wrong[k].queue ?? ""}`));
  const control = collect(onB, `ctl.${name}`);
  await onB.flush();
  const filter = `pi.${name}`;
  await jsm.consumers.add("PI", { durable_name: name, deliver_subject: deliver, deliver_group: group, filter_subject: filter, ack_policy: AckPolicy.Explicit, ack_wait: nanos(ACK_WAIT_MS) });
  await jsm.consumers.add("PI", { durable_name: `ctl_${name}`, deliver_subject: `ctl.${name}`, filter_subject: filter, ack_policy: AckPolicy.None });
  const seq = (await js.publish(filter, name)).seq;
  await waitUntil(() => control.got.length > 0, `${name}: the control consumer's delivery on node b`, PROMPT_MS);

  let info = await jsm.consumers.info("PI", name);
  assert.deepEqual(
    { stream_seq: info.delivered.stream_seq, num_pending: info.num_pending, push_bound: info.push_bound, stolen: stolen() },
    { stream_seq: 0, num_pending: 1, push_bound: undefined, stolen: [] },
    `${name}: no interest of the right kind on another node, so nothing is delivered`,
  );

  // A wildcard member of the consumer's group would share the group's deliveries with the right subscriber, as in nats-server: it leaves.
  for (const [k, o] of others.entries()) if (group !== undefined && wrong[k].queue === group) o.sub.unsubscribe();
  const at = Date.now();
  const mate = collect(onB, deliver, right.queue);
  await waitUntil(() => mate.got.length > 0, `${name}: the delivery to the right subscriber (ack_wait is ${ACK_WAIT_MS} ms)`, PROMPT_MS);
  const took = Date.now() - at;
  const m = mate.got[0];
  assert.equal(m.string(), name);
  // $JS.ACK.<stream>.<consumer>.<delivered count>.<stream seq>.<consumer seq>...
  const [, , , , count, sseq, cseq] = m.reply!.split(".");
  assert.deepEqual({ count, sseq, cseq }, { count: "1", sseq: String(seq), cseq: "1" }, `${name}: its first delivery, after ${took} ms`);
  info = await jsm.consumers.info("PI", name);
  assert.equal(info.push_bound, true);
  for (const o of [...others, control, mate]) o.sub.unsubscribe();
  await jsm.consumers.delete("PI", name);
  await jsm.consumers.delete("PI", `ctl_${name}`);
}

test("a push consumer without a deliver_group does not deliver to a wildcard or queue subscriber on another node, and does at once to a plain one", async () => {
  await judge("wild", "dlv.wild.x", undefined, [{ subject: "dlv.wild.*" }, { subject: "dlv.>" }], {});
  await judge("queue", "dlv.queue.x", undefined, [{ subject: "dlv.queue.x", queue: "grp" }], {});
});

test("a push consumer with a deliver_group does not deliver to a plain subscriber, another group or a wildcard member on another node, and does at once to a member", async () => {
  await judge("gplain", "dlv.gplain.x", "grp", [{ subject: "dlv.gplain.x" }], { queue: "grp" });
  await judge("gother", "dlv.gother.x", "grp", [{ subject: "dlv.gother.x", queue: "other" }], { queue: "grp" });
  await judge("gwild", "dlv.gwild.x", "grp", [{ subject: "dlv.gwild.*", queue: "grp" }, { subject: "dlv.>" }], { queue: "grp" });
});

test("a deliver_group consumer whose members on another node have all left does not deliver to a 'dlv.>' subscriber there; the next member gets the message at once", async () => {
  const { jsm, js, onB } = await setUp();
  const deliver = "dlv.left.x";
  const all = collect(onB, "dlv.>");
  const seen = (): string[] => all.got.filter((m) => m.reply?.startsWith("$JS.ACK.PI.left.")).map((m) => m.string());
  const member = collect(onB, deliver, "grp");
  await onB.flush();
  await jsm.consumers.add("PI", { durable_name: "left", deliver_subject: deliver, deliver_group: "grp", filter_subject: "pi.left", ack_policy: AckPolicy.Explicit, ack_wait: nanos(ACK_WAIT_MS) });
  await js.publish("pi.left", "one");
  await waitUntil(() => member.got.length > 0, "the member's delivery", PROMPT_MS);
  assert.equal(member.got[0].string(), "one");
  member.got[0].respond("+ACK");
  member.sub.unsubscribe();
  // The control's subscription follows the member's unsubscription on b's connection: its delivery proves node a heard both.
  const control = collect(onB, "ctl.left");
  await onB.flush();
  await jsm.consumers.add("PI", { durable_name: "ctl_left", deliver_subject: "ctl.left", filter_subject: "pi.left", ack_policy: AckPolicy.None });
  const two = (await js.publish("pi.left", "two")).seq;
  await waitUntil(() => control.bodies().includes("two"), "the control consumer's delivery of the second message on node b", PROMPT_MS);
  let info = await jsm.consumers.info("PI", "left");
  assert.deepEqual(
    { stream_seq: info.delivered.stream_seq, consumer_seq: info.delivered.consumer_seq, num_pending: info.num_pending, push_bound: info.push_bound, seen: seen() },
    { stream_seq: two - 1, consumer_seq: 1, num_pending: 1, push_bound: undefined, seen: ["one"] },
    "no member left: the second message waits; the wildcard subscriber saw only what the member got",
  );

  const at = Date.now();
  const next = collect(onB, deliver, "grp");
  await waitUntil(() => next.got.length > 0, `the new member's delivery (ack_wait is ${ACK_WAIT_MS} ms)`, PROMPT_MS);
  const m = next.got[0];
  assert.equal(m.string(), "two");
  assert.equal(m.reply!.split(".")[4], "1", `delivered once, to the new member, after ${Date.now() - at} ms`);
  info = await jsm.consumers.info("PI", "left");
  assert.equal(info.push_bound, true);
  for (const o of [all, control, next]) o.sub.unsubscribe();
});

test("a '>' subscriber on another node does not make that node serve the JetStream requests it sees pass: each is served once", async () => {
  const { jsm, js, onB } = await setUp();
  const everything = collect(onB, ">");
  await onB.flush();
  // Node a routes to node b what its '>' takes once it has heard of it: a publish from a seen there shows it has.
  await js.publish("pi.probe", "probe");
  await waitUntil(() => everything.got.some((m) => m.subject === "pi.probe"), "node b's '>' subscriber to see a publish on node a", PROMPT_MS);
  await jsm.consumers.add("PI", { durable_name: "once", filter_subject: "pi.once", ack_policy: AckPolicy.Explicit, ack_wait: nanos(ACK_WAIT_MS) });
  for (let i = 0; i < 5; i++) await js.publish("pi.once", `m${i}`);
  const got: string[] = [];
  for await (const m of await (await js.consumers.get("PI", "once")).fetch({ max_messages: 2, expires: 5000 })) got.push(m.string());
  assert.deepEqual(got, ["m0", "m1"]);
  // Asked through node b: it reaches node a after any copy of the pull request node b would have passed on.
  const info = await (await jetstreamManager(onB)).consumers.info("PI", "once");
  assert.deepEqual({ ack_pending: info.num_ack_pending, delivered: info.delivered.consumer_seq, pending: info.num_pending }, { ack_pending: 2, delivered: 2, pending: 3 }, "one pull request of 2 served, not two");
  // Node b serving its copy of a delete too answered "consumer not found", at times before node a's answer.
  for (let i = 0; i < 5; i++) {
    await jsm.consumers.add("PI", { durable_name: `gone${i}`, ack_policy: AckPolicy.Explicit });
    assert.equal(await jsm.consumers.delete("PI", `gone${i}`), true);
  }
  everything.sub.unsubscribe();
  await jsm.consumers.delete("PI", "once");
});
