import type { Broker } from "../../core/broker.js";
import { ADVERTISED_VERSION } from "../../core/broker.js";
import { authRequired } from "../../core/options.js";

/** The INFO line a client gets on connect (and again, with `ldm`, in lame-duck mode). */
export function infoLine(broker: Broker, cid: number, clientIp: string, lameDuck: boolean, nonce: string | null = null): Buffer {
  const o = broker.options;
  const info: Record<string, unknown> = {
    server_id: broker.serverId,
    server_name: broker.serverName,
    version: ADVERTISED_VERSION,
    proto: 1,
    go: "nagare",
    host: o.host,
    port: broker.clientPort,
    headers: true,
    max_payload: o.maxPayload,
    client_id: cid,
    client_ip: clientIp,
  };
  // Account users and operator mode need credentials as much as an authorization block does (nats-server says so for all three).
  if (authRequired(o)) info.auth_required = true;
  if (nonce !== null) info.nonce = nonce;
  if (o.tls !== undefined) {
    // As nats-server: with allow_non_tls TLS is offered (tls_available), not required.
    if (o.tls.allowNonTls === true) info.tls_available = true;
    else info.tls_required = true;
    if (o.tls.verify === true || o.tls.verifyAndMap === true) info.tls_verify = true;
  }
  if (o.jetstream) info.jetstream = true;
  if (lameDuck) info.ldm = true;
  return Buffer.from(`INFO ${JSON.stringify(info)}\r\n`);
}
