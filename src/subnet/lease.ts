// The lease model shared by the subnet manager, the route manager and the data plane.
// Field names of LeaseAttrs are flannel's Go JSON names on purpose: the value in etcd is
// byte-compatible with flanneld's (docs/compat.md §1).
import type { Ip4Net } from './ip4';

export interface LeaseAttrs {
  PublicIP: string;
  PublicIPv6: string | null;
  BackendType?: string;
  BackendData?: unknown;
  BackendV6Data?: unknown;
}

export interface Lease {
  /** Key below `<prefix>/subnets/`, e.g. "10.5.72.0-24" or "10.5.72.0-24&fc00:0:0:48::-64". */
  readonly key: string;
  readonly subnet: Ip4Net;
  /** Canonical IPv6 subnet text ("fc00:0:0:48::/64") for dual-stack keys, else null. */
  readonly ipv6Subnet: string | null;
  readonly attrs: LeaseAttrs;
  /** etcd lease id as decimal text; "0" marks a reservation (a key without TTL). */
  readonly etcdLeaseId: string;
  /** etcd mod revision of the key, for ordering and change detection. */
  readonly modRevision: string;
}

export type LeaseEvent =
  | { readonly type: 'added'; readonly lease: Lease }
  | { readonly type: 'removed'; readonly lease: Lease }
  | { readonly type: 'changed'; readonly lease: Lease; readonly previous: Lease };
