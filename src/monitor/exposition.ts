/**
 * Prometheus text exposition format 0.0.4: one `# HELP` and one `# TYPE` line
 * per family, then its samples, families never interleaved. Label values
 * escape `\`, `"` and newlines; HELP text escapes `\` and newlines.
 */

export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type MetricType = "counter" | "gauge";
export type Labels = ReadonlyArray<readonly [name: string, value: string]>;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export class Exposition {
  private readonly lines: string[] = [];
  private readonly families = new Set<string>();
  private current = "";

  /** Starts a family; its samples must follow before the next family starts. */
  family(name: string, type: MetricType, help: string): void {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${name}`);
    if (this.families.has(name)) throw new Error(`metric family ${name} written twice`);
    this.families.add(name);
    this.current = name;
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  }

  sample(labels: Labels, value: number): void {
    if (this.current === "") throw new Error("a sample before any family");
    let line = this.current;
    if (labels.length > 0) {
      line += "{";
      for (let i = 0; i < labels.length; i++) {
        const [k, v] = labels[i];
        if (!LABEL_NAME.test(k) || k.startsWith("__")) throw new Error(`invalid label name ${k}`);
        line += `${i > 0 ? "," : ""}${k}="${escapeLabelValue(v)}"`;
      }
      line += "}";
    }
    this.lines.push(`${line} ${formatValue(value)}`);
  }

  /** A family with one sample. */
  single(name: string, type: MetricType, help: string, labels: Labels, value: number): void {
    this.family(name, type, help);
    this.sample(labels, value);
  }

  text(): string {
    return this.lines.length === 0 ? "" : this.lines.join("\n") + "\n";
  }
}

export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === "\\" ? "\\\\" : c === '"' ? '\\"' : "\\n"));
}

export function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === "\\" ? "\\\\" : "\\n"));
}

/** Go's ParseFloat reads what this writes: integers exactly, NaN and infinities by name. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
