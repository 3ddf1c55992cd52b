/**
 * The streams of one account: their lifecycle, where they live on disk, the
 * subscriptions that capture published subjects, and the consumers on them.
 * Requests arrive through the JetStream API (api.ts); this module owns the
 * state those requests change.
 *
 * Layout under the store directory:
 *   streams/<name>/meta.json          stream config, created time, partition count
 *   streams/<name>/p<N>/              the partition's log segments
 *   streams/<name>/obs/<c>/meta.json  durable consumer config and created time
 *   streams/<name>/obs/<c>/state.json consumer delivery and ack state
 */

import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { readdir } from "node:fs/promises";
import type { Account } from "../server/account.js";
import type { Logger } from "../server/log.js";
import { Message } from "../subjects/message.js";
import { Subscription, type Receiver } from "../subjects/subscription.js";
import { subjectMatches } from "../subjects/subject.js";
import { FileLog } from "../store/file-log.js";
import { MemoryLog } from "../store/memory-log.js";
import type { MessageLog, SyncPolicy } from "../store/log.js";
import { Consumer, type DeliveryHost } from "./consumer.js";
import { limitsOf, Stream } from "./stream.js";
import { ApiError, Errors } from "./errors.js";
import {
  consumerUpdateError,
  filtersOf,
  normalizeConsumerConfig,
  normalizeStreamConfig,
  sameJson,
  streamUpdateError,
  subjectsIntersect,
  type ConsumerConfig,
  type StreamConfig,
} from "./config.js";
import { readJson, removeDir, safeJoin, writeJsonDurably } from "./persist.js";

export interface JetStreamOptions {
  storeDir: string;
  maxPayload: number;
  sync?: SyncPolicy;
  syncIntervalMs?: number;
  log: Logger;
}

interface StreamMeta {
  config: StreamConfig;
  created: string;
  partitions: number;
}

interface ConsumerMeta {
  name: string;
  config: ConsumerConfig;
  created: string;
}

const NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function randomName(): string {
  const b = randomBytes(8);
  let s = "";
  for (let i = 0; i < 8; i++) s += NAME_CHARS[b[i] % NAME_CHARS.length];
  return s;
}

/** Captures a stream's subjects: copies each published message into the stream. */
class StreamReceiver implements Receiver {
  readonly echo = true;
  readonly subs: Subscription[] = [];
  constructor(
    readonly stream: Stream,
    private readonly js: JetStream,
  ) {}

  deliver(_sub: Subscription, msg: Message): void {
    const hdrEnd = msg.start + msg.hdrLen;
    // The publisher reuses its read buffer: keep copies.
    const headers = msg.hdrLen > 0 ? Buffer.from(msg.data.subarray(msg.start, hdrEnd)) : null;
    const data = Buffer.from(msg.data.subarray(hdrEnd, msg.end));
    const reply = msg.hasReply ? msg.reply : "";
    const name = this.stream.config.name;
    this.stream.publish(msg.subject, headers, data, (err, seq, duplicate) => {
      if (reply === "" || this.stream.config.no_ack) return;
      const body = err !== null ? { error: err.toJSON(), stream: name, seq: 0 } : duplicate ? { stream: name, seq, duplicate: true } : { stream: name, seq };
      this.js.emit(reply, reply, "", null, Buffer.from(JSON.stringify(body)));
    });
  }
}

export class JetStream implements DeliveryHost {
  readonly streams = new Map<string, Stream>();
  private readonly receivers = new Map<Stream, StreamReceiver>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly onSubscribe = (sub: Subscription): void => {
    for (const s of this.streams.values()) {
      for (const c of s.consumers.values()) {
        if (c.push && subjectMatches(sub.subject, c.config.deliver_subject!)) c.notify();
      }
    }
  };
  apiTotal = 0;
  apiErrors = 0;
  private closed = false;

