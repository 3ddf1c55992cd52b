import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfError, keyPosition, parseConf } from "../src/server/conf-parser.js";
import { optionsFromConf, parseDuration, pidFileFromConf } from "../src/server/conf-options.js";
import { mergeOptions, parseServerArgs } from "../src/cli/server-args.js";
import { checkOptions, resolveOptions, type ServerOptions } from "../src/core/options.js";
import { runNagare } from "./helpers/cli.js";

const NO_ENV = { env: {} };

function confError(fn: () => unknown, pattern: RegExp): ConfError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfError, `expected a ConfError, got ${String(caught)}`);
  assert.match(caught.message, pattern);
  return caught;
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "nagare-conf-"));
}

// ---- syntax ----------------------------------------------------------------

test("key/value separators: =, : and whitespace; quoted keys", () => {
  const t = parseConf(`a = 1\nb: 2\nc 3\nd=4\ne:5\n"quoted key" = 6\n'single key': 7\n"k.with.dots" x`, NO_ENV);
  assert.deepEqual(t, { a: 1, b: 2, c: 3, d: 4, e: 5, "quoted key": 6, "single key": 7, "k.with.dots": "x" });
});

test("blocks: name { }, name = { }, name: { }, nested, and entry separators", () => {
  const t = parseConf(
    `one { a: 1 }
two = { b: 2; c: 3 }
three: {
  d: 4, e: 5
  inner { f: "six" g: 7 }
}
empty {}
`,
    NO_ENV,
  );
  assert.deepEqual(t, {
    one: { a: 1 },
    two: { b: 2, c: 3 },
    three: { d: 4, e: 5, inner: { f: "six", g: 7 } },
    empty: {},
  });
});

test("top-level entries separated by commas and semicolons; later duplicates win", () => {
  const t = parseConf("a: 1, b: 2; c: 3\na: 9", NO_ENV);
  assert.deepEqual(t, { a: 9, b: 2, c: 3 });
});

test("arrays: commas, newlines, trailing comma, nesting, comments", () => {
  const t = parseConf(
    `a = [1, 2, 3]
b: [
  x   # first
  "y" // second
  'z',
]
c [ [1, 2], [], { k: v }, true ]
d = []
`,
    NO_ENV,
  );
  assert.deepEqual(t, { a: [1, 2, 3], b: ["x", "y", "z"], c: [[1, 2], [], { k: "v" }, true], d: [] });
});

test("comments: # and //, whole-line and trailing; not inside strings or URLs", () => {
  const t = parseConf(
    `# heading
// another
port: 4222 # trailing
name: "a # b" // trailing
url: nats://host:4222
path: '/x//y'
`,
    NO_ENV,
  );
  assert.deepEqual(t, { port: 4222, name: "a # b", url: "nats://host:4222", path: "/x//y" });
});

test("strings: double-quoted escapes, single-quoted raw, bare", () => {
  const t = parseConf(
    String.raw`dq: "tab\there\nnl \"q\" back\\slash \u00e9 \x41 \U0001F600"
sq: 'raw\n "kept"'
bare: hello
ip: 127.0.0.1
hp: 0.0.0.0:4222
path: /var/lib/nats
dur: 30s
`,
    NO_ENV,
  );
  assert.equal(t.dq, 'tab\there\nnl "q" back\\slash \u00e9 A \u{1F600}');
  assert.equal(t.sq, String.raw`raw\n "kept"`);
  assert.equal(t.bare, "hello");
  assert.equal(t.ip, "127.0.0.1");
  assert.equal(t.hp, "0.0.0.0:4222");
  assert.equal(t.path, "/var/lib/nats");
  assert.equal(t.dur, "30s");
});

test("numbers: integers, negatives, floats; quoted numbers stay strings", () => {
  const t = parseConf(`a: 42\nb: -1\nc: 1.5\nd: -0.25\ne: "42"\nf: 0`, NO_ENV);
  assert.deepEqual(t, { a: 42, b: -1, c: 1.5, d: -0.25, e: "42", f: 0 });
});

test("size suffixes: k/m/g/t are decimal, kb/mb/gb/ki/kib are binary, any case", () => {
  const t = parseConf(
    `k: 1k
K: 2K
kb: 1kb
KB: 1KB
ki: 1ki
kib: 1KiB
m: 1m
mb: 1mb
MB: 8MB
g: 1g
gb: 1gb
GB: 1GB
t: 1t
tb: 1tb
neg: -2k
`,
    NO_ENV,
  );
  assert.deepEqual(t, {
    k: 1000,
    K: 2000,
    kb: 1024,
    KB: 1024,
    ki: 1024,
    kib: 1024,
    m: 1_000_000,
    mb: 1024 * 1024,
    MB: 8 * 1024 * 1024,
    g: 1e9,
    gb: 1024 ** 3,
    GB: 1024 ** 3,
    t: 1e12,
    tb: 1024 ** 4,
    neg: -2000,
  });
});

test("durations stay strings in the tree; unquoted 2m is a size, as in nats-server", () => {
  const t = parseConf(`a: "2m"\nb: 30s\nc: 500ms\nd: 1h\ne: "1h2m3s"\nf: 2m`, NO_ENV);
  assert.deepEqual(t, { a: "2m", b: "30s", c: "500ms", d: "1h", e: "1h2m3s", f: 2_000_000 });
});

test("booleans: true/false/yes/no/on/off in any case; quoted stay strings", () => {
  const t = parseConf(`a: true\nb: FALSE\nc: yes\nd: No\ne: on\nf: OFF\ng: "true"\nh: truthy`, NO_ENV);
  assert.deepEqual(t, { a: true, b: false, c: true, d: false, e: true, f: false, g: "true", h: "truthy" });
});

test("CRLF line endings, tabs, a byte order mark and an empty file", () => {
  assert.deepEqual(parseConf("\uFEFFport:\t4222\r\nname \"n\"\r\nblk {\r\n  a: x\r\n}\r\n", NO_ENV), {
    port: 4222,
    name: "n",
    blk: { a: "x" },
  });
  assert.deepEqual(parseConf("", NO_ENV), {});
  assert.deepEqual(parseConf("# only a comment\n\n", NO_ENV), {});
});

test("whole file wrapped in braces is accepted", () => {
  assert.deepEqual(parseConf("{\n port: 1\n}\n", NO_ENV), { port: 1 });
});

// ---- variables ---------------------------------------------------------------

test("variables: earlier keys, outer scopes, shadowing, whole blocks", () => {
  const t = parseConf(
    `PORT = 4333
limits { max: 5 }
port: $PORT
copy: $limits
outer = 1
blk {
  outer = 2
  inner: $outer
  other: $PORT
}
list: [$PORT, $outer]
`,
    NO_ENV,
  );
  assert.equal(t.port, 4333);
  assert.deepEqual(t.copy, { max: 5 });
  assert.deepEqual(t.blk, { outer: 2, inner: 2, other: 4333 });
  assert.deepEqual(t.list, [4333, 1]);
});

test("variables: later keys are not visible; unknown variable errors with its line", () => {
  const e = confError(() => parseConf("port: 1\nx: $LATER\nLATER = 2", NO_ENV), /variable reference for 'LATER'/);
  assert.equal(e.line, 2);
  assert.equal(e.column, 4);
  assert.match(e.message, /line 2, column 4/);
  confError(() => parseConf("x: $", NO_ENV), /variable name/);
});

test("variables fall back to the environment; env values are read as conf values", () => {
  const env = { NAGARE_PORT: "4999", NAGARE_NAME: "hello world", NAGARE_BIG: "1MB", NAGARE_ON: "true", X: "env" };
  const t = parseConf("X = local\nport: $NAGARE_PORT\nname: $NAGARE_NAME\nbig: $NAGARE_BIG\non: $NAGARE_ON\nx: $X", {
    env,
  });
  assert.equal(t.port, 4999);
  assert.equal(t.name, "hello world");
  assert.equal(t.big, 1024 * 1024);
  assert.equal(t.on, true);
  assert.equal(t.x, "local", "a key in scope wins over the environment");
});

