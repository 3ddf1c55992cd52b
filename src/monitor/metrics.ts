/**
 * `/metrics`: Prometheus exposition rendered at scrape time from the counters
 * the broker and the streams already keep (nothing is counted for it).
 *
 * Names are prometheus-nats-exporter's (`gnatsd_varz_*`, `jetstream_*`), so
 * the Grafana dashboards and alerts written for nats-server work unchanged;
 * the standard `process_*` metrics are there too; what neither has (the
 * JetStream API counters, storage damage) is `nagare_*`. Unlike the exporter,
 * which declares everything a gauge, monotonic counts are typed `counter`.
 * docs/MONITORING.md lists every metric.
 */

import type { Stream } from "../streams/stream.js";
import type { JetStream } from "../streams/jetstream.js";
import type { LogState } from "../store/log.js";
import type { MonitorContext, Reply } from "./context.js";
import { EXPOSITION_CONTENT_TYPE, Exposition, type Labels, type MetricType } from "./exposition.js";
import { jetStreamUsage, serverLimitsOf } from "./js-usage.js";
import { lostTotals } from "../streams/damage.js";

export function metrics(ctx: MonitorContext): Reply {
  const e = new Exposition();
  serverMetrics(e, ctx);
  processMetrics(e);
  jetStreamMetrics(e, ctx);
  return { status: 200, text: e.text(), contentType: EXPOSITION_CONTENT_TYPE };
}

function serverMetrics(e: Exposition, ctx: MonitorContext): void {
  const b = ctx.broker;
  const s = b.stats;
  const labels: Labels = [["server_id", b.serverId]];
  let subscriptions = 0;
  for (const a of b.accounts.values()) subscriptions += a.sublist.size;
  const rows: Array<[string, MetricType, string, number]> = [
    ["connections", "gauge", "Connections open now", b.connections.size],
    ["total_connections", "counter", "Connections accepted since the server started", s.totalConnections],
    ["subscriptions", "gauge", "Subscriptions registered now, in every account", subscriptions],
    ["slow_consumers", "counter", "Connections closed as slow consumers", s.slowConsumers],
    ["stale_connections", "counter", "Connections closed for unanswered pings", s.staleConnections],
    ["in_msgs", "counter", "Messages received from clients", s.inMsgs],
    ["out_msgs", "counter", "Messages sent to clients", s.outMsgs],
    ["in_bytes", "counter", "Payload bytes received from clients", s.inBytes],
    ["out_bytes", "counter", "Payload bytes sent to clients", s.outBytes],
    ["mem", "gauge", "Resident memory of the process, in bytes", process.memoryUsage.rss()],
  ];
  for (const [name, type, help, value] of rows) e.single(`gnatsd_varz_${name}`, type, help, labels, value);
}

function processMetrics(e: Exposition): void {
  const cpu = process.cpuUsage();
  e.single("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds", [], (cpu.user + cpu.system) / 1e6);
  e.single("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes", [], process.memoryUsage.rss());
  e.single("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds", [], Math.round(Date.now() / 1000 - process.uptime()));
}

/** One stream's labels and its partitions' states, read once per scrape. */
interface StreamRow {
  labels: Labels;
  stream: Stream;
  states: LogState[];
}

function jetStreamMetrics(e: Exposition, ctx: MonitorContext): void {
  const server: Labels = [
    ["server_id", ctx.broker.serverId],
    ["server_name", ctx.broker.serverName],
  ];
  const jss = ctx.jetstreams;
  e.single("jetstream_server_jetstream_disabled", "gauge", "1 when JetStream is disabled", server, jss === undefined ? 1 : 0);
  if (jss === undefined) return;

  const all = [...jss.all()].sort((a, b) => (a.account.name < b.account.name ? -1 : 1));
  const u = jetStreamUsage(all);
  const gauges: Array<[string, string, number]> = [
    ["total_streams", "Streams", u.streams],
    ["total_consumers", "Consumers", u.consumers],
    ["total_messages", "Messages stored in every stream and partition", u.messages],
    ["total_message_bytes", "Bytes stored in every stream and partition", u.bytes],
    ["max_memory", "Memory limit for streams in bytes (-1: none)", serverLimitsOf(jss).maxMemory],
    ["max_storage", "Storage limit for streams in bytes (-1: none)", serverLimitsOf(jss).maxStorage],
  ];
  for (const [name, help, value] of gauges) e.single(`jetstream_server_${name}`, "gauge", help, server, value);
  e.single("nagare_jetstream_api_requests_total", "counter", "JetStream API requests answered", server, sum(all, (js) => js.apiTotal));
  e.single("nagare_jetstream_api_errors_total", "counter", "JetStream API requests answered with an error", server, sum(all, (js) => js.apiErrors));

  const rows = all.flatMap((js) => streamRows(js, server));
  streamFamilies(e, rows);
  partitionFamilies(e, rows);
  consumerFamilies(e, rows);
}

