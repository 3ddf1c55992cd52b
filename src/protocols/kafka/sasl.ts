/**
 * SASL for Kafka clients (SaslHandshake v0–1, SaslAuthenticate v0–2), against
 * the server's users (`authorization` and every account's; in operator mode,
 * bearer user JWTs as the PLAIN password), as a Kafka broker's SASL listener
 * does it: with authorization, a connection may send only ApiVersions and the two
 * SASL APIs until it has authenticated (anything else closes it, as Kafka's
 * "Unexpected Kafka request of type X during SASL handshake" does), and a
 * failed authentication is answered SASL_AUTHENTICATION_FAILED with Kafka's
 * message, then the connection is closed.
 *
 * Mechanisms: PLAIN (any user with a password, plain or bcrypt; with a token,
 * the token as the password) and SCRAM-SHA-256/512 (RFC 5802, 7677), for
 * users whose password is given in plain text: a bcrypt hash does not give
 * back the password the SCRAM keys derive from. core/auth.ts derives and
 * keeps the keys; the exchange is here. NKey users have no Kafka mechanism.
 * A user authenticated is served its own account: its topics, groups and
 * transactions (account-door.ts); a user of an account without JetStream
 * is refused, there being nothing to serve it.
 */

import { createHash, createHmac, randomBytes } from "node:crypto";
import type { RequestContext } from "./api.js";
import type { KafkaDoor } from "./door.js";
import type { AccountDoor } from "./account-door.js";
import type { KafkaConnection } from "./connection.js";
import { ErrorCode } from "./errors.js";
import { decodeSaslAuthenticate, decodeSaslHandshake } from "./requests.js";
import { sameSecret, type Identity, type PasswordAuth, type ScramHash } from "../../core/auth.js";

export const SASL_MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

/** How a user JWT's allowed_connection_types names this door. */
export const KAFKA_CONNECTION_TYPE = "KAFKA";

const SCRAM_HASH: Record<string, ScramHash> = { "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512" };

/** A failed step: Kafka's error message for it. */
class SaslFailure extends Error {}

/** Where a connection's SASL exchange stands. */
export class SaslState {
  mechanism: SaslMechanism | null = null;
  /** After a v0 handshake: the next frames are bare SASL tokens, not Kafka requests, until authenticated. */
  raw = false;
  /** A SaslAuthenticate is being checked: another one meanwhile is out of order. */
  busy = false;
  /** The authenticator the exchange began with: one a reload replaced meanwhile does not let the client in (admit). */
  startedWith: PasswordAuth | null = null;
  /** After SCRAM's first message: what the final one is checked against. */
  private scram: { hash: ScramHash; firstBare: string; serverFirst: string; clientNonce: string; nonce: string; gs2: string; storedKey: Buffer; serverKey: Buffer; identity: Identity } | null = null;

  /**
   * One SaslAuthenticate token: the bytes to answer and, once the client is
   * proven, its identity. Throws SaslFailure with the message for the client.
   */
  async step(door: KafkaDoor, token: Buffer): Promise<{ reply: Buffer; identity: Identity | null; account: AccountDoor | null }> {
    this.startedWith ??= door.auth;
    const { reply, identity } = await this.exchange(door, token);
    if (identity === null) return { reply, identity, account: null };
    // A user is let in to its account's topics: an account without JetStream has none to serve.
    const account = await door.accountDoor(identity.account);
    if (account === null) throw new SaslFailure(`Authentication failed: account ${identity.account} has no JetStream, whose streams are the Kafka topics`);
    return { reply, identity, account };
  }

