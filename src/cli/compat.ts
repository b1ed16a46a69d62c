// flanneld flags tsflanneld accepts (so unit files and container specs parse unchanged) but does not
// implement, and what happens with each: a start that would silently differ from flanneld is refused,
// a flag that has no effect here is reported. Pure: main() logs and exits.
import { FLAGS, type Options } from './flags';

export interface CompatNotes {
  /** Reasons to refuse to start (exit 1), one line each. */
  fatal: string[];
  /** One line each, logged at warn level at start. */
  warnings: string[];
}

function defaultOf(key: keyof Options): unknown {
  const f = FLAGS.find((x) => x.key === key);
  return f && 'def' in f ? f.def : undefined;
}

/** Notes for options as parsed (flags and FLANNELD_* environment) and FLANNELD_* names no flag has. */
export function compatNotes(o: Options, unknownEnv: readonly string[] = []): CompatNotes {
  const fatal: string[] = [];
  const warnings: string[] = [];
  if (o.kubeSubnetMgr) {
    fatal.push(
      '-kube-subnet-mgr (FLANNELD_KUBE_SUBNET_MGR) is not supported: tsflanneld keeps leases in etcd only; ' +
        'remove it and give -etcd-endpoints, or run flanneld for the Kubernetes subnet manager',
    );
  } else {
    const kubeOnly: Array<[keyof Options, string]> = [
      ['kubeApiUrl', 'kube-api-url'],
      ['kubeAnnotationPrefix', 'kube-annotation-prefix'],
      ['kubeconfigFile', 'kubeconfig-file'],
      ['netConfPath', 'net-config-path'],
      ['setNodeNetworkUnavailable', 'set-node-network-unavailable'],
    ];
    for (const [key, name] of kubeOnly) {
      if (o[key] !== defaultOf(key)) warnings.push(`-${name} is set but has no effect without -kube-subnet-mgr (as in flanneld)`);
    }
  }
  if (o.ipBlackholeRoute) {
    fatal.push('-ip-blackhole-route (FLANNELD_IP_BLACKHOLE_ROUTE) is not supported by tsflanneld; remove it');
  }
  if (o.vmodule !== '') warnings.push(`-vmodule "${o.vmodule}" has no effect: tsflanneld has one log level for all code, set with -v`);
  if (o.logBacktraceAt !== '') warnings.push(`-log_backtrace_at "${o.logBacktraceAt}" has no effect in tsflanneld`);
  for (const name of unknownEnv) warnings.push(`environment variable ${name} names no flanneld/tsflanneld flag; ignored`);
  return { fatal, warnings };
}
