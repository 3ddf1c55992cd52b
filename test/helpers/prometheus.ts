/**
 * A strict reader of Prometheus text exposition 0.0.4, for tests: it throws on
 * anything a Prometheus server would refuse or misread (a sample before its
 * TYPE, a family split in two, a bad escape, a value Go cannot parse).
 */

export interface Sample {
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const HELP_LINE = new RegExp(`^# HELP (${NAME}) (.*)$`);
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const SAMPLE_LINE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`);
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/;
const VALUE = /^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|NaN|[+-]Inf)$/;

export function parseExposition(text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const families = new Map<string, Family>();
  let current: string | null = null;
  const closed = new Set<string>();
  const open = (name: string): Family => {
    if (current !== name) {
      if (current !== null) closed.add(current);
      if (closed.has(name)) throw new Error(`family ${name} is split`);
      current = name;
    }
    let f = families.get(name);
    if (f === undefined) families.set(name, (f = { type: "", help: "", samples: [] }));
    return f;
  };
  for (const line of text.split("\n").slice(0, -1)) {
    let m: RegExpExecArray | null;
    if ((m = HELP_LINE.exec(line))) {
      const f = open(m[1]);
      if (f.help !== "" || f.samples.length > 0) throw new Error(`HELP for ${m[1]} repeated or after samples`);
      f.help = unescapeHelp(m[2]);
    } else if ((m = TYPE_LINE.exec(line))) {
      const f = open(m[1]);
      if (f.type !== "" || f.samples.length > 0) throw new Error(`TYPE for ${m[1]} repeated or after samples`);
      f.type = m[2];
    } else if (line.startsWith("#")) {
      continue;
    } else if ((m = SAMPLE_LINE.exec(line))) {
      const f = open(m[1]);
      if (f.type === "") throw new Error(`sample of ${m[1]} before its TYPE`);
      if (!VALUE.test(m[3])) throw new Error(`bad value in ${line}`);
      f.samples.push({ labels: parseLabels(m[2] ?? "", line), value: Number(m[3].replace("Inf", "Infinity")) });
    } else {
      throw new Error(`unreadable line: ${JSON.stringify(line)}`);
    }
  }
  return families;
}

function parseLabels(text: string, line: string): Record<string, string> {
  const out: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const m = LABEL.exec(rest);
    if (m === null) throw new Error(`bad labels in ${line}`);
    if (m[1] in out) throw new Error(`label ${m[1]} repeated in ${line}`);
    out[m[1]] = m[2].replace(/\\([\\"n])/g, (_, c: string) => (c === "n" ? "\n" : c));
    rest = rest.slice(m[0].length);
  }
  return out;
}

function unescapeHelp(text: string): string {
  if (/\\[^\\n]/.test(text.replace(/\\\\/g, ""))) throw new Error(`bad escape in HELP ${text}`);
  return text.replace(/\\([\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
}

/** The one sample of `name` whose labels include `match`; throws unless exactly one. */
export function sampleOf(families: Map<string, Family>, name: string, match: Record<string, string> = {}): number {
  const f = families.get(name);
  if (f === undefined) throw new Error(`no metric ${name}`);
  const found = f.samples.filter((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(match)}`);
  return found[0].value;
}
