// The offload ladder (docs/performance.md §6): which kernel offloads the data plane uses. Each rung drops one
// more feature, in the order older kernels lose them, and every rung is a complete, correct data plane:
//   full        TUN vnet header + TSO4/6 + USO4/6 reads, UDP_SEGMENT sends, UDP_GRO receives,
//               coalescing GSO writes to the TUN (TCP and UDP)
//   no-tun-uso  the same without USO (kernel < 6.2): UDP super-packets neither read nor written
//   no-udp-gro  … and without UDP_GRO (kernel < 5.12 in wireguard-go's experience): datagrams arrive one
//               by one and are still coalesced in userspace (their inner checksums verified first)
//   no-udp-gso  … and without UDP_SEGMENT (or a route that refuses it with EIO): segments go out one
//               datagram each via sendmmsg
//   none        no vnet header: one packet per read/write, sendmmsg/recvmmsg batches
// `auto` asks for `full` and keeps what the kernel accepts. Pure logic; the probes live in the addon.

export const OFFLOAD_RUNGS = ['full', 'no-tun-uso', 'no-udp-gro', 'no-udp-gso', 'none'] as const;
export type OffloadRung = (typeof OFFLOAD_RUNGS)[number];
export const OFFLOAD_REQUESTS = ['auto', ...OFFLOAD_RUNGS] as const;
export type OffloadRequest = (typeof OFFLOAD_REQUESTS)[number];

export interface OffloadFeatures {
  /** TUN with IFF_VNET_HDR: super-packet reads and coalescing (GSO) writes. */
  readonly vnet: boolean;
  /** TUNSETOFFLOAD CSUM|TSO4|TSO6: the kernel hands us TCP super-packets. */
  readonly tso: boolean;
  /** TUNSETOFFLOAD USO4|USO6: UDP super-packets read, and UDP merged into GSO_UDP_L4 writes. */
  readonly uso: boolean;
  /** UDP_GRO on the VXLAN socket: trains of datagrams per receive. */
  readonly gro: boolean;
  /** UDP_SEGMENT on the send sockets: up to 64 datagrams per sendmsg. */
  readonly gso: boolean;
}

const RUNG_FEATURES: Readonly<Record<OffloadRung, OffloadFeatures>> = {
  full: { vnet: true, tso: true, uso: true, gro: true, gso: true },
  'no-tun-uso': { vnet: true, tso: true, uso: false, gro: true, gso: true },
  'no-udp-gro': { vnet: true, tso: true, uso: false, gro: false, gso: true },
  'no-udp-gso': { vnet: true, tso: true, uso: false, gro: false, gso: false },
  none: { vnet: false, tso: false, uso: false, gro: false, gso: false },
};

export class OffloadConfigError extends Error {
  override name = 'OffloadConfigError';
}

export function isOffloadRequest(v: string): v is OffloadRequest {
  return (OFFLOAD_REQUESTS as readonly string[]).includes(v);
}

export function parseOffloadRequest(v: string): OffloadRequest {
  if (!isOffloadRequest(v)) throw new OffloadConfigError(`offload "${v}" is not one of ${OFFLOAD_REQUESTS.join(', ')}`);
  return v;
}

/** Features a request asks for (auto = full). */
export function requestedFeatures(req: OffloadRequest): OffloadFeatures {
  return RUNG_FEATURES[req === 'auto' ? 'full' : req];
}

/** What the kernel granted, as reported by the addon's open calls. */
export interface OffloadProbe {
  readonly tso: boolean;
  readonly uso: boolean;
  readonly gro: boolean;
  readonly gso: boolean;
}

/** Requested ∩ granted. Without TSO a vnet header is still worth keeping (coalescing writes). */
export function effectiveFeatures(want: OffloadFeatures, got: OffloadProbe): OffloadFeatures {
  return {
    vnet: want.vnet,
    tso: want.vnet && want.tso && got.tso,
    uso: want.vnet && want.uso && got.uso,
    gro: want.gro && got.gro,
    gso: want.gso && got.gso,
  };
}

const has = (f: OffloadFeatures, need: OffloadFeatures): boolean =>
  (!need.vnet || f.vnet) && (!need.tso || f.tso) && (!need.uso || f.uso) && (!need.gro || f.gro) && (!need.gso || f.gso);

/** The highest rung whose features `f` all has: the name a feature set runs at least as well as. */
export function rungOf(f: OffloadFeatures): OffloadRung {
  for (const rung of OFFLOAD_RUNGS) if (has(f, RUNG_FEATURES[rung])) return rung;
  return 'none';
}

/** Human-readable list for logs: "vnet tso uso gro gso". */
export function describeFeatures(f: OffloadFeatures): string {
  const on = (['vnet', 'tso', 'uso', 'gro', 'gso'] as const).filter((k) => f[k]);
  return on.length > 0 ? on.join(' ') : 'none';
}
