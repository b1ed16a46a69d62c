// Pure helpers for the iperf benchmark: order statistics, parsers for tool output, formatting.

/** Median of the finite values; undefined when there are none. Even counts average the middle two. */
export function median(values: ReadonlyArray<number | undefined>): number | undefined {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1]! + v[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of the values; undefined when empty. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const v = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * v.length);
  return v[Math.min(v.length, Math.max(1, rank)) - 1];
}

export function mean(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  return values.reduce((s, x) => s + x, 0) / values.length;
}

export function minMax(values: ReadonlyArray<number | undefined>): [number, number] | undefined {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return undefined;
  return [Math.min(...v), Math.max(...v)];
}

/** Per-probe round-trip times (ms) from `ping` output without -q ("… time=0.081 ms"). */
export function parsePingTimes(output: string): number[] {
  const times: number[] = [];
  const re = /\btime[=<]([\d.]+) ms/g;
  for (let m = re.exec(output); m; m = re.exec(output)) times.push(Number(m[1]));
  return times;
}

/** "N packets transmitted, M received" from ping's summary; undefined if absent. */
export function parsePingCounts(output: string): { sent: number; received: number } | undefined {
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  return m ? { sent: Number(m[1]), received: Number(m[2]) } : undefined;
}

/** utime + stime (clock ticks) from a /proc/<pid>/stat line; the comm field may contain spaces. */
export function parseProcStatTicks(stat: string): number {
  const close = stat.lastIndexOf(')');
  if (close < 0) throw new Error(`malformed /proc stat: ${stat.slice(0, 80)}`);
  // After ") " the fields start at field 3 (state); utime is field 14, stime field 15.
  const fields = stat
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`malformed /proc stat: ${stat.slice(0, 80)}`);
  return utime + stime;
}

/** A "Name:   1234 kB" field of /proc/<pid>/status, in bytes; undefined if absent. */
export function parseProcStatusKb(status: string, field: string): number | undefined {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** Counters of one protocol line pair in /proc/net/snmp ("Udp: InDatagrams …" / "Udp: 12 …"). */
export function parseSnmp(text: string, proto: string): Record<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith(`${proto}: `));
  if (lines.length < 2) return {};
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1);
  const out: Record<string, number> = {};
  names.forEach((n, i) => (out[n] = Number(values[i])));
  return out;
}

/**
 * Samples of the named metrics in Prometheus text, keyed `name{labels}` as written (`name` without
 * labels). Comments and other metrics are skipped.
 */
export function parsePromSamples(text: string, names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || !names.includes(m[1]!)) continue;
    const v = Number(m[3]);
    if (Number.isFinite(v)) out[`${m[1]}${m[2] ?? ''}`] = v;
  }
  return out;
}

/** Difference b − a for every numeric key present in both. */
export function diffCounters(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b)) if (k in a) out[k] = b[k]! - a[k]!;
  return out;
}

/** Fixed decimals sized to the magnitude: 12.3, 1.23, 0.123. */
export function fmtNum(v: number | undefined, digits = 3): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  const abs = Math.abs(v);
  if (abs >= 100) return v.toFixed(0);
  if (abs >= 10) return v.toFixed(Math.max(0, digits - 2));
  if (abs >= 1) return v.toFixed(Math.max(0, digits - 1));
  return v.toFixed(digits);
}

export function fmtRatio(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '';
  return ` (${v >= 10 ? v.toFixed(0) : v.toFixed(2)}×)`;
}

/** Ratio a/b if both are finite and b is non-zero. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

/** "2026-11-22T10-04-05Z": an ISO timestamp usable in file names. */
export function fileTimestamp(d: Date): string {
  return d
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replace(/:/g, '-');
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function escapeMd(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n+/g, ' ');
}
