// flanneld reads <prefix>/config once, at start; so does tsflanneld (a new Network or VNI means new
// leases and devices on every node: a restart, rolled out by the operator). What flanneld does not do
// is say so: an edited config is silently ignored. This monitor re-reads the key periodically and
// logs once per distinct change that it is not in effect.
import type { Log } from '../ops/log';
import { ConfigError, type NetworkConfig } from '../subnet/config';
import { formatIp4Net } from '../subnet/ip4';
import { ConfigNotFoundError, EtcdError, type Registry } from '../subnet/registry';

/** Default seconds between reads (tests inject a shorter period through DaemonExtras.configCheckSeconds). */
export const CONFIG_CHECK_SECONDS = 30;

/** Fields whose values differ between two configs, as "Field a → b" (pure). */
export function configDifferences(running: NetworkConfig, now: NetworkConfig): string[] {
  const show = (v: unknown): string =>
    v !== null && typeof v === 'object' && 'prefixLen' in v ? formatIp4Net(v as never) : JSON.stringify(v);
  const out: string[] = [];
  const fields: Array<[string, (c: NetworkConfig) => unknown]> = [
    ['Network', (c) => c.network],
    ['SubnetLen', (c) => c.subnetLen],
    ['SubnetMin', (c) => c.subnetMin],
    ['SubnetMax', (c) => c.subnetMax],
    ['EnableIPv4', (c) => c.enableIPv4],
    ['EnableIPv6', (c) => c.enableIPv6],
    ['IPv6Network', (c) => c.ipv6Network],
    ['Backend.Type', (c) => c.backend.type],
    ['Backend.VNI', (c) => c.backend.vni],
    ['Backend.Port', (c) => c.backend.port],
    ['Backend.MTU', (c) => c.backend.mtu],
  ];
  for (const [name, get] of fields) {
    const a = show(get(running));
    const b = show(get(now));
    if (a !== b) out.push(`${name} ${a} → ${b}`);
  }
  return out;
}

export class ConfigMonitor {
  private timer: NodeJS.Timeout | null = null;
  private lastReport = '';

  constructor(
    private readonly registry: Registry,
    private readonly running: NetworkConfig,
    private readonly log: Log,
    private readonly intervalSec: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), this.intervalSec * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async check(): Promise<void> {
    const key = `${this.registry.prefix}/config`;
    let report: string;
    try {
      const now = await this.registry.getNetworkConfig();
      const diff = configDifferences(this.running, now);
      report = diff.length === 0 ? '' : `network config in ${key} changed (${diff.join(', ')})`;
    } catch (err) {
      if (err instanceof EtcdError) return; // etcd trouble is reported by the lease watch
      if (err instanceof ConfigNotFoundError) report = `network config ${key} was deleted`;
      else if (err instanceof ConfigError) report = `network config in ${key} is now invalid (${err.message})`;
      else throw err;
    }
    if (report === this.lastReport) return;
    this.lastReport = report;
    if (report === '') this.log.info(`network config in ${key} is back to the one in effect`);
    else this.log.warn(`${report}; not applied: like flanneld, tsflanneld reads it only at start, so restart it on every node to apply`);
  }
}