function streamRows(js: JetStream, server: Labels): StreamRow[] {
  return [...js.streams.keys()].sort().map((name) => {
    const stream = js.streams.get(name)!;
    return {
      labels: [...server, ["account", js.account.name], ["stream_name", name]] as Labels,
      stream,
      states: stream.partitions.map((p) => p.state()),
    };
  });
}

function streamFamilies(e: Exposition, rows: StreamRow[]): void {
  // Totals cover every partition (a Kafka topic's too); sequences are the stream sequences JetStream addresses.
  const families: Array<[string, string, (r: StreamRow) => number]> = [
    ["total_messages", "Messages stored in the stream, every partition", (r) => sum(r.states, (st) => st.messages)],
    ["total_bytes", "Bytes stored in the stream, every partition", (r) => sum(r.states, (st) => st.bytes)],
    ["first_seq", "First stream sequence stored", (r) => r.stream.log.state().firstSeq],
    ["last_seq", "Last stream sequence assigned", (r) => r.stream.log.state().lastSeq],
    ["consumer_count", "Consumers of the stream", (r) => r.stream.consumers.size],
  ];
  for (const [name, help, value] of families) {
    e.family(`jetstream_stream_${name}`, "gauge", help);
    for (const r of rows) e.sample(r.labels, value(r));
  }
}

function sum<T>(items: readonly T[], f: (x: T) => number): number {
  let n = 0;
  for (const x of items) n += f(x);
  return n;
}

/** Storage health per partition, every partition listed (0 is a reading, not an absence). */
function partitionFamilies(e: Exposition, rows: StreamRow[]): void {
  const families: Array<[string, string, (st: LogState) => number]> = [
    ["nagare_stream_storage_error", "1 while the partition refuses appends after a failed write or sync (sticky until reopened)", (st) => (st.error === null ? 0 : 1)],
    ["nagare_stream_lost_messages", "Sequences destroyed by damage found in storage", (st) => lostTotals(st.lost).messages],
    ["nagare_stream_lost_bytes", "Bytes of the sequences destroyed by damage", (st) => lostTotals(st.lost).bytes],
  ];
  for (const [name, help, value] of families) {
    e.family(name, "gauge", help);
    for (const r of rows) r.states.forEach((st, p) => e.sample([...r.labels, ["partition", String(p)]], value(st)));
  }
}

interface ConsumerNumbers {
  delivered: { consumer_seq: number; stream_seq: number };
  ack_floor: { consumer_seq: number; stream_seq: number };
  num_ack_pending: number;
  num_redelivered: number;
  num_waiting: number;
  num_pending: number;
}

function consumerFamilies(e: Exposition, rows: StreamRow[]): void {
  const consumers: Array<{ labels: Labels; info: ConsumerNumbers }> = [];
  for (const r of rows) {
    for (const name of [...r.stream.consumers.keys()].sort()) {
      const info = r.stream.consumers.get(name)!.info() as unknown as ConsumerNumbers;
      consumers.push({ labels: [...r.labels, ["consumer_name", name]], info });
    }
  }
  const families: Array<[string, string, (c: ConsumerNumbers) => number]> = [
    ["num_pending", "Messages not yet delivered to the consumer (its lag)", (c) => c.num_pending],
    ["num_ack_pending", "Messages delivered and not yet acknowledged", (c) => c.num_ack_pending],
    ["num_redelivered", "Messages delivered more than once and still pending", (c) => c.num_redelivered],
    ["num_waiting", "Pull requests waiting", (c) => c.num_waiting],
    ["delivered_consumer_seq", "Last consumer sequence delivered", (c) => c.delivered.consumer_seq],
    ["delivered_stream_seq", "Last stream sequence delivered", (c) => c.delivered.stream_seq],
    ["ack_floor_consumer_seq", "Consumer sequence up to which everything is acknowledged", (c) => c.ack_floor.consumer_seq],
    ["ack_floor_stream_seq", "Stream sequence up to which everything is acknowledged", (c) => c.ack_floor.stream_seq],
  ];
  for (const [name, help, value] of families) {
    e.family(`jetstream_consumer_${name}`, "gauge", help);
    for (const c of consumers) e.sample(c.labels, value(c.info));
  }
}