test("env defaults to process.env", () => {
  process.env.NAGARE_CONF_TEST_VAR = "77";
  try {
    assert.equal(parseConf("v: $NAGARE_CONF_TEST_VAR").v, 77);
  } finally {
    delete process.env.NAGARE_CONF_TEST_VAR;
  }
});

test("environment values naming the next several times are each read once, not exponentially often (a hang)", () => {
  // V0 names V1 ten times, V1 names V2 ten times, ...: read naively, V9 is parsed 10^8 times; once, it is looked up
  // at most once per reference to it (10).
  const values: Record<string, string> = { V9: "7" };
  for (let i = 0; i < 9; i++) values[`V${i}`] = `[${Array(10).fill(`$V${i + 1}`).join(", ")}]`;
  const reads = new Map<string, number>();
  const env = new Proxy(values, {
    get(target, key) {
      if (typeof key === "string") {
        reads.set(key, (reads.get(key) ?? 0) + 1);
        // Counted, and stopped long before the hang it would be.
        if (reads.get(key)! > 100) throw new Error(`environment variable ${key} read ${reads.get(key)} times`);
      }
      return target[key as string];
    },
  });
  const t = parseConf("v: $V0", { env });
  assert.ok(reads.get("V9")! <= 10, `V9 read ${reads.get("V9")} times`);
  let v: unknown = t.v;
  for (let i = 0; i < 9; i++) {
    assert.ok(Array.isArray(v) && v.length === 10);
    v = v[9];
  }
  assert.equal(v, 7);
});

test("an environment value cannot smuggle in an include", () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, "secret.conf"), "secret: 1");
    const raw = `{ include ${JSON.stringify(join(dir, "secret.conf"))} }`;
    const t = parseConf("v: $E", { env: { E: raw }, baseDir: dir });
    assert.equal(t.v, raw);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- include -------------------------------------------------------------------