  private constructor(
    readonly account: Account,
    readonly options: JetStreamOptions,
  ) {
    this.account.subscribeListeners.push(this.onSubscribe);
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
  }

  static async start(account: Account, options: JetStreamOptions): Promise<JetStream> {
    const js = new JetStream(account, options);
    await js.load();
    return js;
  }

  private get streamsDir(): string {
    return join(this.options.storeDir, "streams");
  }

  // ---- DeliveryHost ----

  emit(to: string, subject: string, reply: string, headers: Buffer | null, data: Buffer): void {
    if (this.closed) return;
    const m = Message.from(subject, reply, data, headers ?? undefined);
    // Match on the target, present the stored subject: deliveries keep their original subject.
    m.subject = to;
    this.account.route(m, null);
  }

  hasInterest(subject: string): boolean {
    const r = this.account.sublist.match(subject);
    for (const s of r.plain) if (!s.closed) return true;
    return r.queues.length > 0;
  }

  onConsumerGone(c: Consumer): void {
    void this.deleteConsumer(c.stream, c.name).catch(() => undefined);
  }

  // ---- loading ----

  private async load(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.streamsDir);
    } catch {
      return;
    }
    for (const dirName of names) {
      const dir = join(this.streamsDir, dirName);
      const meta = (await readJson(join(dir, "meta.json"))) as StreamMeta | undefined;
      if (meta === undefined) continue;
      try {
        const config = normalizeStreamConfig(meta.config);
        const stream = await this.openStream(config, new Date(meta.created), dir, meta.partitions ?? 1);
        await this.loadConsumers(stream);
      } catch (err) {
        this.options.log.error(`Could not restore stream ${dirName}: ${(err as Error).message}`);
      }
    }
  }

  private async loadConsumers(stream: Stream): Promise<void> {
    const obs = join(stream.dir!, "obs");
    let names: string[];
    try {
      names = await readdir(obs);
    } catch {
      return;
    }
    for (const dirName of names) {
      const dir = join(obs, dirName);
      const meta = (await readJson(join(dir, "meta.json"))) as ConsumerMeta | undefined;
      if (meta === undefined) continue;
      const c = new Consumer(stream, meta.name, meta.config, new Date(meta.created), this, dir);
      await c.restore();
      stream.consumers.set(meta.name, c);
      c.notify();
    }
  }

  private async openStream(config: StreamConfig, created: Date, dir: string | null, partitionCount: number): Promise<Stream> {
    const partitions: MessageLog[] = [];
    const limits = limitsOf(config);
    for (let p = 0; p < partitionCount; p++) {
      if (config.storage === "memory" || dir === null) {
        partitions.push(new MemoryLog({ limits, maxRecordBytes: this.options.maxPayload + 64 * 1024 }));
      } else {
        partitions.push(
          await FileLog.open({
            dir: join(dir, `p${p}`),
            limits,
            sync: this.options.sync ?? "always",
            syncIntervalMs: this.options.syncIntervalMs,
            maxRecordBytes: this.options.maxPayload + 64 * 1024,
            onWarning: (text) => this.options.log.warn(`stream ${config.name}: ${text}`),
          }),
        );
      }
    }
    const stream = new Stream(config, created, partitions, config.storage === "file" ? dir : null, this.options.maxPayload);
    stream.republishTo = (subject, headers, data) => this.emit(subject, subject, "", headers, data);
    await stream.recover();
    this.streams.set(config.name, stream);
    this.bindSubjects(stream);
    return stream;
  }

  private bindSubjects(stream: Stream): void {
    let r = this.receivers.get(stream);
    if (r === undefined) {
      r = new StreamReceiver(stream, this);
      this.receivers.set(stream, r);
    }
    for (const s of r.subs) this.account.unsubscribe(s);
    r.subs.length = 0;
    for (const subject of stream.config.subjects) {
      const sub = new Subscription(r, subject, null);
      r.subs.push(sub);
      this.account.subscribe(sub);
    }
  }

  private unbind(stream: Stream): void {
    const r = this.receivers.get(stream);
    if (r === undefined) return;
    for (const s of r.subs) this.account.unsubscribe(s);
    this.receivers.delete(stream);
  }

  // ---- streams ----

  stream(name: string): Stream {
    const s = this.streams.get(name);
    if (s === undefined) throw Errors.streamNotFound();
    return s;
  }

  private checkOverlap(config: StreamConfig, except: Stream | null): void {
    for (const other of this.streams.values()) {
      if (other === except) continue;
      for (const a of other.config.subjects) {
        for (const b of config.subjects) if (subjectsIntersect(a, b)) throw Errors.subjectOverlap();
      }
    }
  }

  /** Creates a stream, or returns the existing one if its configuration is the same. */
  async createStream(raw: unknown, partitions = 1): Promise<{ stream: Stream; created: boolean }> {
    const config = normalizeStreamConfig(raw);
    const existing = this.streams.get(config.name);
    if (existing !== undefined) {
      if (sameJson(existing.config, config) && existing.partitions.length === partitions) return { stream: existing, created: false };
      throw Errors.streamNameExists();
    }
    if (config.allow_msg_ttl) throw Errors.streamConfig("per-message TTL is not supported yet");
    this.checkOverlap(config, null);
    const created = new Date();
    const dir = config.storage === "file" ? safeJoin(this.streamsDir, config.name) : null;
    if (dir !== null) await writeJsonDurably(join(dir, "meta.json"), { config, created: created.toISOString(), partitions } satisfies StreamMeta);
    const stream = await this.openStream(config, created, dir, partitions);
    return { stream, created: true };
  }

  async updateStream(raw: unknown): Promise<Stream> {
    const config = normalizeStreamConfig(raw);
    const stream = this.stream(config.name);
    const err = streamUpdateError(stream.config, config);
    if (err !== null) throw err;
    if (config.allow_msg_ttl) throw Errors.streamConfig("per-message TTL is not supported yet");
    this.checkOverlap(config, stream);
    if (stream.dir !== null) {
      await writeJsonDurably(join(stream.dir, "meta.json"), { config, created: stream.created.toISOString(), partitions: stream.partitions.length } satisfies StreamMeta);
    }
    const subjectsChanged = !sameJson(stream.config.subjects, config.subjects);
    stream.updateConfig(config);
    if (subjectsChanged) this.bindSubjects(stream);
    return stream;
  }

  async deleteStream(name: string): Promise<void> {
    const stream = this.stream(name);
    stream.deleted = true;
    this.streams.delete(name);
    this.unbind(stream);
    for (const c of stream.consumers.values()) {
      c.notifyDeleted();
      await c.stop();
    }
    stream.consumers.clear();
    for (const p of stream.partitions) await p.close();
    if (stream.dir !== null) await removeDir(stream.dir);
  }

  /** Streams whose subjects could carry `subject` (wildcards allowed), sorted by name. */
  streamNames(subject?: string): string[] {
    const out: string[] = [];
    for (const s of this.streams.values()) {
      if (subject === undefined || subject === "" || s.config.subjects.some((x) => subjectsIntersect(x, subject))) out.push(s.config.name);
    }
    return out.sort();
  }

  // ---- consumers ----

  async createConsumer(
    stream: Stream,
    raw: unknown,
    action: string,
    subjectName: string | undefined,
    subjectFilter: string | undefined,
    legacyDurable: boolean,
  ): Promise<Consumer> {
    const config = normalizeConsumerConfig(raw, stream.config);
    if (legacyDurable) {
      if (config.durable_name === undefined) throw Errors.consumerDurableNotInSubject();
      if (config.durable_name !== subjectName) throw Errors.consumerDurableSubjectMismatch();
    } else if (subjectName !== undefined) {
      if (config.name !== undefined && config.name !== subjectName) throw Errors.consumerDurableSubjectMismatch();
      config.name = subjectName;
      if (subjectFilter !== undefined) {
        const filters = filtersOf(config);
        if (filters.length !== 1 || filters[0] !== subjectFilter) throw Errors.consumerFilterMismatch();
      }
    }
    const name = config.name ?? randomName();
    if (config.name === undefined) config.name = name;
    const existing = stream.consumers.get(name);
    if (existing !== undefined) {
      if (sameJson(existing.config, config)) return existing;
      if (action === "create") throw Errors.consumerExists();
      const err = consumerUpdateError(existing.config, config);
      if (err !== null) throw err;
      if (existing.dir !== null) await this.saveConsumerMeta(existing.dir, name, config, existing.created);
      existing.updateConfig(config);
      return existing;
    }
    if (action === "update") throw Errors.consumerDoesNotExist();
    const max = stream.config.max_consumers;
    if (max > 0 && stream.consumers.size >= max) throw Errors.maxConsumers();
    if (stream.config.retention === "workqueue") this.checkWorkQueue(stream, config);
    const created = new Date();
    const persistent = stream.dir !== null && config.durable_name !== undefined && !config.mem_storage;
    const dir = persistent ? safeJoin(join(stream.dir!, "obs"), name) : null;
    if (dir !== null) await this.saveConsumerMeta(dir, name, config, created);
    const c = new Consumer(stream, name, config, created, this, dir);
    await c.start();
    stream.consumers.set(name, c);
    c.notify();
    return c;
  }

  private checkWorkQueue(stream: Stream, config: ConsumerConfig): void {
    const mine = filtersOf(config);
    for (const other of stream.consumers.values()) {
      const theirs = filtersOf(other.config);
      if (mine.length === 0 || theirs.length === 0) throw Errors.consumerWqMultipleUnfiltered();
      for (const a of mine) for (const b of theirs) if (subjectsIntersect(a, b)) throw Errors.consumerWqNotUnique();
    }
  }

  private async saveConsumerMeta(dir: string, name: string, config: ConsumerConfig, created: Date): Promise<void> {
    await writeJsonDurably(join(dir, "meta.json"), { name, config, created: created.toISOString() } satisfies ConsumerMeta);
  }

  consumer(stream: Stream, name: string): Consumer {
    const c = stream.consumers.get(name);
    if (c === undefined) throw Errors.consumerNotFound();
    return c;
  }

  async deleteConsumer(stream: Stream, name: string): Promise<void> {
    const c = this.consumer(stream, name);
    stream.consumers.delete(name);
    c.notifyDeleted();
    await c.stop();
    if (c.dir !== null) await removeDir(c.dir);
  }

  /** Ephemeral consumers (and those with an inactive threshold) go once nobody uses them. */
  private sweep(): void {
    const now = Date.now();
    for (const s of this.streams.values()) {
      for (const c of s.consumers.values()) if (c.isInactive(now)) this.onConsumerGone(c);
    }
  }

  /** Routes an ack (`$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>`). */
  onAck(subject: string, body: Buffer, reply: string): void {
    const t = subject.split(".");
    if (t.length !== 9) return;
    const c = this.streams.get(t[2])?.consumers.get(t[3]);
    if (c === undefined) return;
    c.onAck(Number(t[5]), Number(t[6]), body, reply);
  }

  /** A flow-control answer (`$JS.FC.<stream>.<consumer>.<n>`). */
  onFlowControl(subject: string): void {
    const t = subject.split(".");
    if (t.length < 5) return;
    this.streams.get(t[2])?.consumers.get(t[3])?.onFlowControlReply(subject);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    const i = this.account.subscribeListeners.indexOf(this.onSubscribe);
    if (i >= 0) this.account.subscribeListeners.splice(i, 1);
    for (const s of this.streams.values()) {
      this.unbind(s);
      for (const c of s.consumers.values()) await c.stop();
      for (const p of s.partitions) await p.close();
    }
    this.streams.clear();
  }
}

export { ApiError };