  private async exchange(door: KafkaDoor, token: Buffer): Promise<{ reply: Buffer; identity: Identity | null }> {
    const auth = door.auth!;
    if (this.mechanism === "PLAIN") {
      // [authzid] NUL authcid NUL passwd
      const text = token.toString("utf8");
      const parts = text.split("\u0000");
      if (parts.length !== 3) throw new SaslFailure("Invalid SASL/PLAIN response: expected 3 tokens, got " + parts.length);
      const [authzid, user, pass] = parts;
      if (user === "") throw new SaslFailure("Authentication failed: username not specified");
      if (pass === "") throw new SaslFailure("Authentication failed: password not specified");
      if (authzid !== "" && authzid !== user) throw new SaslFailure("Authentication failed: Client requested an authorization id that is different from username");
      const identity = await auth.authenticatePassword(user, pass, KAFKA_CONNECTION_TYPE);
      if (identity === null) throw new SaslFailure("Authentication failed: Invalid username or password");
      return { reply: Buffer.alloc(0), identity: { ...identity, name: identity.name === "" ? user : identity.name } };
    }
    const hash = SCRAM_HASH[this.mechanism!];
    const invalid = new SaslFailure(`Authentication failed during authentication due to invalid credentials with SASL mechanism ${this.mechanism}`);
    if (this.scram === null) {
      // gs2-header ("n,," or "n,a=authzid,"; channel binding is not offered) then client-first-bare.
      const m = /^([ny]),(?:a=([^,]*))?,(n=([^,]*),r=([\x21-\x2b\x2d-\x7e]+)(?:,.*)?)$/s.exec(token.toString("utf8"));
      if (m === null) throw invalid;
      const user = unescapeSaslName(m[4]);
      const authzid = m[2] === undefined ? "" : unescapeSaslName(m[2]);
      if (/(?:^|,)tokenauth=true(?:,|$)/i.test(m[3])) throw invalid; // Kafka delegation tokens: none here
      const cred = user === null ? null : await door.auth!.scramCredential(user, hash);
      if (cred === null) throw invalid;
      if (authzid !== "" && authzid !== user) throw new SaslFailure("Authentication failed: Client requested an authorization id that is different from username");
      const nonce = m[5] + randomBytes(18).toString("base64");
      const serverFirst = `r=${nonce},s=${cred.salt.toString("base64")},i=${cred.iterations}`;
      const gs2 = token.toString("utf8", 0, token.length - Buffer.byteLength(m[3]));
      this.scram = { hash, firstBare: m[3], serverFirst, clientNonce: m[5], nonce, gs2, storedKey: cred.storedKey, serverKey: cred.serverKey, identity: { ...cred.identity } };
      return { reply: Buffer.from(serverFirst), identity: null };
    }
    const s = this.scram;
    this.scram = null; // one final message per exchange
    const m = /^(c=([A-Za-z0-9+/]+=*),r=([^,]+)(?:,[a-z]=[^,]*)*),p=([A-Za-z0-9+/]+=*)$/.exec(token.toString("utf8"));
    // The nonce as sent in server-first; librdkafka (2.0) sends its own nonce before it once more, which is
    // accepted: the proof covers the message as sent, and it holds the server's fresh part all the same.
    const nonceOk = m !== null && (m[3] === s.nonce || m[3] === s.clientNonce + s.nonce);
    if (m === null || !nonceOk || Buffer.from(m[2], "base64").toString("utf8") !== s.gs2) throw invalid;
    const authMessage = `${s.firstBare},${s.serverFirst},${m[1]}`;
    const proof = Buffer.from(m[4], "base64");
    const clientSignature = createHmac(s.hash, s.storedKey).update(authMessage).digest();
    if (proof.length !== clientSignature.length) throw invalid;
    for (let i = 0; i < proof.length; i++) proof[i] ^= clientSignature[i]; // now the ClientKey
    if (!sameSecret(createHash(s.hash).update(proof).digest(), s.storedKey)) throw invalid;
    const serverSignature = createHmac(s.hash, s.serverKey).update(authMessage).digest();
    return { reply: Buffer.from(`v=${serverSignature.toString("base64")}`), identity: s.identity };
  }
}

/** An authenticated client: from now on it is its user, in its account. */
function admit(door: KafkaDoor, conn: KafkaConnection, identity: Identity, account: AccountDoor): void {
  // Proven against users a reload has since replaced: the client connects again and proves itself to the new ones.
  if (door.auth !== conn.sasl.startedWith) return conn.close("authorization reloaded during its SASL exchange");
  // Gone while its credentials were checked (a bcrypt comparison takes a while): its close has run, and would not take it
  // out of its account's members again.
  if (conn.closed) return;
  if (!conn.joinAccount(identity.account)) throw new SaslFailure("Authentication failed: maximum account active connections exceeded");
  conn.identity = identity;
  conn.account = account;
  door.log.debug(`kafka ${conn.remote}: authenticated as ${identity.name} (account ${identity.account}) with ${conn.sasl.mechanism}`);
}

