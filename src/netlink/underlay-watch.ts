// Watches the underlay the daemon chose at start: the interface (by name and ifindex), its address and
// the address the VXLAN send sockets are bound to. Peers know this node only by the published
// PublicIP, so when that address goes away overlay traffic stops; the daemon reports it (log line,
// /readyz) instead of looking healthy while cut off.
import { defaultSysReader, interfaceWithAddress, type SysReader } from './interfaces';

export interface UnderlayExpectation {
  /** Interface name and ifindex chosen at start. */
  name: string;
  index: number;
  /** The interface address chosen at start (flannel's IfaceAddr). */
  ip: string;
  /** The address the send sockets are bound to (the PublicIP when local, else `ip`). */
  sendSource: string;
}

export type UnderlayState = { ok: true } | { ok: false; reason: string };

/** Compares the host (read through `sys`) with what was chosen at start. → ok, or the first difference. */
export function checkUnderlay(expect: UnderlayExpectation, sys: SysReader = defaultSysReader): UnderlayState {
  const idxText = sys.readFile(`/sys/class/net/${expect.name}/ifindex`);
  if (idxText === null) return { ok: false, reason: `interface ${expect.name} is gone` };
  const idx = Number(idxText.trim());
  if (idx !== expect.index) return { ok: false, reason: `interface ${expect.name} was re-created (ifindex ${expect.index} → ${idx})` };
  const addrs = sys.ipv4Addresses().get(expect.name) ?? [];
  if (!addrs.includes(expect.ip)) {
    const now = addrs.length > 0 ? addrs.join(', ') : 'none';
    return { ok: false, reason: `address ${expect.ip} is no longer on ${expect.name} (IPv4 addresses now: ${now})` };
  }
  if (expect.sendSource !== expect.ip && interfaceWithAddress(sys, expect.sendSource) === null) {
    return { ok: false, reason: `address ${expect.sendSource} (the public IP VXLAN is sent from) is no longer on this host` };
  }
  return { ok: true };
}

export interface UnderlayWatchOptions {
  expect: UnderlayExpectation;
  /** Called on every change of state (ok → lost, lost → ok, or a different reason). */
  onChange(state: UnderlayState): void;
  /** A check that could not run (e.g. rtnetlink failed); the state is left as it was. */
  onError(err: Error): void;
  /** Check period, ms. Default 2000. */
  intervalMs?: number;
  sys?: SysReader;
}

/** Polls checkUnderlay (a /sys read and one rtnetlink dump per link: microseconds) every intervalMs. */
export class UnderlayWatch {
  private timer: NodeJS.Timeout | null = null;
  private last: UnderlayState = { ok: true };

  constructor(private readonly opts: UnderlayWatchOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.opts.intervalMs ?? 2000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One check now; exposed for tests. */
  check(): UnderlayState {
    let state: UnderlayState;
    try {
      state = checkUnderlay(this.opts.expect, this.opts.sys);
    } catch (err) {
      this.opts.onError(err instanceof Error ? err : new Error(String(err)));
      return this.last;
    }
    const changed = state.ok !== this.last.ok || (!state.ok && !this.last.ok && state.reason !== this.last.reason);
    this.last = state;
    if (changed) this.opts.onChange(state);
    return state;
  }
}
