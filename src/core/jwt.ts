/**
 * NATS JWTs at the lowest level: their claims, read with the signature
 * checked by node:crypto (the key read by @nats-io/nkeys), and the error
 * every JWT that cannot be trusted or honoured becomes.
 */

import { verify as verifySignature } from "node:crypto";
import { ed25519Key, prefixOf } from "./auth.js";

/** Claims as JWTs carry them. */
export interface Claims {
  jti?: string;
  sub: string;
  iss: string;
  name?: string;
  exp?: number;
  nbf?: number;
  iat?: number;
  nats?: Record<string, unknown>;
}

/** Why an operator or account JWT cannot be used: startup errors, and answers to updates. */
export class JwtConfigError extends Error {}

/**
 * The claims of a JWT whose signature by its issuer (`iss`) verifies, or
 * null: the rules of @nats-io/jwt's decode (typ JWT; alg ed25519-nkey signs
 * header.payload, ed25519 the payload alone), with the signature checked by
 * node:crypto. @nats-io/jwt checks it in pure JavaScript, which holds the
 * event loop about 10 ms, so a flood of connects would stall every client.
 */
export function verifiedClaims(jwt: string): Claims | null {
  const parts = jwt.split(".");
  if (parts.length !== 3) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8")) as { typ?: unknown; alg?: unknown };
    if ((header.typ !== "JWT" && header.typ !== "jwt") || (header.alg !== "ed25519-nkey" && header.alg !== "ed25519")) return null;
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8")) as Claims;
    if (claims === null || typeof claims !== "object" || typeof claims.iss !== "string" || typeof claims.sub !== "string") return null;
    const key = ed25519Key(claims.iss, prefixOf(claims.iss));
    if (key === null) return null;
    const signed = header.alg === "ed25519-nkey" ? `${parts[0]}.${parts[1]}` : parts[1];
    return verifySignature(null, Buffer.from(signed), key, Buffer.from(parts[2], "base64url")) ? claims : null;
  } catch {
    return null;
  }
}

/** The claims of a JWT without checking its signature, or null; for what only needs to be read (the operator's system account). */
export function decodedClaims(jwt: string): Claims | null {
  try {
    const c = JSON.parse(Buffer.from(jwt.trim().split(".")[1] ?? "", "base64url").toString("utf8")) as Claims;
    return c !== null && typeof c === "object" ? c : null;
  } catch {
    return null;
  }
}

