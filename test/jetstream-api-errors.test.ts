/**
 * What the JetStream API answers to requests it cannot honour, compared with
 * nats-server (2.9.10 for codes and texts, 2.10 where 2.9 lacks the feature):
 * configuration values Go's decoder refuses, replicas on a single server,
 * consumer checks, unknown API subjects, malformed pull requests, and the
 * API counters of `$JS.API.INFO`.
 */

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { jetstream, jetstreamManager, AckPolicy, RetentionPolicy, StorageType, type JetStreamManager, type StoredMsg } from "@nats-io/jetstream";
import { waitUntilAsync } from "./helpers/clients.js";
import { api, rawPull, startJs, type JsHarness } from "./helpers/js.js";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseStateFile, stateFileText } from "../src/util/persist.js";

const MS = 1_000_000;

type ApiErr = { code: number; err_code: number; description: string };

describe("JetStream API errors", () => {
  let h: JsHarness;
  let jsm: JetStreamManager;
  let n = 0;

  before(async () => {
    h = await startJs();
  });
  after(async () => h.close());

  /** The error a raw create of a stream with `extra` gets, or the created config. */
  async function createStream(extra: Record<string, unknown>): Promise<{ error?: ApiErr; config?: Record<string, unknown> }> {
    const name = `E${++n}`;
    const r = await api(h.nc, `$JS.API.STREAM.CREATE.${name}`, { name, subjects: [`e${n}.>`], ...extra });
    if (r.error === undefined) await api(h.nc, `$JS.API.STREAM.DELETE.${name}`);
    return r as { error?: ApiErr; config?: Record<string, unknown> };
  }

  async function createConsumer(stream: string, config: Record<string, unknown>): Promise<{ error?: ApiErr; config?: Record<string, unknown> }> {
    // A durable is named in the subject: CONSUMER.CREATE.<stream> alone makes ephemerals (10020 otherwise).
    const subject = typeof config.durable_name === "string" ? `$JS.API.CONSUMER.CREATE.${stream}.${config.durable_name}` : `$JS.API.CONSUMER.CREATE.${stream}`;
    return (await api(h.nc, subject, { stream_name: stream, config })) as { error?: ApiErr; config?: Record<string, unknown> };
  }

  // First, before any other request: the counters start at zero.
  test("$JS.API.INFO does not count itself, as nats-server does not", async () => {
    const first = await api(h.nc, "$JS.API.INFO");
    const second = await api(h.nc, "$JS.API.INFO");
    assert.deepEqual(first.api, { total: 0, errors: 0 });
    assert.deepEqual(second.api, { total: 1, errors: 0 });
    const limits = first.limits as Record<string, unknown>;
    assert.deepEqual(Object.keys(limits).sort(), [
      "max_ack_pending",
      "max_bytes_required",
      "max_consumers",
      "max_memory",
      "max_storage",
      "max_streams",
      "memory_max_stream_bytes",
      "storage_max_stream_bytes",
    ]);
    assert.equal(limits.max_memory, -1);
    jsm = await jetstreamManager(h.nc);
  });

  test("stream values Go cannot decode are invalid JSON (10025), never stored", async () => {
    for (const extra of [
      { max_msgs: 1e308 },
      { max_msgs: 1.5 },
      { max_msgs: "5" },
      { max_bytes: 2 ** 63 },
      { max_msg_size: 2 ** 31 },
      { max_age: 1e19 },
      { first_seq: -1 },
      { retention: "bogus" },
      { storage: "tape" },
      { sealed: "yes" },
      { subjects: "e.x" },
      { subjects: [1] },
      { consumer_limits: 5 },
      { metadata: { k: 1 } },
    ]) {
      const r = await createStream(extra);
      assert.deepEqual(r.error, { code: 400, err_code: 10025, description: "invalid JSON" }, JSON.stringify(extra));
    }
    // Negative limits decode and are kept as given, as nats-server keeps them (they mean unlimited).
    const kept = await createStream({ max_msgs: -5, max_bytes: -7, max_msgs_per_subject: -4, max_consumers: -3 });
    assert.equal(kept.error, undefined);
    assert.deepEqual([kept.config!.max_msgs, kept.config!.max_bytes, kept.config!.max_msgs_per_subject, kept.config!.max_consumers], [-5, -7, -4, -3]);
  });

  test("stream checks that follow decoding: nats-server's codes and texts", async () => {
    const cases: Array<[Record<string, unknown>, ApiErr]> = [
      [{ num_replicas: 3 }, { code: 500, err_code: 10074, description: "replicas > 1 not supported in non-clustered mode" }],
      [{ num_replicas: 2 }, { code: 500, err_code: 10074, description: "replicas > 1 not supported in non-clustered mode" }],
      [{ num_replicas: 7 }, { code: 500, err_code: 10052, description: "maximum replicas is 5" }],
      [{ num_replicas: -1 }, { code: 400, err_code: 10133, description: "replicas count cannot be negative" }],
      [{ max_age: -1 }, { code: 500, err_code: 10052, description: "duplicates window can not be negative" }],
      [{ duplicate_window: -1 }, { code: 500, err_code: 10052, description: "duplicates window can not be negative" }],
      [{ max_age: 50 * MS }, { code: 500, err_code: 10052, description: "max age needs to be >= 100ms" }],
    ];
    for (const [extra, want] of cases) assert.deepEqual((await createStream(extra)).error, want, JSON.stringify(extra));
    // An update cannot ask for replicas either.
    await jsm.streams.add({ name: "UPR", subjects: ["upr.>"] });
    const upd = await api(h.nc, "$JS.API.STREAM.UPDATE.UPR", { name: "UPR", subjects: ["upr.>"], num_replicas: 3 });
    assert.equal((upd.error as ApiErr).err_code, 10074);
    assert.equal((await jsm.streams.info("UPR")).config.num_replicas, 1);
  });

  test("nats-server's checks of a create or update (its current source): names, overlaps, sealing, fixed consumer fields", async () => {
    const invalid = (description: string): ApiErr => ({ code: 500, err_code: 10052, description });
    await jsm.streams.add({ name: "UPN", subjects: ["upn.a"], description: "kept" });
    // An update without a name was once applied as a default config: subjects became ["UPN"], the description went.
    const r = await api(h.nc, "$JS.API.STREAM.UPDATE.UPN", {});
    assert.deepEqual(r.error, invalid("stream name is required and can not contain '.', '*', '>'"));
    // An empty request is not JSON to Go's decoder (nats-server 2.9.10 and its current source alike).
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.UPDATE.UPN")).error, { code: 400, err_code: 10025, description: "invalid JSON" });
    const kept = (await jsm.streams.info("UPN")).config;
    assert.deepEqual([kept.subjects, kept.description], [["upn.a"], "kept"]);
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.CREATE.NONAME", {})).error, { code: 400, err_code: 10056, description: "stream name in subject does not match request" });
    await assert.rejects(jsm.streams.info("NONAME"));
    // Subjects of one stream may not overlap: a message on both would be stored twice.
    assert.deepEqual((await createStream({ subjects: ["ov.*", "ov.a"] })).error, invalid('subject "ov.*" overlaps with "ov.a"'));
    assert.deepEqual((await createStream({ subjects: ["ov.a", "ov.>"] })).error, invalid('subject "ov.a" overlaps with "ov.>"'));
    const upd = await api(h.nc, "$JS.API.STREAM.UPDATE.UPN", { name: "UPN", subjects: ["upn.a", "upn.*"] });
    assert.deepEqual(upd.error, invalid('subject "upn.a" overlaps with "upn.*"'));
    // Sealed only by an update, which makes the rest of the config say so.
    assert.deepEqual((await createStream({ sealed: true })).error, invalid("stream configuration for create can not be sealed"));
    assert.deepEqual((await createStream({ mirror_direct: true })).error, invalid("stream has no mirror but does have mirror direct"));
    await jsm.streams.add({ name: "SEAL", subjects: ["seal.>"], max_age: 3600 * 1000 * MS, allow_rollup_hdrs: true });
    const sealed = (await api(h.nc, "$JS.API.STREAM.UPDATE.SEAL", { ...(await jsm.streams.info("SEAL")).config, sealed: true })).config as Record<string, unknown>;
    assert.deepEqual(
      [sealed.sealed, sealed.deny_delete, sealed.deny_purge, sealed.discard, sealed.max_age, sealed.allow_rollup_hdrs],
      [true, true, true, "new", 0, false],
    );
    // Consumer fields nats-server does not let an update change.
    await jsm.streams.add({ name: "FIX", subjects: ["fix.>"] });
    const pull = { durable_name: "P", ack_policy: "explicit", max_waiting: 10 };
    await createConsumer("FIX", pull);
    assert.deepEqual((await createConsumer("FIX", { ...pull, max_waiting: 20 })).error, { code: 500, err_code: 10012, description: "max waiting can not be updated" });
    const push = { durable_name: "Q", ack_policy: "explicit", deliver_subject: "fix-out", idle_heartbeat: 1000 * MS, flow_control: true };
    await createConsumer("FIX", push);
    assert.deepEqual((await createConsumer("FIX", { ...push, idle_heartbeat: 2000 * MS })).error, { code: 500, err_code: 10012, description: "heart beats can not be updated" });
    assert.deepEqual((await createConsumer("FIX", { ...push, flow_control: false })).error, { code: 500, err_code: 10012, description: "flow control can not be updated" });
  });

  test("a stream's or a consumer's subjects are checked for overlaps without comparing every pair, and the first pair is still named", { timeout: 60_000 }, async () => {
    const invalid = (description: string): ApiErr => ({ code: 500, err_code: 10052, description });
    // The pair comparing every pair finds first: "many.1" with the later "many.*", not "many.b.*" with "many.b.x".
    assert.deepEqual((await createStream({ subjects: ["many.1", "many.b.*", "many.2", "many.b.x", "many.*"] })).error, invalid('subject "many.1" overlaps with "many.*"'));
    // 40,000 subjects, 400 KB of request: comparing every pair (800 million) held the broker's event loop for minutes.
    const subjects = Array.from({ length: 40_000 }, (_, i) => `many.${i}`);
    const t0 = Date.now();
    const r = await api(h.nc, "$JS.API.STREAM.CREATE.MANY", { name: "MANY", subjects });
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    const c = await createConsumer("MANY", { durable_name: "C", ack_policy: "explicit", filter_subjects: subjects });
    assert.equal(c.error, undefined, JSON.stringify(c.error));
    assert.ok(Date.now() - t0 < 10_000, `40,000 subjects and filters took ${Date.now() - t0} ms to check`);
    // Overlapping filters and a filter the stream does not capture are still found among them.
    assert.deepEqual((await createConsumer("MANY", { durable_name: "D", filter_subjects: [...subjects.slice(1), "many.*"] })).error, { code: 400, err_code: 10138, description: "consumer subject filters cannot overlap" });
    assert.deepEqual((await createConsumer("MANY", { durable_name: "D", filter_subjects: [...subjects.slice(1), "other"] })).error, {
      code: 400,
      err_code: 10093,
      description: "consumer filter subject is not a valid subset of the interest subjects",
    });
    await api(h.nc, "$JS.API.STREAM.DELETE.MANY");
    // Built so that each `*` meets every literal at its token (no pair overlaps): the index visits them all for each, and
    // 38,000 of each (a megabyte) held the broker 21 s. Past a bound of work, refused instead.
    const tooAlike = invalid("subjects too many or too alike to check for overlaps: name fewer, or fewer with wildcards");
    const literals = Array.from({ length: 3000 }, (_, i) => `alike.n${i}.a`);
    const wild = Array.from({ length: 3000 }, (_, i) => `alike.*.b${i}`);
    assert.deepEqual((await createStream({ subjects: [...literals, ...wild] })).error, tooAlike);
    // Filters each checked against the stream's subjects the same way.
    assert.equal((await api(h.nc, "$JS.API.STREAM.CREATE.ALIKE", { name: "ALIKE", subjects: [...literals, "alike.*.b.>"] })).error, undefined);
    assert.deepEqual((await createConsumer("ALIKE", { durable_name: "W", filter_subjects: Array.from({ length: 3000 }, (_, i) => `alike.*.b.${i}`) })).error, tooAlike);
    // The same against another stream's subjects, and a work queue's other consumers' filters.
    assert.deepEqual((await createStream({ subjects: wild })).error, tooAlike);
    await api(h.nc, "$JS.API.STREAM.DELETE.ALIKE");
    assert.equal((await api(h.nc, "$JS.API.STREAM.CREATE.WQ", { name: "WQ", subjects: ["wq.>"], retention: "workqueue" })).error, undefined);
    assert.equal((await createConsumer("WQ", { durable_name: "L", ack_policy: "explicit", filter_subjects: literals.map((l) => `wq.${l}`) })).error, undefined);
    assert.deepEqual((await createConsumer("WQ", { durable_name: "R", ack_policy: "explicit", filter_subjects: wild.map((w) => `wq.${w}`) })).error, tooAlike);
    await api(h.nc, "$JS.API.STREAM.DELETE.WQ");
  });

  test("subjects on JetStream's and the system's own spaces, as nats-server 2.10: advisories kept in a stream, the API only unacknowledged", async () => {
    const invalid = (description: string): ApiErr => ({ code: 500, err_code: 10052, description });
    const jetstreamApi = invalid("subjects that overlap with jetstream api require no-ack to be true");
    for (const subjects of [["$JS.API.>"], ["$JS.*"], ["$JSC.x"], ["$JS.EVENT"], ["*.orders"]]) assert.deepEqual((await createStream({ subjects })).error, jetstreamApi, subjects[0]);
    assert.deepEqual((await createStream({ subjects: ["$SYS.SERVER.>"] })).error, invalid("subjects that overlap with system api require no-ack to be true"));
    assert.deepEqual((await createStream({ subjects: [">"] })).error, invalid("capturing all subjects requires no-ack to be true"));
    assert.deepEqual((await createStream({ subjects: [">"], no_ack: true, num_replicas: 3 })).error, invalid("capturing all subjects requires replicas of 1"));
    // (A leading wildcard or ">" with no_ack would overlap this server's other streams.)
    for (const [subjects, noAck] of [[["$SYS.ACCOUNT.>"], false], [["$JS.API.>"], true]] as const) {
      assert.equal((await createStream({ subjects, no_ack: noAck })).error, undefined, subjects[0]);
    }
    // The usual way to keep JetStream's advisories (a dead-letter record of MAX_DELIVERIES): a stream on $JS.EVENT.ADVISORY.>.
    await jsm.streams.add({ name: "ADVISORIES", subjects: ["$JS.EVENT.ADVISORY.>"] });
    await jsm.streams.add({ name: "ADVISED", subjects: ["advised.>"] });
    // Stored as any publish without a reply is: after the create's answer went.
    let kept: StoredMsg | null = null;
    await waitUntilAsync(async () => (kept = await jsm.streams.getMessage("ADVISORIES", { last_by_subj: "$JS.EVENT.ADVISORY.STREAM.CREATED.ADVISED" })) !== null, "the advisory stored");
    assert.equal((kept!.json() as { stream: string }).stream, "ADVISED");
  });

  test("a stream or consumer delete with something in its request is refused (nats-server's 10038), nothing deleted", async () => {
    await jsm.streams.add({ name: "KEEP", subjects: ["keep.>"] });
    await jsm.consumers.add("KEEP", { durable_name: "C", ack_policy: "explicit" as never });
    const notEmpty = { code: 400, err_code: 10038, description: "expected an empty request payload" };
    for (const body of ["{x", '{"name":"KEEP"}', "[]", "null"]) {
      assert.deepEqual((await api(h.nc, "$JS.API.CONSUMER.DELETE.KEEP.C", body)).error, notEmpty, body);
      assert.deepEqual((await api(h.nc, "$JS.API.STREAM.DELETE.KEEP", body)).error, notEmpty, body);
    }
    assert.equal((await jsm.consumers.info("KEEP", "C")).name, "C");
    // Nothing, or an object without fields, is an empty request.
    assert.equal((await api(h.nc, "$JS.API.CONSUMER.DELETE.KEEP.C", "{}")).success, true);
    assert.equal((await api(h.nc, "$JS.API.STREAM.DELETE.KEEP", "")).success, true);
  });

  test("a stored stream whose subjects overlap, or overlap $JS.> (accepted by an earlier version), is still served after a restart", async () => {
    const h2 = await startJs();
    try {
      await (await jetstreamManager(h2.nc)).streams.add({ name: "OV", subjects: ["ov.*"] });
      await h2.restart({
        whileStopped: () => {
          const path = join(h2.storeDir, "streams", "OV", "meta.json");
          const meta = parseStateFile(readFileSync(path, "utf8")) as { config: { subjects: string[] } };
          // Also a leading wildcard, which nats-server 2.10 (and nagare since) refuses without no_ack.
          meta.config.subjects = ["ov.*", "ov.b", "*.ov"];
          writeFileSync(path, stateFileText(meta));
        },
      });
      assert.deepEqual((await (await jetstreamManager(h2.nc)).streams.info("OV")).config.subjects, ["ov.*", "ov.b", "*.ov"]);
    } finally {
      await h2.close();
    }
  });

  test("a 2.10 stream feature nagare cannot honour is refused, not ignored", async () => {
    const r = await createStream({ compression: "s2" });
    assert.equal(r.error?.err_code, 10052);
    assert.match(r.error!.description, /compression/);
    assert.equal((await createStream({ compression: "none" })).error, undefined);
  });

  test("consumer values and checks: nats-server's codes and texts", async () => {
    await jsm.streams.add({ name: "CC", subjects: ["cc.>"] });
    await jsm.streams.add({ name: "CL", subjects: ["cl.>"], consumer_limits: { max_ack_pending: 100, inactive_threshold: 10_000 * MS } });
    const invalid = { code: 400, err_code: 10025, description: "invalid JSON" };
    const cases: Array<[string, Record<string, unknown>, ApiErr]> = [
      ["CC", { max_deliver: 1e300 }, invalid],
      ["CC", { ack_wait: 1.5 }, invalid],
      ["CC", { rate_limit_bps: -1 }, invalid],
      ["CC", { opt_start_seq: -1, deliver_policy: "by_start_sequence" }, invalid],
      ["CC", { deliver_policy: "by_start_time", opt_start_time: "yesterday" }, invalid],
      ["CC", { deliver_policy: "bogus" }, invalid],
      ["CC", { backoff: [1.5], max_deliver: 5 }, invalid],
      ["CC", { num_replicas: 3 }, { code: 500, err_code: 10074, description: "replicas > 1 not supported in non-clustered mode" }],
      ["CC", { num_replicas: -1 }, { code: 400, err_code: 10133, description: "replicas count cannot be negative" }],
      ["CC", { max_waiting: -1 }, { code: 400, err_code: 10087, description: "consumer max waiting needs to be positive" }],
      ["CC", { max_batch: -1 }, { code: 400, err_code: 10114, description: "consumer max request batch needs to be > 0" }],
      ["CC", { deliver_subject: "cc-out", flow_control: true }, { code: 400, err_code: 10108, description: "consumer with flow control also needs heartbeats" }],
      ["CC", { rate_limit_bps: 100 }, { code: 400, err_code: 10086, description: "consumer in pull mode can not have rate limit set" }],
      [
        "CC",
        { sample_freq: "abc" },
        { code: 400, err_code: 10095, description: 'failed to parse consumer sampling configuration: strconv.Atoi: parsing "abc": invalid syntax' },
      ],
      [
        "CC",
        { deliver_policy: "all", opt_start_seq: 5 },
        { code: 400, err_code: 10094, description: "consumer delivery policy is deliver all, but optional start sequence is also set" },
      ],
      ["CC", { description: "x".repeat(4097) }, { code: 400, err_code: 10107, description: "consumer description is too long, maximum allowed is 4096" }],
      ["CL", { max_ack_pending: 101 }, { code: 400, err_code: 10121, description: "consumer max ack pending exceeds system limit of 100" }],
      ["CL", { inactive_threshold: 20_000 * MS }, { code: 400, err_code: 10153, description: "consumer inactive threshold exceeds system limit of 10s" }],
    ];
    for (const [stream, cfg, want] of cases) {
      assert.deepEqual((await createConsumer(stream, { ack_policy: "explicit", ...cfg })).error, want, JSON.stringify(cfg));
    }
    // The stream's consumer limits are the defaults of its consumers (2.10).
    const made = await createConsumer("CL", { ack_policy: "explicit" });
    assert.equal(made.config!.max_ack_pending, 100);
    assert.equal(made.config!.inactive_threshold, 10_000 * MS);
  });

  test("an API subject nothing serves gets nats-server 2.10's bad request, counted as an error", async () => {
    const before = (await jsm.getAccountInfo()).api.errors;
    for (const subject of ["$JS.API.FOO.BAR", "$JS.API.STREAM.INFO", "$JS.API.STREAM.FOO.X", "$JS.API.CONSUMER.INFO.CC"]) {
      const r = await api(h.nc, subject);
      assert.equal(r.type, "io.nats.jetstream.api.v1.system_response", subject);
      assert.deepEqual(r.error, { code: 400, err_code: 10003, description: "bad request" }, subject);
    }
    const stepdown = await api(h.nc, "$JS.API.STREAM.LEADER.STEPDOWN.CC");
    assert.equal(stepdown.type, "io.nats.jetstream.api.v1.stream_leader_stepdown_response");
    assert.deepEqual(stepdown.error, { code: 503, err_code: 10010, description: "JetStream clustering support required" });
    assert.equal((await jsm.getAccountInfo()).api.errors, before + 5);
  });

  test("refusals nats-server 2.9.10 words otherwise than nagare did: its codes and texts", async () => {
    await jsm.streams.add({ name: "RF", subjects: ["rf.>"] });
    await jsm.streams.add({ name: "RW", subjects: ["rw.>"], retention: RetentionPolicy.Workqueue });
    await jsm.consumers.add("RW", { durable_name: "ALL", ack_policy: AckPolicy.Explicit });
    const errorOf = async (subject: string, body: unknown): Promise<ApiErr | undefined> => (await api(h.nc, subject, body)).error as ApiErr | undefined;
    const invalidJson: ApiErr = { code: 400, err_code: 10025, description: "invalid JSON" };
    // What nats-server 2.9.10 answered to each (differential run against Debian's nats-server).
    const NATS_SERVER: Array<[string, unknown, ApiErr]> = [
      // An empty request is not JSON: Go's decoder refuses it before anything else is looked at.
      ["$JS.API.CONSUMER.CREATE.RF", "", invalidJson],
      ["$JS.API.CONSUMER.DURABLE.CREATE.RF.D", "", invalidJson],
      ["$JS.API.CONSUMER.CREATE.NOPE", "", invalidJson],
      ["$JS.API.STREAM.CREATE.RX", "", invalidJson],
      ["$JS.API.STREAM.UPDATE.RF", "", invalidJson],
      ["$JS.API.CONSUMER.CREATE.RF", { stream_name: "RF", config: 5 }, invalidJson],
      // The stream's name is required in the request, and checked before the stream is looked up.
      ["$JS.API.CONSUMER.CREATE.RF", {}, { code: 400, err_code: 10056, description: "stream name in subject does not match request" }],
      ["$JS.API.CONSUMER.CREATE.NOPE", { stream_name: "OTHER", config: {} }, { code: 400, err_code: 10056, description: "stream name in subject does not match request" }],
      // CONSUMER.CREATE.<stream> makes ephemerals only (whatever the durable name holds).
      [
        "$JS.API.CONSUMER.CREATE.RF",
        { stream_name: "RF", config: { durable_name: "D", ack_policy: "explicit" } },
        { code: 400, err_code: 10020, description: "consumer expected to be ephemeral but a durable name was set in request" },
      ],
      [
        "$JS.API.CONSUMER.CREATE.RF",
        { stream_name: "RF", config: { durable_name: "a.b", ack_policy: "explicit" } },
        { code: 400, err_code: 10020, description: "consumer expected to be ephemeral but a durable name was set in request" },
      ],
      [
        "$JS.API.CONSUMER.DURABLE.CREATE.RF.D",
        { stream_name: "RF", config: { ack_policy: "explicit" } },
        { code: 400, err_code: 10018, description: "consumer expected to be durable but a durable name was not set" },
      ],
      [
        "$JS.API.CONSUMER.CREATE.RF",
        { stream_name: "RF", config: { ack_policy: "none", deliver_subject: "rf-out", max_ack_pending: 5 } },
        { code: 400, err_code: 10082, description: "consumer requires ack policy for max ack pending" },
      ],
      // A work queue: a filtered consumer meeting an unfiltered one is "not unique"; a pull consumer needs acks.
      [
        "$JS.API.CONSUMER.CREATE.RW.F",
        { stream_name: "RW", config: { durable_name: "F", ack_policy: "explicit", filter_subject: "rw.a" } },
        { code: 400, err_code: 10100, description: "filtered consumer not unique on workqueue stream" },
      ],
      ["$JS.API.CONSUMER.CREATE.RW", { stream_name: "RW", config: { ack_policy: "none" } }, { code: 400, err_code: 10084, description: "consumer in pull mode requires ack policy" }],
      ["$JS.API.STREAM.CREATE.RX", { name: "RX", subjects: ["a..b"] }, { code: 500, err_code: 10052, description: "invalid subject" }],
    ];
    for (const [subject, body, want] of NATS_SERVER) assert.deepEqual(await errorOf(subject, body), want, `${subject} ${JSON.stringify(body)}`);
    // No config at all is Go's zero config: an ephemeral with every default.
    const made = await api(h.nc, "$JS.API.CONSUMER.CREATE.RF", { stream_name: "RF" });
    assert.equal(made.error, undefined, JSON.stringify(made));
  });

  test("a request body of JSON null is the zero request, and a field of the wrong type invalid JSON, as nats-server 2.9.10 decodes them", async () => {
    await jsm.streams.add({ name: "NUL", subjects: ["nul.>"] });
    await jsm.streams.add({ name: "NULM", subjects: ["nulm.>"], storage: StorageType.Memory });
    await jsm.consumers.add("NUL", { durable_name: "C", ack_policy: AckPolicy.Explicit });
    const err = (code: number, err_code: number, description: string): ApiErr => ({ code, err_code, description });
    const mismatch = err(400, 10056, "stream name in subject does not match request");
    // nats-server 2.9.10's answers, each seen side by side.
    for (const subject of ["$JS.API.CONSUMER.CREATE.NUL", "$JS.API.CONSUMER.DURABLE.CREATE.NUL.x", "$JS.API.CONSUMER.CREATE.NUL.y", "$JS.API.STREAM.CREATE.NEW"]) {
      assert.deepEqual((await api(h.nc, subject, "null")).error, mismatch, subject);
    }
    assert.equal((await api(h.nc, "$JS.API.STREAM.INFO.NUL", "null")).error, undefined);
    const names = (await api(h.nc, "$JS.API.STREAM.NAMES", "null")).streams as string[];
    assert.ok(names.includes("NUL") && names.includes("NULM"), names.join());
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.MSG.DELETE.NUL", "null")).error, err(500, 10057, "no message found"));
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.MSG.DELETE.NULM", '{"no_erase":true}')).error, err(400, 10043, "sequence 0 not found"));
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.MSG.DELETE.NUL", "{}")).error, err(400, 10003, "bad request"));
    // Consumer info takes no request, as deletes do.
    for (const body of ["null", "[]", '{"x":1}', " "]) assert.deepEqual((await api(h.nc, "$JS.API.CONSUMER.INFO.NUL.C", body)).error, err(400, 10038, "expected an empty request payload"), body);
    assert.equal((await api(h.nc, "$JS.API.CONSUMER.INFO.NUL.C", "{}")).name, "C");
    const invalid = err(400, 10025, "invalid JSON");
    for (const [op, body] of [["MSG.GET", '{"seq":-1}'], ["MSG.GET", '{"seq":"1"}'], ["MSG.GET", '{"seq":1.5}'], ["MSG.GET", '{"last_by_subj":5}'], ["PURGE", '{"keep":-1}'], ["PURGE", '{"filter":5}'], ["PURGE", '{"seq":1e30}'], ["MSG.DELETE", '{"seq":"1"}']]) {
      assert.deepEqual((await api(h.nc, `$JS.API.STREAM.${op}.NUL`, body)).error, invalid, `${op} ${body}`);
    }
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.NAMES", '{"subject":5}')).error, invalid);
    assert.equal((await jsm.streams.info("NUL")).config.name, "NUL");
  });

  test("a request's sequence or count written as a fraction or with an exponent is invalid JSON, and acts on nothing, as nats-server's uint64 decoding has it", async () => {
    await jsm.streams.add({ name: "LIT", subjects: ["lit.>"] });
    const js = jetstream(h.nc);
    for (let i = 0; i < 3; i++) await js.publish("lit.x", `${i}`);
    const invalid = { code: 400, err_code: 10025, description: "invalid JSON" };
    // Go's decoder takes only an integer literal into a uint64 field: 1e3 and 2.0 are refused there (seen with 2.9.10).
    for (const [op, body] of [["PURGE", '{"seq":1e3}'], ["PURGE", '{"seq":2.0}'], ["PURGE", '{"keep":1E0}'], ["PURGE", '{"seq":-0}'], ["MSG.DELETE", '{"seq":1.0}'], ["MSG.GET", '{"seq":1e0}']]) {
      assert.deepEqual((await api(h.nc, `$JS.API.STREAM.${op}.LIT`, body)).error, invalid, `${op} ${body}`);
    }
    const st = (await jsm.streams.info("LIT")).state;
    assert.deepEqual([st.first_seq, st.last_seq, st.messages], [1, 3, 3]);
    // The largest uint64 is one: a sequence past the end, not a malformed request.
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.MSG.DELETE.LIT", '{"seq":18446744073709551615}')).error, { code: 500, err_code: 10057, description: "stream store EOF" });
    // An escaped key is the same key to both decoders.
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.PURGE.LIT", '{"se\\u0071":2e0}')).error, invalid);
    assert.equal((await api(h.nc, "$JS.API.STREAM.PURGE.LIT", '{"other":{"seq":1e3},"seq":2}')).purged, 1);
    // A zero sequence or keep is none: with the other, not the "both" nats-server refuses.
    assert.equal((await api(h.nc, "$JS.API.STREAM.PURGE.LIT", '{"seq":0,"keep":1}')).purged, 1);
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.PURGE.LIT", '{"seq":5,"keep":1}')).error, { code: 400, err_code: 10003, description: "bad request" });
  });

  test("a sequence given by a key of another case, twice, or followed by a null is the one nats-server's decoder takes", async () => {
    await jsm.streams.add({ name: "LIT2", subjects: ["lit2.>"] });
    const js = jetstream(h.nc);
    for (let i = 0; i < 3; i++) await js.publish("lit2.x", `${i}`);
    // What nats-server 2.9.10 answers each (seen): Go matches a field's name in any case (the long s 'ſ' as an 's'),
    // decodes every member naming it in turn, and a null leaves the field as it was.
    for (const body of ['{"SEQ":2}', '{"seq":1,"Seq":2}', '{"seq":2,"seq":null}', '{"\u017feq":2}']) {
      const r = await api(h.nc, "$JS.API.STREAM.MSG.GET.LIT2", body);
      assert.equal(r.error, undefined, `${body}: ${JSON.stringify(r.error)}`);
      assert.equal((r.message as { seq: number }).seq, 2, body);
    }
    assert.deepEqual((await api(h.nc, "$JS.API.STREAM.MSG.GET.LIT2", '{"\u017feq":2e0}')).error, { code: 400, err_code: 10025, description: "invalid JSON" });
  });

  test("a request nested more than 10000 deep is invalid JSON and acts on nothing, as Go's decoder refuses it", async () => {
    await jsm.streams.add({ name: "DEEP", subjects: ["deep.>"] });
    const js = jetstream(h.nc);
    for (let i = 0; i < 3; i++) await js.publish("deep.x", `${i}`);
    const nested = (levels: number): string => `{"x":${"[".repeat(levels)}${"]".repeat(levels)},"seq":3}`;
    // The request object and 9999 arrays: 10000 deep, taken (nats-server 2.9.10 takes it, and refuses one more: seen).
    assert.equal((await api(h.nc, "$JS.API.STREAM.PURGE.DEEP", nested(9999))).purged, 2);
    for (const body of [nested(10000), nested(100000), `{"x":${'{"a":'.repeat(10000)}1${"}".repeat(10000)},"seq":3}`]) {
      assert.deepEqual((await api(h.nc, "$JS.API.STREAM.PURGE.DEEP", body)).error, { code: 400, err_code: 10025, description: "invalid JSON" });
    }
    // Brackets in strings are no nesting.
    assert.equal((await api(h.nc, "$JS.API.STREAM.PURGE.DEEP", `{"x":"${"[".repeat(30000)}\\"","seq":4}`)).purged, 1);
    const st = (await jsm.streams.info("DEEP")).state;
    assert.deepEqual([st.first_seq, st.messages], [4, 0]);
  });

  test("deleting a sequence not stored: the file store's 500 10057 outside first..last, 10043 for a gap and in memory, as nats-server 2.9.10", async () => {
    const js = (await import("@nats-io/jetstream")).jetstream(h.nc);
    const storeMiss = (why: string): ApiErr => ({ code: 500, err_code: 10057, description: why });
    const gap = (seq: number): ApiErr => ({ code: 400, err_code: 10043, description: `sequence ${seq} not found` });
    // nats-server 2.9.10's answers, per storage: [past the end, 0, a gap, below the first after a purge, an empty stream's 1].
    const NATS_SERVER: Record<string, ApiErr[]> = {
      file: [storeMiss("stream store EOF"), storeMiss("no message found"), gap(3), storeMiss("no message found"), storeMiss("stream store EOF")],
      memory: [gap(9), gap(0), gap(3), gap(2), gap(1)],
    };
    for (const storage of ["file", "memory"] as const) {
      const name = `DEL${storage}`;
      await jsm.streams.add({ name, subjects: [`del${storage}.>`], storage: storage === "file" ? StorageType.File : StorageType.Memory });
      for (let i = 0; i < 5; i++) await js.publish(`del${storage}.a`, "x");
      const del = async (stream: string, seq: number) => (await api(h.nc, `$JS.API.STREAM.MSG.DELETE.${stream}`, { seq })).error as ApiErr | undefined;
      const got: Array<ApiErr | undefined> = [await del(name, 9), await del(name, 0)];
      assert.equal(await del(name, 3), undefined);
      got.push(await del(name, 3));
      await jsm.streams.purge(name, { seq: 3 });
      got.push(await del(name, 2));
      await jsm.streams.add({ name: `${name}E`, subjects: [`del${storage}e.>`], storage: storage === "file" ? StorageType.File : StorageType.Memory });
      got.push(await del(`${name}E`, 1));
      assert.deepEqual(got, NATS_SERVER[storage], storage);
    }
  });

  test("malformed pull requests get nats-server's statuses instead of silence", async () => {
    await jsm.streams.add({ name: "PR", subjects: ["pr.>"] });
    await jsm.consumers.add("PR", { durable_name: "C", ack_policy: "explicit" });
    const statusOf = async (body: string) => {
      const got = await rawPull(h.nc, "PR", "C", body);
      assert.equal(got.length, 1, `one answer to ${body}: ${JSON.stringify(got)}`);
      return got[0].status!;
    };
    const badBatch = await statusOf('{"batch":"x"}');
    assert.equal(badBatch.code, 400);
    assert.equal(badBatch.description, "Bad Request - json: cannot unmarshal string into Go struct field JSApiConsumerGetNextRequest.batch of type int");
    const fraction = await statusOf('{"batch":1.5}');
    assert.equal(fraction.code, 400);
    assert.match(fraction.description, /cannot unmarshal number 1\.5 into Go struct field JSApiConsumerGetNextRequest\.batch of type int/);
    assert.equal((await statusOf('{"batch":1,"expires":1.5}')).code, 400);
    // Expired before it arrived: a timeout with what it wanted, before anything is delivered.
    const expired = await statusOf('{"batch":2,"expires":-5}');
    assert.equal(expired.code, 408);
    assert.equal(expired.headers["Nats-Pending-Messages"], "2");
    const hb = await statusOf('{"batch":1,"idle_heartbeat":1000000000}');
    assert.deepEqual([hb.code, hb.description], [400, "Bad Request - heartbeat value too large"]);
    // Anything that is not JSON is read as a batch size, one message when it is not a number (nats-server 2.10).
    await (await import("@nats-io/jetstream")).jetstream(h.nc).publish("pr.x", "m1");
    const got = await rawPull(h.nc, "PR", "C", "garbage", 1000);
    assert.equal(got[0].status, undefined);
    assert.equal(got[0].subject, "pr.x");
  });
});