test("include: relative to baseDir, nested relative to the included file, inside blocks, quoted", () => {
  const dir = tempDir();
  try {
    mkdirSync(join(dir, "sub"));
    writeFileSync(join(dir, "main.conf"), "");
    writeFileSync(join(dir, "base.conf"), "port: 4333\ninclude sub/more.conf\n");
    writeFileSync(join(dir, "sub", "more.conf"), "debug: true\ninclude 'leaf.conf'\n");
    writeFileSync(join(dir, "sub", "leaf.conf"), "leaf: $NAME\n");
    writeFileSync(join(dir, "auth.conf"), "user: a\npassword: b\n");
    const t = parseConf(
      `NAME = fromMain
include ./base.conf
authorization {
  include "auth.conf"
  timeout: 2
}
after: 1
`,
      { baseDir: dir, env: {} },
    );
    assert.deepEqual(t, {
      NAME: "fromMain",
      port: 4333,
      debug: true,
      leaf: "fromMain",
      authorization: { user: "a", password: "b", timeout: 2 },
      after: 1,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("include: errors inside an included file name that file and its line", () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, "bad.conf"), "ok: 1\n\nbroken = [1, 2\n");
    const e = confError(() => parseConf("a: 1\ninclude bad.conf", { baseDir: dir, env: {} }), /bad\.conf:3:\d+: unterminated array/);
    assert.equal(e.line, 3);
    assert.ok(e.file?.endsWith("bad.conf"));
    confError(() => parseConf("include missing.conf", { baseDir: dir, env: {} }), /line 1, column 1: cannot read include file 'missing\.conf' \(ENOENT\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("blocks and arrays nested past 128 deep are refused with their place, not a stack overflow; 128 are read", () => {
  // An outside test nested 5,000 blocks: "Maximum call stack size exceeded", with no file, line or column.
  confError(() => parseConf(`a ${"{ b ".repeat(5000)}${"} ".repeat(5000)}`, { env: {}, file: "deep.conf" }), /deep\.conf:1:\d+: blocks and arrays nested more than 128 deep/);
  confError(() => parseConf(`a: ${"[".repeat(129)}${"]".repeat(129)}`, { env: {} }), /nested more than 128 deep/);
  const deep = parseConf(`a: ${"[".repeat(128)}1${"]".repeat(128)}`, { env: {} });
  let v: unknown = deep.a;
  for (let i = 1; i < 128; i++) v = (v as unknown[])[0];
  assert.deepEqual(v, [1]);
  // Deep in every file of a chain of includes, the stack still holds.
  const dir = tempDir();
  try {
    for (let i = 1; i <= 10; i++) writeFileSync(join(dir, `n${i}.conf`), `k${i} ${"{ x ".repeat(127)}${i < 10 ? `{ include n${i + 1}.conf }` : "1"}${" }".repeat(127)}\n`);
    assert.ok(parseConf("include n1.conf", { baseDir: dir, env: {} }).k1 !== undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("include: depth is bounded (self-include, and a chain of 11)", () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, "self.conf"), "x: 1\ninclude self.conf\n");
    confError(() => parseConf("include self.conf", { baseDir: dir, env: {} }), /nested deeper than 10/);
    // f1 includes f2 ... f10 includes f11: 11 levels deep from the top text.
    for (let i = 1; i <= 11; i++) {
      writeFileSync(join(dir, `f${i}.conf`), i < 11 ? `include f${i + 1}.conf\nk${i}: ${i}\n` : "last: true\n");
    }
    confError(() => parseConf("include f1.conf", { baseDir: dir, env: {} }), /nested deeper than 10/);
    // Ten levels are fine.
    const t = parseConf("include f2.conf", { baseDir: dir, env: {} });
    assert.equal(t.last, true);
    assert.equal(t.k2, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- errors --------------------------------------------------------------------

test("syntax errors carry line and column", () => {
  const cases: Array<[string, RegExp, number, number]> = [
    ['a: 1\nb: "open', /unterminated string/, 2, 4],
    ["a: 1\n\nb: [1, 2", /unterminated array/, 3, 4],
    ["blk {\n a: 1\n", /unterminated block/, 1, 5],
    ["a: 1\nlonely\n", /key 'lonely' has no value/, 2, 1],
    ["a: [1 2]", /after an array element/, 1, 7],
    ["a: [1,,2]", /expected an array element/, 1, 7],
    ['x: "bad \\q escape"', /invalid escape '\\q'/, 1, 9],
    ['x: "\\u12"', /4 hex digits/, 1, 5],
    ["a: 1\n}", /unexpected '}'/, 2, 1],
    ["a =\nb = 2", /key 'a' has no value/, 1, 1],
    ['a"b": 1', /expected '=', ':' or a space after key 'a'/, 1, 2],
  ];
  for (const [text, re, line, column] of cases) {
    const e = confError(() => parseConf(text, NO_ENV), re);
    assert.equal(e.line, line, `line for ${JSON.stringify(text)}: ${e.message}`);
    assert.equal(e.column, column, `column for ${JSON.stringify(text)}: ${e.message}`);
    assert.ok(e.message.includes(`line ${line}, column ${column}`), e.message);
  }
});

test("keyPosition reports where a key was set", () => {
  const t = parseConf("a: 1\n  blk {\n    inner: 2\n  }", NO_ENV);
  assert.deepEqual(keyPosition(t, "blk"), { line: 2, column: 3, file: undefined });
  assert.deepEqual(keyPosition(t.blk as Record<string, unknown>, "inner"), { line: 3, column: 5, file: undefined });
});

// ---- mapping onto ServerOptions ----------------------------------------------------

test("realistic nats-server test-harness config", () => {
  const tree = parseConf(
    `host: 127.0.0.1
port: -1
http: "127.0.0.1:-1"
ports_file_dir: "/tmp/x"
jetstream { store_dir: "/tmp/js" sync_interval: always }
`,
    NO_ENV,
  );
  assert.deepEqual(optionsFromConf(tree), {
    host: "127.0.0.1",
    port: -1,
    httpHost: "127.0.0.1",
    httpPort: -1,
    portsFileDir: "/tmp/x",
    jetstream: true,
    storeDir: "/tmp/js",
    syncInterval: "always",
  });
});

test("every mapped key", () => {
  const tree = parseConf(
    `net: 10.0.0.1
port: 4333
http_port: 8333
server_name: "srv-1"
max_payload: 2MB
max_pending: 128MB
max_control_line: 8kb
max_connections: 100
max_subscriptions: 50
ping_interval: "2m"
ping_max: 3
auth_timeout: 1.5
write_deadline: "2s"
lame_duck_duration: "30s"
lame_duck_grace_period: "5s"
ports_file_dir: /tmp/ports
debug: true
trace: false
logtime: false
logtime_utc: true
max_traced_msg_len: 64
log_file: "/tmp/nagare.log"
pid_file: "/tmp/nagare.pid"
`,
    NO_ENV,
  );
  assert.deepEqual(optionsFromConf(tree), {
    host: "10.0.0.1",
    port: 4333,
    httpPort: 8333,
    serverName: "srv-1",
    maxPayload: 2 * 1024 * 1024,
    maxPending: 128 * 1024 * 1024,
    maxControlLine: 8192,
    maxConnections: 100,
    maxSubscriptions: 50,
    pingInterval: 120_000,
    maxPingsOut: 3,
    authTimeout: 1500,
    writeDeadline: 2000,
    lameDuckDuration: 30_000,
    lameDuckGracePeriod: 5000,
    portsFileDir: "/tmp/ports",
    debug: true,
    trace: false,
    logtime: false,
    logtimeUtc: true,
    maxTracedMsgLen: 64,
    logFile: "/tmp/nagare.log",
  });
  assert.equal(pidFileFromConf(tree), "/tmp/nagare.pid");
});

test("aliases, listen forms, integer seconds, case-insensitive keys", () => {
  const o = optionsFromConf(
    parseConf(
      `listen: "0.0.0.0:4444"
max_conn: 7
max_subs: 8
monitor_port: 8222
Ping_Interval: 30
write_deadline: 3
logfile: /tmp/l
trace_verbose: true
`,
      NO_ENV,
    ),
  );
  assert.deepEqual(o, {
    host: "0.0.0.0",
    port: 4444,
    maxConnections: 7,
    maxSubscriptions: 8,
    httpPort: 8222,
    pingInterval: 30_000,
    writeDeadline: 3000,
    logFile: "/tmp/l",
    trace: true,
  });
  assert.deepEqual(optionsFromConf(parseConf("listen: 4555", NO_ENV)), { port: 4555 });
  assert.deepEqual(optionsFromConf(parseConf('listen: ":4556"', NO_ENV)), { port: 4556 });
  assert.deepEqual(optionsFromConf(parseConf('listen: "[::1]:4557"', NO_ENV)), { host: "::1", port: 4557 });
  assert.deepEqual(optionsFromConf(parseConf('listen: "1.2.3.4:5"\nport: 6\nhost: h', NO_ENV)), { host: "h", port: 6 });
  assert.deepEqual(optionsFromConf(parseConf("http: 8225", NO_ENV)), { httpPort: 8225 });
  assert.deepEqual(optionsFromConf(parseConf('http_host: "::"\nhttp_port: -1', NO_ENV)), { httpHost: "::", httpPort: -1 });
});

test("zero limits and times mean the default, as in nats-server", () => {
  const o = optionsFromConf(
    parseConf("max_payload: 0\nmax_pending: 0\nmax_connections: 0\nping_interval: 0\nping_max: 0\nmax_subs: 0", NO_ENV),
  );
  assert.deepEqual(o, { maxSubscriptions: 0 });
});

test("jetstream forms", () => {
  const js = (text: string) => optionsFromConf(parseConf(text, NO_ENV));
  assert.deepEqual(js("jetstream: true"), { jetstream: true });
  assert.deepEqual(js("jetstream: false"), { jetstream: false });
  assert.deepEqual(js("jetstream: enabled"), { jetstream: true });
  assert.deepEqual(js('jetstream: "Disabled"'), { jetstream: false });
  assert.deepEqual(js("jetstream {}"), { jetstream: true });
  assert.deepEqual(js("jetstream { enabled: false, store_dir: /d }"), { jetstream: false, storeDir: "/d" });
  assert.deepEqual(js("store_dir: /top"), { storeDir: "/top" });
  // nats-server 2.9 takes `store` too (jetstream { store: /d }).
  assert.deepEqual(js("jetstream { store: /d }"), { jetstream: true, storeDir: "/d" });
  confError(() => js("jetstream: maybe"), /jetstream: expected enabled, disabled or a block/);
  confError(() => js("jetstream: [1]"), /jetstream: expected/);
});

test("features nagare lacks stop startup, each with its line; variables are not reported", () => {
  const e = confError(
    () =>
      optionsFromConf(
        parseConf(
          `CLIENT_PORT = 4333
UNUSED = 1
port: $CLIENT_PORT
mqtt { port: -1 }
cluster { port: -1, tls {} }
websocket { port: -1 }
leafnodes {}
resolver_tls {}
  authorization { token: t, auth_callout: {} }
`,
          { env: {}, file: "n.conf" },
        ),
      ),
    /^n\.conf:2:1: unknown field "UNUSED"\n/,
  );
  assert.deepEqual(
    e.problems.map((p) => p.message),
    [
      'n.conf:2:1: unknown field "UNUSED"',
      "n.conf:4:1: mqtt: the MQTT door is not supported yet (nagare will not start without it)",
      "n.conf:5:21: cluster.tls: not supported on routes yet: routes are plaintext, unauthenticated and dialled as configured (nagare will not start without it)",
      "n.conf:6:1: websocket: the WebSocket door is not supported yet (nagare will not start without it)",
      "n.conf:7:1: leafnodes: leaf nodes are not supported yet (nagare will not start without it)",
      "n.conf:8:1: resolver_tls: the URL resolver is not supported yet (nagare will not start without it)",
      "n.conf:9:29: authorization.auth_callout: auth callout is not supported yet (nagare will not start without it)",
    ],
  );
  assert.equal(e.line, 2, "the error's own position is the first problem's");
  assert.equal(e.file, "n.conf");
});

test("a key used as a variable yields to another spelling of the same option", () => {
  const o = optionsFromConf(parseConf("port: 2\nPORT = 1\nhttp_port: $PORT", NO_ENV));
  assert.deepEqual(o, { port: 2, httpPort: 1 });
  // With no other spelling it still counts, as keys are case-insensitive.
  assert.deepEqual(optionsFromConf(parseConf("PORT = 3\nhttp_port: $PORT", NO_ENV)), { port: 3, httpPort: 3 });
});

test("invalid values throw ConfError naming the key and its line", () => {
  const bad = (text: string, re: RegExp) => confError(() => optionsFromConf(parseConf(text, NO_ENV)), re);
  let e = bad("debug: true\nmax_payload: -1", /max_payload: must not be negative/);
  assert.equal(e.line, 2);
  e = bad('\n\n  port: "4222"', /line 3, column 3: port: expected a port number, got the string "4222"/);
  bad("port: 70000", /port 70000 is out of range/);
  bad("port: 1.5", /port: expected a port number/);
  bad("http: \"nohost\"", /http: expected "host:port"/);
  bad("max_connections: 1.5", /max_connections: expected an integer/);
  bad("max_control_line: 4GB", /max_control_line: must not exceed 2147483647/);
  bad('debug: "yes"', /debug: expected true or false/);
  bad('server_name: 5', /server_name: expected a string/);
  bad('ping_interval: "5"', /ping_interval: invalid duration "5": missing unit/);
  bad('write_deadline: "2 days"', /write_deadline: invalid duration/);
  bad('lame_duck_duration: "-5s"', /lame_duck_duration: must not be negative/);
  bad("auth_timeout: [1]", /auth_timeout: expected a duration/);
  bad('host: ""', /host: must not be empty/);
});

test("kafka's automatic leader rebalance: its three keys, and values it cannot honour with their place", () => {
  const o = optionsFromConf(parseConf('kafka {\n  auto_leader_rebalance: false\n  leader_imbalance_check_interval: "30s"\n  leader_imbalance_per_broker_percentage: 25\n}', NO_ENV));
  assert.deepEqual(o.kafka, { autoLeaderRebalance: false, leaderImbalanceCheckIntervalMs: 30_000, leaderImbalancePerBrokerPercentage: 25 });
  // Bare seconds, as Kafka's leader.imbalance.check.interval.seconds.
  assert.equal(optionsFromConf(parseConf("kafka { leader_imbalance_check_interval: 300 }", NO_ENV)).kafka?.leaderImbalanceCheckIntervalMs, 300_000);
  const bad = (text: string, re: RegExp) => confError(() => optionsFromConf(parseConf(text, NO_ENV)), re);
  bad('kafka {\n  auto_leader_rebalance: "sometimes"\n}', /line 2, column 3: kafka.auto_leader_rebalance: expected true or false/);
  bad("kafka { leader_imbalance_check_interval: 0 }", /line 1, column 9: kafka.leader_imbalance_check_interval: must be at least 100ms/);
  bad('kafka { leader_imbalance_check_interval: "500us" }', /kafka.leader_imbalance_check_interval: must be at least 100ms \(got "500us"\)/);
  bad('kafka { leader_imbalance_check_interval: "-1s" }', /kafka.leader_imbalance_check_interval: must not be negative/);
  bad("kafka { leader_imbalance_per_broker_percentage: 101 }", /kafka.leader_imbalance_per_broker_percentage: must not exceed 100/);
  bad("kafka { leader_imbalance_per_broker_percentage: 2.5 }", /kafka.leader_imbalance_per_broker_percentage: expected an integer/);
});

test("kafka's default replication factor and min.insync.replicas: read, and values it cannot honour refused with their place", () => {
  const o = optionsFromConf(parseConf("kafka {\n  default_replication_factor: 3\n  min_insync_replicas: 2\n}", NO_ENV));
  assert.deepEqual(o.kafka, { defaultReplicationFactor: 3, minInsyncReplicas: 2 });
  const bad = (text: string, re: RegExp) => confError(() => optionsFromConf(parseConf(text, NO_ENV)), re);
  bad("kafka {\n  default_replication_factor: 0\n}", /line 2, column 3: kafka.default_replication_factor: must be at least 1/);
  bad("kafka { default_replication_factor: 6 }", /line 1, column 9: kafka.default_replication_factor: must not exceed 5/);
  bad('kafka { min_insync_replicas: "two" }', /kafka.min_insync_replicas: expected an integer/);
  bad("kafka { min_insync_replicas: 0 }", /kafka.min_insync_replicas: must be at least 1/);
});

test("kafka's group session bounds: set as durations, and a minimum above the maximum stops startup with its place", () => {
  const o = optionsFromConf(parseConf('kafka {\n  group_min_session_timeout: "1s"\n  group_max_session_timeout: "5m"\n}', NO_ENV));
  assert.deepEqual(o.kafka, { minSessionTimeoutMs: 1000, maxSessionTimeoutMs: 300_000 });
  const bad = (text: string, re: RegExp) => confError(() => optionsFromConf(parseConf(text, NO_ENV)), re);
  // Kafka's default maximum is 30 minutes: a minimum past it alone cannot be honoured.
  bad('kafka {\n  group_min_session_timeout: "31m"\n}', /line 2, column 3: kafka.group_min_session_timeout: group_min_session_timeout \(1860000ms\) is longer than group_max_session_timeout \(1800000ms\)/);
  bad('kafka { group_min_session_timeout: "10s", group_max_session_timeout: "5s" }', /kafka.group_min_session_timeout: group_min_session_timeout \(10000ms\) is longer/);
  bad("kafka { group_max_session_timeout: 0 }", /kafka.group_max_session_timeout: must be more than zero/);
  // Embedded options are checked the same way.
  assert.throws(() => checkOptions({ kafka: { minSessionTimeoutMs: 10_000, maxSessionTimeoutMs: 5000 } }), /kafka.minSessionTimeoutMs \(10000\) is longer than kafka.maxSessionTimeoutMs \(5000\)/);
});

test("unknown keys at the top and inside blocks stop startup with file, line and column", () => {
  const text = `port: 4333
  htp_port: 8222
kafka {
  port: 9092
  prot: 1
}
jetstream {
  store_dir: /tmp/js
  max_mem: -5
  bogus_key: 1
}
`;
  const e = confError(() => optionsFromConf(parseConf(text, { env: {}, file: "x.conf" })), /x\.conf:2:3: unknown field "htp_port" \(did you mean "http_port"\?\)/);
  assert.deepEqual(
    e.problems.map((p) => p.message),
    [
      'x.conf:2:3: unknown field "htp_port" (did you mean "http_port"?)',
      'x.conf:5:3: unknown field "kafka.prot" (did you mean "port"?)',
      "x.conf:9:3: jetstream.max_mem: must be -1 (no limit) or more, got -5",
      'x.conf:10:3: unknown field "jetstream.bogus_key"',
    ],
  );
  // Without a file name the position reads "line L, column C".
  confError(() => optionsFromConf(parseConf("kafka { prot: 1 }", NO_ENV)), /^line 1, column 9: unknown field "kafka.prot"/);
});

test("nested keys match case-insensitively too; a variable inside a block is not a key", () => {
  const o = optionsFromConf(parseConf("Kafka { Port: 9093, NUM_PARTITIONS: 3 }\nJetStream { D = /js\n Store_Dir: $D }", NO_ENV));
  assert.deepEqual(o, { kafka: { port: 9093, numPartitions: 3 }, jetstream: true, storeDir: "/js" });
});

test("a bad value in one key does not hide problems in others, in or out of blocks", () => {
  const e = confError(
    () => optionsFromConf(parseConf('port: "x"\nkafka { port: 70000, host: "" , nope: 1 }\nping_interval: "1 day"', NO_ENV)),
    /port: expected a port number/,
  );
  assert.deepEqual(
    e.problems.map((p) => p.message),
    [
      'line 1, column 1: port: expected a port number, got the string "x"',
      "line 2, column 9: kafka.port: port 70000 is out of range (0-65535, or -1 for a random port)",
      "line 2, column 22: kafka.host: must not be empty",
      'line 2, column 33: unknown field "kafka.nope"',
      'line 3, column 1: ping_interval: invalid duration "1 day": unknown unit or malformed number (use ns, us, ms, s, m or h)',
    ],
  );
});

test("keys accepted and ignored are few, and still type-checked", () => {
  assert.deepEqual(optionsFromConf(parseConf("connect_error_reports: 10\nreconnect_error_reports: 1", NO_ENV)), {});
  confError(() => optionsFromConf(parseConf("connect_error_reports: -1", NO_ENV)), /connect_error_reports: must not be negative/);
});

test("values nagare cannot honour: timers beyond Node's limit, a payload larger than pending", () => {
  confError(() => optionsFromConf(parseConf('ping_interval: "1000h"', NO_ENV)), /ping_interval: must not exceed 2147483647 ms/);
  confError(() => optionsFromConf(parseConf('jetstream { sync_interval: "30d" }', NO_ENV)), /unknown unit/);
  confError(() => optionsFromConf(parseConf('jetstream { sync_interval: "700h" }', NO_ENV)), /jetstream\.sync_interval: must not exceed/);
  confError(() => optionsFromConf(parseConf("max_payload: 10MB\nmax_pending: 5MB", NO_ENV)), /line 1, column 1: max_payload: max_payload \(10485760\) must not exceed max_pending \(5242880\)/);
  // Lowering max_pending below the default payload is the pending key's fault.
  confError(() => optionsFromConf(parseConf("max_pending: 1000", NO_ENV)), /line 1, column 1: max_pending: max_payload \(1048576\) must not exceed/);
  confError(() => optionsFromConf(parseConf("pid_file: 5", NO_ENV)), /pid_file: expected a string/);
});

test("parseDuration: Go duration strings and bare seconds", () => {
  const cases: Array<[unknown, number]> = [
    ["1h2m3s", 3_723_000],
    ["500ms", 500],
    ["1.5s", 1500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["0", 0],
    ["-1.5m", -90_000],
    ["+3s", 3000],
    [".5s", 500],
    ["1500us", 1.5],
    ["1500\u00b5s", 1.5],
    ["2000000ns", 2],
    ["1m30s", 90_000],
    [30, 30_000],
    [0.25, 250],
  ];
  for (const [input, ms] of cases) assert.equal(parseDuration(input), ms, `parseDuration(${JSON.stringify(input)})`);
  for (const bad of ["", "5", "s", ".s", "1d", "1 s", "abc", "1s2", "--1s"]) {
    assert.throws(() => parseDuration(bad), ConfError, `parseDuration(${JSON.stringify(bad)}) should throw`);
  }
  assert.throws(() => parseDuration(true), /expected a duration/);
  assert.throws(() => parseDuration(Infinity), /invalid duration/);
});

// ---- command-line flags ------------------------------------------------------------

test("flags: short, long, single-dash long, = and separate values", () => {
  assert.deepEqual(parseServerArgs(["-p", "5"]).options, { port: 5 });
  assert.deepEqual(parseServerArgs(["--port=5"]).options, { port: 5 });
  assert.deepEqual(parseServerArgs(["-port", "6"]).options, { port: 6 });
  assert.deepEqual(parseServerArgs(["-p=7"]).options, { port: 7 });
  assert.deepEqual(parseServerArgs(["-p", "-1"]).options, { port: -1 });
  const r = parseServerArgs([
    "-a",
    "127.0.0.1",
    "--name",
    "srv",
    "-m",
    "8222",
    "-c",
    "x.conf",
    "-js",
    "-sd",
    "/js",
    "-l",
    "/tmp/log",
    "--ports_file_dir",
    "/tmp/p",
    "-P",
    "/tmp/pid",
  ]);
  assert.deepEqual(r, {
    options: {
      host: "127.0.0.1",
      serverName: "srv",
      httpPort: 8222,
      jetstream: true,
      storeDir: "/js",
      logFile: "/tmp/log",
      portsFileDir: "/tmp/p",
    },
    configFile: "x.conf",
    pidFile: "/tmp/pid",
  });
  assert.deepEqual(parseServerArgs(["--addr=::", "--net", "h2"]).options, { host: "h2" });
  assert.deepEqual(parseServerArgs(["--server_name", "s", "--http_port=1", "--config=c", "--pid", "f"]), {
    options: { serverName: "s", httpPort: 1 },
    configFile: "c",
    pidFile: "f",
  });
});

test("flags: debug and trace combinations, explicit booleans", () => {
  assert.deepEqual(parseServerArgs(["-DV"]).options, { debug: true, trace: true });
  assert.deepEqual(parseServerArgs(["-DVV"]).options, { debug: true, trace: true });
  assert.deepEqual(parseServerArgs(["-D"]).options, { debug: true });
  assert.deepEqual(parseServerArgs(["-V"]).options, { trace: true });
  assert.deepEqual(parseServerArgs(["--debug", "--trace"]).options, { debug: true, trace: true });
  assert.deepEqual(parseServerArgs(["-D=false", "--jetstream=0"]).options, { debug: false, jetstream: false });
  assert.deepEqual(parseServerArgs(["-T"]).options, { logtime: true });
  assert.deepEqual(parseServerArgs(["--logtime=false"]).options, { logtime: false });
  assert.deepEqual(parseServerArgs(["--max_traced_msg_len", "32"]).options, { maxTracedMsgLen: 32 });
  assert.throws(() => parseServerArgs(["--max_traced_msg_len=-1"]), /--max_traced_msg_len: expected a length/);
  assert.equal(parseServerArgs(["-t"]).testConfig, true);
  assert.throws(() => parseServerArgs(["-D=maybe"]), /-D: invalid boolean "maybe"/);
});

test("flags: help, version, signal", () => {
  assert.equal(parseServerArgs(["-h"]).help, true);
  assert.equal(parseServerArgs(["--help"]).help, true);
  assert.equal(parseServerArgs(["-v"]).version, true);
  assert.equal(parseServerArgs(["--version"]).version, true);
  assert.equal(parseServerArgs(["-V"]).version, undefined, "-V is trace, not version");
  assert.equal(parseServerArgs(["--signal", "ldm=123"]).signal, "ldm=123");
  assert.equal(parseServerArgs([]).help, undefined);
});

test("flags: errors name the flag", () => {
  assert.throws(() => parseServerArgs(["--bogus"]), /unknown flag: --bogus/);
  assert.throws(() => parseServerArgs(["-x", "1"]), /unknown flag: -x/);
  assert.throws(() => parseServerArgs(["--max_payload=5"]), /unknown flag: --max_payload/);
  assert.equal(parseServerArgs(["-ms", "8443"]).options.httpsPort, 8443);
  assert.equal(parseServerArgs(["--https_port=-1"]).options.httpsPort, -1);
  assert.throws(() => parseServerArgs(["-ms", "x"]), /flag -ms: invalid port "x"/);
  assert.throws(() => parseServerArgs(["--ocsp"]), /unknown flag: --ocsp/);
  assert.throws(() => parseServerArgs(["-p"]), /flag -p needs a value/);
  assert.throws(() => parseServerArgs(["-p", "abc"]), /flag -p: invalid port "abc"/);
  assert.throws(() => parseServerArgs(["--port=99999"]), /out of range/);
  assert.throws(() => parseServerArgs(["stray"]), /unexpected argument: stray/);
  assert.throws(() => parseServerArgs(["--log_size_limit", "1GB"]), /--log_size_limit: log file rotation is not supported yet/);
  assert.throws(() => parseServerArgs(["-sd", ""]), /flag -sd needs a directory/);
  assert.throws(() => parseServerArgs(["-c="]), /flag -c needs a file name/);
  assert.throws(() => parseServerArgs(["-l", ""]), /flag -l needs a file name/);
});

test("mergeOptions: flags override the config file, config fills the rest", () => {
  const fromConf = optionsFromConf(parseConf("host: 10.0.0.1\nport: 4333\ndebug: true\nmax_payload: 1kb", NO_ENV));
  const flags = parseServerArgs(["--port=5", "-D=false"]).options;
  assert.deepEqual(mergeOptions(fromConf, flags), { host: "10.0.0.1", port: 5, debug: false, maxPayload: 1024 });
  assert.deepEqual(mergeOptions({ port: 1 }, { port: undefined }), { port: 1 });
  assert.deepEqual(fromConf.port, 4333, "inputs are not modified");
});

// ---- the nagare command ----------------------------------------------------------

/** `nagare <args>` as a child process; `until` signals it once stderr matches. */
const run = (args: string[], opts: { until?: RegExp; signal?: NodeJS.Signals } = {}) => runNagare(args, opts);

test("nagare: version, help, bad usage", async () => {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  let r = await run(["-v"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `nagare ${pkg.version}\n`);
  r = await run(["server", "--help"]);
  assert.equal(r.code, 0);
  for (const word of ["server", "pub", "sub", "request", "reply", "--port", "--config", "-DV", "--ports_file_dir"]) {
    assert.ok(r.stdout.includes(word), `usage mentions ${word}`);
  }
  r = await run(["bogus"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command "bogus"[\s\S]*Usage: nagare/);
  r = await run([]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Usage: nagare/);
  r = await run(["server", "--bogus"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown flag: --bogus/);
});

test("nagare: config errors exit 1 with the line", async () => {
  const dir = tempDir();
  try {
    const file = join(dir, "bad.conf");
    writeFileSync(file, "port: 4222\nmax_payload: -5\n");
    let r = await run(["-c", file]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `nagare server: ${file}:2:1: max_payload: must not be negative (got -5)\n`);
    r = await run(["-c", join(dir, "missing.conf")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nagare: runs a server from a config file plus flags, stops on SIGTERM", async () => {
  const dir = tempDir();
  try {
    const file = join(dir, "s.conf");
    writeFileSync(
      file,
      `host: 127.0.0.1\nport: 4222\nports_file_dir: "${dir}"\n`,
    );
    const pid = join(dir, "n.pid");
    let portsSeen: string[] = [];
    const r = await run(["-c", file, "-p", "-1", "--pid", pid], { until: /Server is ready/ }).then((res) => {
      portsSeen = readdirSync(dir).filter((f) => f.endsWith(".ports"));
      return res;
    });
    assert.equal(r.code, 0, r.stderr);
    // -p -1 from the flags won over the file's 4222: a random port was used.
    const listening = /Listening for client connections on 127\.0\.0\.1:(\d+)/.exec(r.stderr);
    assert.ok(listening, r.stderr);
    assert.notEqual(listening[1], "4222");
    assert.match(readFileSync(pid, "utf8"), /^\d+$/);
    assert.deepEqual(portsSeen, [], "ports file removed on shutdown");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nagare: a configuration asking for what nagare lacks does not start, whatever else it says", async () => {
  const dir = tempDir();
  try {
    const file = join(dir, "auth.conf");
    writeFileSync(file, `port: -1\nauthorization {\n  user: a\n  password: b\n  auth_callout: {}\n}\ntls { cert_file: c }\n`);
    const r = await run(["-c", file], { until: /Server is ready/ });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `nagare server: ${file}:5:3: authorization.auth_callout: auth callout is not supported yet (nagare will not start without it)\n` +
        `nagare server: ${file}:7:1: tls: needs key_file: the private key of cert_file\n` +
        `nagare server: ${file}:7:7: tls.cert_file: cannot read "c": ENOENT\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nagare -t: tests the configuration and flags, then exits as nats-server -t does", async () => {
  const dir = tempDir();
  try {
    const good = join(dir, "good.conf");
    writeFileSync(good, "port: 4333\njetstream { store_dir: /tmp/x }\n");
    let r = await run(["-c", good, "-t"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, `nagare server: configuration file ${good} is valid\n`);
    assert.equal(r.stdout, "");

    const bad = join(dir, "bad.conf");
    writeFileSync(bad, "port: 4333\n  htp_port: 8222\nkafka { prot: 1 }\n");
    r = await run(["server", "-t", "--config", bad]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `nagare server: ${bad}:2:3: unknown field "htp_port" (did you mean "http_port"?)\n` +
        `nagare server: ${bad}:3:9: unknown field "kafka.prot" (did you mean "port"?)\n`,
    );

    // Flags are part of what is tested: their combination with the file too.
    writeFileSync(good, "max_pending: 2MB\n");
    r = await run(["-c", good, "-t", "-p", "99999"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /flag -p: port 99999 is out of range/);

    r = await run(["-t"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /-t tests a configuration file: give it with -c <file>/);

    r = await run(["-t", "-c", join(dir, "missing.conf")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /configuration file .*missing\.conf not found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("startServer refuses an option it does not know or cannot honour, before listening", async () => {
  const { startServer } = await import("../src/server/server.js");
  const refused = async (options: unknown, pattern: RegExp): Promise<void> => {
    await assert.rejects(startServer(options as ServerOptions), (err: Error) => {
      assert.equal(err.name, "OptionsError");
      assert.match(err.message, pattern);
      return true;
    });
  };
  await refused({ port: 0, prot: 4333 }, /^unknown option "prot" \(did you mean "port"\?\)$/);
  await refused({ port: 0, kafka: { prot: 1 } }, /^unknown option "kafka\.prot" \(did you mean "port"\?\)$/);
  await refused({ port: "4222" }, /^option port must be a port number .*, got "4222"$/);
  await refused({ port: 0, maxPayload: 0 }, /option maxPayload must be an integer from 1/);
  await refused({ port: 0, pingInterval: -5 }, /option pingInterval must be a time in milliseconds/);
  await refused({ port: 0, jetstream: "yes" }, /option jetstream must be true or false/);
  await refused({ port: 0, syncInterval: "sometimes" }, /option syncInterval must be a time/);
  await refused({ port: 0, maxPayload: 2_000_000, maxPending: 1_000_000 }, /maxPayload \(2000000\) must not exceed maxPending \(1000000\)/);
  await refused([1], /the options must be an object/);
  // `undefined` is "the default", as spreading partial options produces.
  const srv = await startServer({ port: 0, host: undefined, kafka: undefined });
  await srv.close();
});

test("the system account: system_account names one of the accounts or $SYS, no_system_account turns it off, $SYS may have users", () => {
  const conf = (text: string) => optionsFromConf(parseConf(text, { env: {}, file: "s.conf" }));
  assert.deepEqual(conf('accounts { $SYS { users: [ { user: s, password: s } ] } }\nsystem_account: "$SYS"'), {
    accounts: { $SYS: { users: [{ user: "s", password: "s" }] } },
    systemAccount: "$SYS",
  });
  assert.deepEqual(conf("accounts { OPS: {} }\nsystem: OPS"), { accounts: { OPS: {} }, systemAccount: "OPS" });
  assert.deepEqual(conf("no_system_account: true"), { noSystemAccount: true });
  assert.deepEqual(conf("no_sys_acc: false"), {});
  const e = confError(() => conf("accounts { A: {} }\nsystem_account: B\nno_system: 1"), /s\.conf/);
  assert.deepEqual(
    e.problems.map((p) => p.message),
    ["s.conf:3:1: no_system: expected true or false, got number 1"],
  );
  confError(() => conf("system_account: B"), /^s\.conf:1:1: system_account: B is not one of the accounts$/);
  confError(() => conf("accounts { A: {} }\nsystem_account: A\nno_system_account: true"), /^s\.conf:3:1: no_system_account: cannot be used with system_account$/);
});

test("operator mode's resolvers: MEMORY or a directory, checked key by key; the URL resolver is refused with its place", () => {
  const op = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.x";
  const conf = (text: string) => optionsFromConf(parseConf(`operator: "${op}"\n${text}`, { env: {}, file: "r.conf" }));
  const key = `A${"B".repeat(55)}`;
  assert.deepEqual(conf(`resolver: { type: full, dir: "./jwt", allow_delete: true, limit: 10, interval: "2m", timeout: "1s" }\nresolver_preload: { ${key}: "eyJ.x.y" }\nsystem_account: ${key}`), {
    operator: { operators: [op], accounts: { [key]: "eyJ.x.y" }, resolver: { type: "full", dir: "./jwt", allowDelete: true, limit: 10 } },
    systemAccount: key,
  });
  assert.deepEqual(conf("resolver: { type: CACHE, dir: /j, limit: 0 }").operator?.resolver, { type: "cache", dir: "/j" });
  assert.deepEqual(conf(`resolver: MEM\nresolver_preload: { ${key}: "eyJ.x.y" }`).operator?.resolver, undefined);
  confError(() => conf('resolver: URL("http://localhost:9090/jwt/v1/accounts/")'), /^r\.conf:2:1: resolver: the URL resolver is not supported yet \(nagare will not start without it\)/);
  confError(() => conf("resolver: MEMORY"), /^r\.conf:2:1: resolver: the MEMORY resolver needs resolver_preload$/);
  const e = confError(() => conf("resolver: { type: cache, dir: /j, allow_delete: true, ttl: \"1h\", interval: \"1m\", sync: 1 }"), /r\.conf/);
  assert.deepEqual(
    e.problems.map((p) => p.message),
    [
      "r.conf:2:35: resolver.allow_delete: a cache resolver does not accept allow_delete",
      "r.conf:2:55: resolver.ttl: a cache resolver's ttl is not supported yet (nagare will not start without it)",
      "r.conf:2:66: resolver.interval: a cache resolver does not accept interval",
      'r.conf:2:82: unknown field "resolver.sync"',
    ],
  );
  confError(() => conf("resolver: { type: full }"), /^r\.conf:2:1: resolver: needs dir: the directory holding the account JWTs$/);
  confError(() => conf("resolver: { type: mirror, dir: /j }"), /^r\.conf:2:13: resolver\.type: must be full or cache, got "mirror"$/);
  confError(() => conf("resolver: { type: full, dir: /j }\nsystem_account: SYS"), /^r\.conf:3:1: system_account: in operator mode the system account is an account public key$/);
});

// ---- nats-server's lexer, value forms (differential findings against nats-server 2.9.10) ----

test("\\x escapes are bytes, read as UTF-8 text, as nats-server's (\"\\xc3\\xa9\" is é); bytes that are not UTF-8 are refused", () => {
  const t = parseConf(String.raw`a: "\xc3\xa9t\xC3\xA9"` + "\n" + String.raw`b: "x\x41y"`, NO_ENV);
  assert.equal(t.a, "\u00e9t\u00e9");
  assert.equal(t.b, "xAy");
  const e = confError(() => parseConf(String.raw`a: 1` + "\n" + String.raw`b: "ok \xff"`, NO_ENV), /UTF-8/);
  assert.equal(e.line, 2);
});

test("escapes in unquoted strings are read as nats-server reads them; an unknown one is refused", () => {
  const t = parseConf(String.raw`tok: a\tb` + "\n" + String.raw`back: a\\b` + "\n" + String.raw`hex: p\x41ss` + "\n" + String.raw`q: say\"hi\"` + "\n" + String.raw`arr: [x\ty, z]`, NO_ENV);
  assert.equal(t.tok, "a\tb");
  assert.equal(t.back, "a\\b");
  assert.equal(t.hex, "pAss");
  assert.equal(t.q, 'say"hi"');
  assert.deepEqual(t.arr, ["x\ty", "z"]);
  // With an escape it is a string, never a boolean or a variable (as nats-server's lexer).
  assert.equal(parseConf(String.raw`v: tru\x65`, NO_ENV).v, "true");
  const e = confError(() => parseConf("a: 1\nstore_dir: C:\\nats\\js\n", NO_ENV), /invalid escape '\\j'/);
  assert.equal(e.line, 2);
});

test("quoted strings may span lines, as nats-server's", () => {
  const t = parseConf(`a: "one\ntwo"\nb: 'x\ny'\nc: 1`, NO_ENV);
  assert.deepEqual(t, { a: "one\ntwo", b: "x\ny", c: 1 });
  const e = confError(() => parseConf('a: 1\nb: "open\nmore\n', NO_ENV), /unterminated string/);
  assert.equal(e.line, 2);
  assert.equal(e.column, 4);
});

test("block strings: ( ... ) up to a line holding only ')', as nats-server's", () => {
  const t = parseConf("a: (\nline one\n  two\n)\nb: (text\n)\nc: [(\nx\n)\n]\nd: 1\n", NO_ENV);
  assert.deepEqual(t, { a: "\nline one\n  two\n", b: "text\n", c: ["\nx\n"], d: 1 });
  assert.equal(parseConf("a: (\nx\n)", NO_ENV).a, "\nx\n", "at the end of the input");
  assert.equal(parseConf("a: (\r\nx\r\n)\r\nb: 1\r\n", NO_ENV).a, "\r\nx\r\n", "CRLF");
  const e = confError(() => parseConf("a: 1\nb: (x)\nc: 2\n", NO_ENV), /unterminated block string/);
  assert.equal(e.line, 2);
  assert.equal(e.column, 4);
});

test("an unquoted bcrypt hash ($2a$...) is a string, not a variable, as in nats-server", () => {
  const hash = "$2a$11$ZuqUvYy91cyOK.ERkhHZ1e4Nxhj54slH2CtWH2WZfz6PVwjIe.tIm";
  const t = parseConf(`authorization { user: app, password: ${hash} }`, NO_ENV);
  assert.deepEqual(t, { authorization: { user: "app", password: hash } });
  assert.deepEqual(optionsFromConf(t).authorization, { users: [{ user: "app", password: hash }] });
});

test("include is a keyword in any case, as nats-server's; its quoted path is taken as written", () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, "a.conf"), "port: 4333\n");
    writeFileSync(join(dir, "b\\x.conf"), "debug: true\n");
    assert.deepEqual(parseConf('INCLUDE a.conf\nInclude "b\\x.conf"\n', { baseDir: dir, env: {} }), { port: 4333, debug: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("environment values refer to other environment variables, as nats-server's; a loop is refused", () => {
  assert.equal(parseConf("v: $A", { env: { A: "$B", B: "foo" } }).v, "foo");
  assert.equal(parseConf("v: $A", { env: { A: "$B", B: "4333" } }).v, 4333);
  assert.equal(parseConf("v: $A", { env: { A: String.raw`a\tb` } }).v, "a\tb");
  confError(() => parseConf("v: $A", { env: { A: "$B" } }), /'B' can not be found/);
  confError(() => parseConf("x: 1\nv: $A", { env: { A: "$B", B: "$A" } }), /line 2, column 4: .*refer to each other/);
});

test("account names differing only in case are different accounts, as in nats-server", () => {
  const o = optionsFromConf(parseConf("accounts { A: { users: [{user: x, password: y}] }, a: { } }", NO_ENV));
  assert.deepEqual(o.accounts, { A: { users: [{ user: "x", password: "y" }] }, a: {} });
  const p = optionsFromConf(parseConf("accounts { a: { users: [{user: x, password: y}] }, A: { users: [{user: z, password: w}] } }", NO_ENV));
  assert.deepEqual(p.accounts, { a: { users: [{ user: "x", password: "y" }] }, A: { users: [{ user: "z", password: "w" }] } });
});

test("nagare -t: a problem found once the file's options are put together is reported at its place in the file", async () => {
  const dir = tempDir();
  try {
    const file = join(dir, "whole.conf");
    // Each valid for nats-server 2.9.10; each refused by nagare, and the refusal must say where.
    const cases: Array<[string, string, RegExp]> = [
      ["port: 4333\naccounts {\n  A: { jetstream: enabled, users: [{user: x, password: y}] }\n}\n", "3:8", /accounts\.A\.jetstream needs JetStream/],
      ["port: 4333\ncluster { name: c1 }\n", "2:1", /cluster needs a route listener/],
      ["accounts {\n  A: { users: [{user: x, password: y}] }\n  B: { users: [{user: x, password: z}] }\n}\n", "3:8", /user x is given twice/],
    ];
    for (const [text, at, re] of cases) {
      writeFileSync(file, text);
      const r = await run(["-c", file, "-t"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, re);
      assert.ok(r.stderr.startsWith(`nagare server: ${file}:${at}: `), r.stderr);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nagare server: a certificate that is not one is refused at its place in the file, with -t and at start (nats-server: file:line:col)", async () => {
  const dir = tempDir();
  try {
    const garbage = join(dir, "garbage.pem");
    writeFileSync(garbage, "not a certificate\n");
    const file = join(dir, "tls.conf");
    writeFileSync(file, `port: -1\ntls {\n  cert_file: ${JSON.stringify(garbage)}\n  key_file: ${JSON.stringify(garbage)}\n}\n`);
    for (const args of [["-c", file, "-t"], ["-c", file]]) {
      const r = await run(args);
      assert.equal(r.code, 1, r.stderr);
      assert.ok(r.stderr.startsWith(`nagare server: ${file}:2:1: `), r.stderr);
      assert.match(r.stderr, /garbage\.pem/);
    }
    writeFileSync(file, `port: -1\nkafka {\n  port: -1\n  tls { cert_file: ${JSON.stringify(garbage)}, key_file: ${JSON.stringify(garbage)} }\n}\n`);
    const r = await run(["-c", file, "-t"]);
    assert.equal(r.code, 1, r.stderr);
    assert.ok(r.stderr.startsWith(`nagare server: ${file}:4:3: `), r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("include: the included file's variables are its own, else the environment's, as nats-server reads it (which parses it alone)", () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, "a.conf"), "max_connections: $MC\nOWN = 3\nmax_pending: $OWN\ninclude b.conf\nping_max: $FROM_B\n");
    writeFileSync(join(dir, "b.conf"), "FROM_B = 4\n");
    const text = "MC = 55\nmax_subscriptions: $MC\ninclude a.conf\n";
    // nats-server: a.conf does not see MC of the including file; with MC in the environment, that is its value.
    const t = parseConf(text, { baseDir: dir, env: { MC: "77" } });
    assert.equal(t.max_connections, 77);
    assert.equal(t.max_subscriptions, 55);
    assert.equal(t.max_pending, 3);
    assert.equal(t.ping_max, 4);
    // Without it nats-server refuses the file; nagare reads the including file's, as before.
    assert.equal(parseConf(text, { baseDir: dir, env: {} }).max_connections, 55);
    // Inside a block as well.
    writeFileSync(join(dir, "auth.conf"), "user: $U\npassword: pw\n");
    assert.deepEqual(parseConf("authorization {\n  U = inner\n  include auth.conf\n}\n", { baseDir: dir, env: { U: "env" } }).authorization, { U: "inner", user: "env", password: "pw" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nats-server 2.9's other spellings: pub/sub/import/export, permission/authorization for a user's permissions, pidfile", () => {
  const t = parseConf(
    `authorization {
  users: [
    { user: a, password: pa, permissions: { pub: "p.>", sub: { allow: "s.>", deny: "s.x" } } }
    { user: b, password: pb, permission: { import: "i.>", export: "e.>" } }
    { user: c, password: pc, authorization: { publish: "c.>" } }
  ]
}
pidfile: /tmp/nagare.pid
`,
    NO_ENV,
  );
  const o = optionsFromConf(t);
  assert.deepEqual(
    o.authorization?.users?.map((u) => u.permissions),
    [{ publish: { allow: ["p.>"] }, subscribe: { allow: ["s.>"], deny: ["s.x"] } }, { publish: { allow: ["i.>"] }, subscribe: { allow: ["e.>"] } }, { publish: { allow: ["c.>"] } }],
  );
  assert.equal(pidFileFromConf(t), "/tmp/nagare.pid");
  confError(() => optionsFromConf(parseConf("authorization { users: [ { user: a, password: b, permissions: { pub: x, publish: y } } ] }", NO_ENV)), /given twice/);
});

test("nats-server 2.9 keys for features nagare lacks are refused as such, not as unknown fields", () => {
  const e = confError(
    () =>
      optionsFromConf(
        parseConf(
          `mappings { a: b }
max_sub_tokens: 10
jetstream { encryption_key: k }
tls { cert_file: /nope, key_file: /nope, connection_rate_limit: 5 }
accounts { A: { limits: { max_connections: 5 }, users: [ { user: u, password: p, allowed_connection_types: [STANDARD] } ] } }
disable_sublist_cache: true
`,
          { env: {}, file: "n.conf" },
        ),
      ),
    /not supported/,
  );
  const messages = e.problems.map((p) => p.message);
  for (const where of ["n.conf:1:1: mappings:", "n.conf:2:1: max_sub_tokens:", "n.conf:3:13: jetstream.encryption_key:", "tls.connection_rate_limit:", "accounts.A.limits:", "accounts.A.users[0].allowed_connection_types:"]) {
    assert.ok(messages.some((m) => m.includes(where) && m.includes("not supported")), `${where} in ${messages.join("\n")}`);
  }
  assert.ok(!messages.some((m) => m.includes("unknown field")), messages.join("\n"));
  assert.ok(!messages.some((m) => m.includes("disable_sublist_cache")), "a cache toggle changes nothing delivered: accepted");
});

test("a zero port in the file is nats-server's default: 4222 for clients, no monitoring, no route listener (not a random port)", () => {
  const o = (text: string) => optionsFromConf(parseConf(text, NO_ENV));
  for (const text of ["port: 0", "listen: 0", 'listen: "127.0.0.1:0"', "http_port: 0", "monitor_port: 0", 'http: "127.0.0.1:0"', "http: 0", "https_port: 0"]) {
    const got = o(text);
    assert.equal(got.port, undefined, text);
    assert.equal(got.httpPort, undefined, text);
    assert.equal(got.httpsPort, undefined, text);
  }
  assert.equal(o('listen: "127.0.0.1:0"').host, "127.0.0.1");
  assert.equal(o("cluster { port: 0, routes: [nats://127.0.0.1:6222] }").cluster?.port, undefined);
  assert.equal(o('cluster { listen: "127.0.0.1:0", routes: [nats://127.0.0.1:6222] }').cluster?.port, undefined);
  // And the command line's server takes the default port for it.
  assert.equal(resolveOptions({ ...o("port: 0") }).port, 4222);
});

test("jetstream { max_mem: 0 } (nats-server 2.9: no memory storage at all) is refused, not read as no limit", () => {
  for (const key of ["max_mem", "max_memory_store", "max_file", "max_file_store"]) {
    const e = confError(() => optionsFromConf(parseConf(`jetstream {\n  ${key}: 0\n}`, NO_ENV)), /no limit/);
    assert.equal(e.line, 2);
  }
  assert.deepEqual(optionsFromConf(parseConf("jetstream { max_mem: -1, max_file: 1G }", NO_ENV)), { jetstream: true, jetstreamMaxMemory: -1, jetstreamMaxStorage: 1e9 });
});

test("jetstream { request_queue_limit } bounds the API requests served at once; 0 or less is refused where it stands", () => {
  assert.deepEqual(optionsFromConf(parseConf("jetstream { request_queue_limit: 500 }", NO_ENV)), { jetstream: true, jetstreamRequestQueueLimit: 500 });
  assert.equal(resolveOptions({}).jetstreamRequestQueueLimit, 10_000);
  for (const v of ["0", "-1", "1.5", '"many"']) {
    const e = confError(() => optionsFromConf(parseConf(`jetstream {\n  request_queue_limit: ${v}\n}`, NO_ENV)), /jetstream\.request_queue_limit: /);
    assert.equal(e.line, 2);
  }
  assert.throws(() => resolveOptions({ jetstreamRequestQueueLimit: 0 }), /jetstreamRequestQueueLimit/);
});

test("flags: -p 0 is nats-server's default port 4222, -m 0 and -ms 0 no monitoring (over the file's too), as nats-server", () => {
  assert.equal(parseServerArgs(["-p", "0"]).options.port, 4222);
  assert.equal(parseServerArgs(["-p", "-1"]).options.port, -1);
  const args = parseServerArgs(["-m", "0", "-ms", "0"]);
  const merged = mergeOptions({ httpPort: 8222, httpsPort: 8443 }, args.options, args.off);
  assert.equal(merged.httpPort, undefined);
  assert.equal(merged.httpsPort, undefined);
});
