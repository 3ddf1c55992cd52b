/**
 * Subject syntax. Subjects are `.`-separated tokens; `*` matches one token and
 * `>` (last token only) matches one or more. Publish subjects may not contain
 * wildcards. These checks run once per PUB/SUB, so they scan char codes
 * rather than splitting.
 */

const DOT = 0x2e;
const STAR = 0x2a;
const GT = 0x3e;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a;
}

/** A subject usable as a subscription: wildcards allowed as whole tokens. */
export function isValidSubscribeSubject(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  let tokenStart = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : DOT;
    if (c === DOT) {
      const len = i - tokenStart;
      if (len === 0) return false;
      if (len === 1) {
        const t = s.charCodeAt(tokenStart);
        // `>` must be the last token.
        if (t === GT && i !== n) return false;
      } else {
        // A wildcard character inside a longer token is a literal in
        // nats-server (e.g. `foo*`); we accept it the same way.
      }
      tokenStart = i + 1;
    } else if (isSpace(c)) {
      return false;
    }
  }
  return true;
}

/** A subject usable for publishing: a valid literal, no wildcard tokens. */
export function isValidPublishSubject(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  let tokenStart = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : DOT;
    if (c === DOT) {
      const len = i - tokenStart;
      if (len === 0) return false;
      if (len === 1) {
        const t = s.charCodeAt(tokenStart);
        if (t === STAR || t === GT) return false;
      }
      tokenStart = i + 1;
    } else if (isSpace(c)) {
      return false;
    }
  }
  return true;
}

/** True when the subject has a `*` or `>` token. */
export function hasWildcard(s: string): boolean {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if ((c === STAR || c === GT) && (i === 0 || s.charCodeAt(i - 1) === DOT) && (i + 1 === n || s.charCodeAt(i + 1) === DOT)) {
      return true;
    }
  }
  return false;
}

/** Whether a literal subject matches a (possibly wildcard) filter. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    const t = f[i];
    if (t === ">") return s.length > i;
    if (i >= s.length) return false;
    if (t !== "*" && t !== s[i]) return false;
  }
  return f.length === s.length;
}

/** Whether some subject could match both patterns. */
export function subjectsIntersect(a: string, b: string): boolean {
  const ta = a.split(".");
  const tb = b.split(".");
  const n = Math.min(ta.length, tb.length);
  for (let i = 0; i < n; i++) {
    if (ta[i] === ">" || tb[i] === ">") return true;
    if (ta[i] === "*" || tb[i] === "*") continue;
    if (ta[i] !== tb[i]) return false;
  }
  return ta.length === tb.length;
}

/** A queue group name: non-empty, no whitespace. */
export function isValidQueueName(q: string): boolean {
  if (q.length === 0) return false;
  for (let i = 0; i < q.length; i++) if (isSpace(q.charCodeAt(i))) return false;
  return true;
}
