// Where the first second goes: named marks from process start (performance.timeOrigin) to "ready"
// (the first lease snapshot programmed), logged once as "ready in … ms: …".
import { performance } from 'node:perf_hooks';

interface Mark {
  readonly name: string;
  /** ms since process start. */
  readonly at: number;
  readonly note: string;
}

export class StartupPhases {
  private readonly marks: Mark[] = [];

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Records the end of phase `name` (the phase started at the previous mark, or at process start). */
  mark(name: string, note = ''): void {
    this.marks.push({ name, at: this.now(), note });
  }

  /** Phase name → duration in ms (rounded), in order. */
  record(): Record<string, number> {
    const out: Record<string, number> = {};
    let prev = 0;
    for (const m of this.marks) {
      out[m.name] = Math.round(m.at - prev);
      prev = m.at;
    }
    return out;
  }

  /** "812 ms: modules 310, config 25, …, routes 95 (5000 leases)"; the total is the last mark. */
  summary(): string {
    let prev = 0;
    const parts: string[] = [];
    for (const m of this.marks) {
      parts.push(`${m.name} ${Math.round(m.at - prev)}${m.note !== '' ? ` (${m.note})` : ''}`);
      prev = m.at;
    }
    return `${Math.round(prev)} ms: ${parts.join(', ')}`;
  }
}
