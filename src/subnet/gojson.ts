// Helpers that give JSON.parse output Go encoding/json decoding semantics for struct targets:
// keys match field names case-insensitively (the last matching key wins), unknown keys are
// ignored, and `null` leaves a field untouched. flanneld reads etcd values this way, so a value a
// flanneld accepts must be accepted here too.

/** A decoded JSON object viewed as a Go struct: `get(name)` finds the field case-insensitively. */
export class GoFields {
  private readonly byFolded = new Map<string, unknown>();

  constructor(obj: Record<string, unknown>) {
    for (const [k, v] of Object.entries(obj)) {
      // Go ignores null for non-pointer fields, so an earlier non-null key must survive it.
      if (v === null) continue;
      this.byFolded.set(k.toLowerCase(), v);
    }
  }

  /** The field's value, or undefined when absent or null. */
  get(name: string): unknown {
    return this.byFolded.get(name.toLowerCase());
  }

  has(name: string): boolean {
    return this.byFolded.has(name.toLowerCase());
  }
}

/** True for a plain JSON object (not an array, not null). */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Names the JSON type of a value the way an error message should ("string", "array", ...). */
export function jsonTypeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'object' ? 'object' : typeof v;
}
