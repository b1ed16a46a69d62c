// Log lines for peer lease events. Small batches (the usual watch response) get one info line per
// event, as before; a large batch (a snapshot of thousands of leases, a burst) gets one info summary
// and its per-event lines at debug level, so logging stays O(events) cheap and the log readable.
import type { Log } from '../ops/log';
import type { LeaseEvent } from '../subnet/lease';
import { describeSubnets } from '../subnet/lease-manager';

/** Batches up to this many events are logged event by event at info level. */
export const EVENT_LINES_AT_INFO = 32;

export function logLeaseEvents(log: Log, events: readonly LeaseEvent[]): void {
  const perEventAtInfo = events.length <= EVENT_LINES_AT_INFO;
  if (!perEventAtInfo) {
    const counts = { added: 0, changed: 0, removed: 0 };
    for (const ev of events) counts[ev.type]++;
    log.info(counts, `peer leases: ${counts.added} added, ${counts.changed} changed, ${counts.removed} removed`);
    if (!log.isLevelEnabled('debug')) return;
  }
  for (const ev of events) {
    const l = ev.lease;
    const mac = (l.attrs.BackendData as { VtepMAC?: unknown } | undefined)?.VtepMAC;
    const obj = { key: l.key, publicIp: l.attrs.PublicIP, backendType: l.attrs.BackendType, vtepMac: mac };
    const at = [l.attrs.PublicIP, l.attrs.PublicIPv6].filter((x) => x !== null && x !== '0.0.0.0').join(' and ');
    const msg = `peer lease ${ev.type}: ${describeSubnets(l)} at ${at}`;
    if (perEventAtInfo) log.info(obj, msg);
    else log.debug(obj, msg);
  }
}