/** RFC 5802's saslname: "=2C" is a comma, "=3D" an equals sign, and no other "=" may appear. */
function unescapeSaslName(s: string): string | null {
  if (/=(?!2C|3D)/.test(s)) return null;
  return s.replace(/=2C/g, ",").replace(/=3D/g, "=");
}

/**
 * SaslHandshake v1: the client names its mechanism. On a listener without
 * SASL, or a connection already authenticated, Kafka's request handler
 * answers ILLEGAL_SASL_STATE with no mechanisms and keeps the connection.
 * During an exchange, Kafka's authenticator answers a second handshake
 * ILLEGAL_SASL_STATE, and a mechanism not enabled UNSUPPORTED_SASL_MECHANISM
 * with the list, and closes the connection.
 */
export function handleSaslHandshake(door: KafkaDoor, { conn, version, r, w }: RequestContext): boolean {
  const { mechanism } = decodeSaslHandshake(r);
  if (door.auth === null || conn.identity !== null) {
    w.i16(ErrorCode.ILLEGAL_SASL_STATE).arrayLength(0);
    return true;
  }
  const enabled = door.options.saslMechanisms;
  let error: number = ErrorCode.NONE;
  if (conn.sasl.mechanism !== null) error = ErrorCode.ILLEGAL_SASL_STATE;
  else if (!(enabled as readonly string[]).includes(mechanism)) error = ErrorCode.UNSUPPORTED_SASL_MECHANISM;
  else {
    conn.sasl.mechanism = mechanism as SaslMechanism;
    conn.sasl.raw = version === 0;
  }
  w.i16(error);
  w.array(enabled, (w, m) => w.string(m));
  if (error !== ErrorCode.NONE) conn.endAfterResponses(`SASL handshake for ${mechanism} refused (error ${error})`);
  return true;
}

/** SaslAuthenticate v0–2: one token of the exchange the handshake chose. */
export async function handleSaslAuthenticate(door: KafkaDoor, { conn, version, flexible, r, w }: RequestContext): Promise<boolean> {
  const { authBytes } = decodeSaslAuthenticate(r, version);
  const sasl = conn.sasl;
  let error: number = ErrorCode.NONE;
  let message: string | null = null;
  let reply: Buffer = Buffer.alloc(0);
  if (door.auth === null || conn.identity !== null || sasl.mechanism === null || sasl.busy) {
    error = ErrorCode.ILLEGAL_SASL_STATE;
    message = "SaslAuthenticate out of order: a SaslHandshake must choose the mechanism first, once";
  } else {
    sasl.busy = true;
    try {
      const step = await sasl.step(door, Buffer.from(authBytes));
      reply = step.reply;
      if (step.identity !== null) admit(door, conn, step.identity, step.account!);
    } catch (err) {
      if (!(err instanceof SaslFailure)) throw err;
      error = ErrorCode.SASL_AUTHENTICATION_FAILED;
      message = err.message;
    } finally {
      sasl.busy = false;
    }
  }
  w.i16(error);
  if (flexible) w.compactNullableString(message).compactBytes(reply);
  else w.nullableString(message).nullableBytes(reply);
  if (version >= 1) w.i64(0); // session_lifetime_ms: no re-authentication asked
  if (flexible) w.tags();
  if (error !== ErrorCode.NONE) conn.endAfterResponses(`SASL authentication failed: ${message}`);
  return true;
}

/**
 * One bare token after a v0 handshake (Kafka before SaslAuthenticate): the
 * reply to send back as a bare frame, or null when authentication failed
 * (a bare exchange has no error to send: the connection is closed).
 */
export async function rawSaslToken(door: KafkaDoor, conn: KafkaConnection, token: Buffer): Promise<Buffer | null> {
  const sasl = conn.sasl;
  try {
    const step = await sasl.step(door, token);
    if (step.identity !== null) {
      admit(door, conn, step.identity, step.account!);
      sasl.raw = false;
    }
    return step.reply;
  } catch (err) {
    if (!(err instanceof SaslFailure)) throw err;
    door.log.debug(`kafka ${conn.remote}: ${err.message}`);
    return null;
  }
}
