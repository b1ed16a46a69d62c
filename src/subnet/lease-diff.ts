// The watch diff, as plain functions over the watcher's view (a Map from lease key to Lease): what a
// snapshot (list) or a batch of watch events changes, as LeaseEvents. Shaped like flannel's
// LeaseWatcher.Reset (snapshot) and LeaseWatcher.Update (events), with our deliberate differences
// (docs/compat.md §1 "Watch"):
// - a known subnet whose attrs changed (a peer restarted with a new VtepMAC) is reported as 'changed',
//   also after a re-list, where flannel's Reset drops it;
// - renewals (same attrs, new etcd lease or revision) update the view but are not reported: nothing a
//   data plane uses changed.
// The own lease is filtered out by the caller's `isOwn`.
import type { Lease, LeaseAttrs, LeaseEvent } from './lease';
import { encodeLeaseAttrs } from './lease-codec';

/** Attrs are equal when flanneld would store the same bytes for them. */
export function attrsEqual(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return encodeLeaseAttrs(a) === encodeLeaseAttrs(b);
}

/** One decoded change below `<prefix>/subnets/`: a put of a lease, or the delete of a key. */
export type LeaseChange = { type: 'put'; lease: Lease } | { type: 'delete'; key: string };

/**
 * Merges a full snapshot into `view` (updated in place) and returns the events, in key order for
 * additions and changes, then removals: an unseen subnet is added, a known one with other attrs is
 * changed, a known one missing from the snapshot is removed.
 */
export function resetLeases(view: Map<string, Lease>, snapshot: readonly Lease[], isOwn: (l: Lease) => boolean): LeaseEvent[] {
  const fresh = new Map<string, Lease>();
  for (const l of snapshot) if (!isOwn(l)) fresh.set(l.key, l);
  const events: LeaseEvent[] = [];
  for (const [key, lease] of [...fresh].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const prev = view.get(key);
    if (!prev) events.push({ type: 'added', lease });
    else if (!attrsEqual(prev.attrs, lease.attrs)) events.push({ type: 'changed', lease, previous: prev });
    view.set(key, lease);
  }
  for (const [key, lease] of view) {
    if (!fresh.has(key)) {
      view.delete(key);
      events.push({ type: 'removed', lease });
    }
  }
  return events;
}

/**
 * Applies watch changes in order to `view` (updated in place) and returns the events: a put of an
 * unseen key is added, of a known key with other attrs changed; a delete of a known key is removed.
 * Puts of the own lease and deletes of unknown keys change nothing.
 */
export function updateLeases(view: Map<string, Lease>, changes: readonly LeaseChange[], isOwn: (l: Lease) => boolean): LeaseEvent[] {
  const events: LeaseEvent[] = [];
  for (const c of changes) {
    if (c.type === 'delete') {
      const prev = view.get(c.key);
      if (prev) {
        view.delete(c.key);
        events.push({ type: 'removed', lease: prev });
      }
      continue;
    }
    const lease = c.lease;
    if (isOwn(lease)) continue;
    const prev = view.get(lease.key);
    view.set(lease.key, lease);
    if (!prev) events.push({ type: 'added', lease });
    else if (!attrsEqual(prev.attrs, lease.attrs)) events.push({ type: 'changed', lease, previous: prev });
  }
  return events;
}
