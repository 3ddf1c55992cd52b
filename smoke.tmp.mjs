import { startServer } from "/work/main/dist/src/index.js";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { mkdtempSync } from "node:fs";
const dir = mkdtempSync("/tmp/js/s-");
const srv = await startServer({ port: 0, jetstream: true, storeDir: dir });
const nc = await connect({ servers: srv.url });
const jsm = await jetstreamManager(nc);
console.log("account", (await jsm.getAccountInfo()).streams);
const si = await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
console.log("created", si.config.name, si.state.messages);
const js = jetstream(nc);
for (let i = 0; i < 10; i++) { const pa = await js.publish(`orders.${i % 3}`, `m${i}`, { msgID: `id${i}` }); if (i < 2) console.log(pa); }
const dup = await js.publish("orders.1", "x", { msgID: "id1" });
console.log("dup", dup);
console.log((await jsm.streams.info("ORDERS")).state);
await jsm.consumers.add("ORDERS", { durable_name: "C1", ack_policy: AckPolicy.Explicit });
const c = await js.consumers.get("ORDERS", "C1");
const batch = await c.fetch({ max_messages: 5, expires: 2000 });
for await (const m of batch) { console.log("got", m.subject, m.seq, m.info.pending); m.ack(); }
const m = await c.next({ expires: 1000 }); console.log("next", m?.seq); await m?.ackAck();
console.log((await c.info()).num_pending, (await c.info()).ack_floor);
const oc = await js.consumers.get("ORDERS");
const it = await oc.consume();
let n = 0; for await (const m of it) { n++; if (m.info.pending === 0) break; }
console.log("ordered got", n);
const kvm = new Kvm(nc);
const kv = await kvm.create("cfg", { history: 5 });
await kv.put("a", "1"); await kv.put("a", "2"); await kv.put("b.c", "3");
console.log("get", (await kv.get("a"))?.string(), (await kv.get("a"))?.revision);
try { await kv.create("a", "x"); } catch (e) { console.log("create conflict:", e.message); }
await kv.create("new", "x");
await kv.update("a", "3", 2).then(()=>console.log("update ok"), e => console.log("update err", e.message));
await kv.delete("b.c");
const keys = []; for await (const k of await kv.keys()) keys.push(k); console.log("keys", keys);
const h = []; for await (const e of await kv.history({ key: "a" })) h.push(e.string()); console.log("history", h);
await nc.close(); await srv.close(); console.log("done");
